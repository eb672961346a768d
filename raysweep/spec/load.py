"""Reading a spec: YAML file -> `--set a.b=value` overrides -> the validated SweepSpec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raysweep.spec.errors import SpecError, problems_of
from raysweep.spec.schema import SweepSpec


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise SpecError([f"--set {assignment!r}: expected key.path=value, e.g. --set train.steps=100"])
    key, value_text = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError([f"--set {assignment!r}: empty name in key path {key!r}"])
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as exc:
        raise SpecError([f"--set {key}: value {value_text!r} is not valid YAML ({exc.problem})"])
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError([f"--set {key}: {'.'.join(parts[:depth + 1])} is not a section"])
        node = child
    node[parts[-1]] = value


def parse_spec(raw: Any, overrides: tuple[str, ...] = (), source: str = "spec") -> SweepSpec:
    """Validate a spec dict (plus overrides), raising SpecError with every problem at once."""
    if not isinstance(raw, dict):
        raise SpecError([f"top level must be a mapping of sections, got {type(raw).__name__}"], source)
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy; overrides must not touch the caller's dict
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(problems_of(exc), source) from None
    except SpecError as exc:
        raise SpecError(exc.problems, source) from None


def read_spec_file(path: str | Path) -> Any:
    """The parsed YAML of a spec file, unvalidated; a missing file or bad YAML is a SpecError."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(["spec file not found; pass an existing YAML such as examples/demo.yaml"], str(path))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML: {exc}".replace("\n", " ")], str(path)) from None


def load_spec(path: str | Path, overrides: tuple[str, ...] = ()) -> SweepSpec:
    """Read and validate a spec YAML file."""
    return parse_spec(read_spec_file(path), overrides, source=str(path))


def spec_to_yaml(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
