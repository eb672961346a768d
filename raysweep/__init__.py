"""raysweep: distributed pretraining sweeps with per-token evaluation and DuckDB analysis."""

__version__ = "0.1.0"
