"""The sweep spec: schema (raysweep.spec.schema), loading with overrides (raysweep.spec.load), errors,
and the checks that need the prepared data (raysweep.spec.data_checks). Importing it loads no torch,
transformers or ray."""

from raysweep.spec.errors import SpecError, SweepDirError
from raysweep.spec.load import load_spec, parse_spec, spec_to_yaml
from raysweep.spec.schema import SweepSpec

__all__ = ["SpecError", "SweepDirError", "SweepSpec", "load_spec", "parse_spec", "spec_to_yaml"]
