"""SpecError and the one-line-per-problem text of pydantic's validation errors."""

from __future__ import annotations

from pydantic import ValidationError


class SpecError(ValueError):
    """A spec that cannot run. ``problems`` holds one ``field.path: message`` line each."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad key of a mapping: the key itself names it
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe_error(error: dict) -> str:
    ctx, got = error.get("ctx", {}), error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against docs/reference/spec.md"
    if kind == "missing":
        return "required field is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {got!r}"
    if kind == "finite_number":
        return f"must be a finite number, got {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind == "too_short":
        return f"must not be empty, got {got!r}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {got!r}"


def problems_of(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, SpecError):  # a section validator already wrote full lines
            problems += nested.problems
        else:
            problems.append(f"{field_path(error['loc'])}: {describe_error(error)}")
    return problems


class SweepDirError(ValueError):
    """A sweep directory that cannot be used as asked; the message names it and the fix."""
