"""`make docs`: the reference pages that would drift if written by hand, generated from the code.

- docs/reference/spec.md: every spec field (dotted path, type, default, description), from the pydantic schema
  (raysweep.spec.schema.SweepSpec; the descriptions are its attribute docstrings).
- docs/reference/sql.md: every named query of the SQL library (kind, parameters with defaults, columns,
  description), from the headers of analysis/*.sql.

tests/unit/test_reference_docs.py fails when the committed pages differ from what this writes.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from raysweep.catalog.queries import load_queries
from raysweep.spec.schema import SweepSpec

REFERENCE = Path(__file__).resolve().parent / "reference"


def type_name(annotation) -> str:
    """A field's type as a spec writer reads it: `int`, `list[float]`, `null | int`, `one of 'a', 'b'`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(sorted({"null" if a is type(None) else type_name(a) for a in args}))
    if origin in (list, tuple, set):
        return f"list[{', '.join(type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"map[{type_name(args[0])} -> {type_name(args[1])}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default_factory is not None:
        return "(see description)"  # computed where the spec is loaded (e.g. from the environment)
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel) or field.default is None and _is_section(field.annotation):
        return "(section)"
    default = field.default
    return "`null`" if default is None else f"`{default!r}`".replace("|", "\\|")


def _is_section(annotation) -> bool:
    return any(isinstance(a, type) and issubclass(a, BaseModel) for a in (annotation, *typing.get_args(annotation)))


def _section_of(annotation):
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows, sections = [], []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if typing.get_origin(field.annotation) is dict:  # a map of sections, e.g. optuna.space: {lr: {low, high}}
            section, sub_path = _section_of(typing.get_args(field.annotation)[1]), f"{path}.<name>"
        else:
            section, sub_path = _section_of(field.annotation), path
        if section is not None:
            sections.append((sub_path, section))
        text = field.description or (section.__doc__ or "" if section is not None else "")
        rows.append((path, type_name(field.annotation), _default(field), text))
    for path, section in sections:
        rows += _rows(section, f"{path}.")
    return rows


def spec_reference() -> str:
    lines = ["# Spec reference", "",
             "Every field of a sweep spec (YAML), generated from `raysweep/spec/schema.py` by `make docs`; do not edit.",
             "`--set A.B=VALUE` overrides any of them from the command line.", "",
             "| field | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{path}` | {_cell(kind)} | {_cell(default)} | {_cell(text)} |"
              for path, kind, default, text in _rows(SweepSpec, "")]
    return "\n".join(lines) + "\n"


def sql_reference() -> str:
    lines = ["# SQL library reference", "",
             "Every named query in `analysis/*.sql`, generated from their headers by `make docs`; do not edit.",
             "A table query is a DuckDB table macro in every catalog: `SELECT * FROM bin_loss(step := 'all')`.", ""]
    for query in sorted(load_queries(), key=lambda q: q.name):
        params = ", ".join(name if default is None else f"{name} := {default}" for name, default in query.params)
        lines += [f"## `{query.name}`", "", f"*{query.kind}*" + (f" · parameters: `{params}`" if params else ""), "",
                  _cell(query.description), ""]
        if query.columns:
            lines += ["Columns: " + ", ".join(f"`{c}`" for c in query.columns), ""]
    return "\n".join(lines)


PAGES = {"spec.md": spec_reference, "sql.md": sql_reference}


def main() -> int:
    REFERENCE.mkdir(exist_ok=True)
    for name, page in PAGES.items():
        (REFERENCE / name).write_text(page())
        print(REFERENCE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
