"""raysweep: distributed pretraining sweeps with per-token evaluation and DuckDB analysis.

The Python API, for notebooks (the `raysweep` command calls the same functions):

    import raysweep

    sweep_dir = raysweep.sweep("examples/demo.yaml", overrides=["grid.seed=[0, 1]"])
    raysweep.report(sweep_dir)                       # the frequency-bin table, a DataFrame
    with raysweep.connect(sweep_dir) as con:         # read-only DuckDB, the SQL library installed
        con.sql("SELECT * FROM bin_loss() WHERE split = 'train'").df()
    raysweep.study_tables(sweep_dir)["excess_loss_by_bin"]

Importing raysweep loads no torch, Ray or DuckDB; each function imports what it needs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from raysweep.spec.schema import SweepSpec
    from raysweep.store.layout import SweepLayout

__version__ = "0.1.0"
__all__ = ["sweep", "resume", "connect", "report", "study_tables", "load_spec"]


def load_spec(spec: "str | os.PathLike | dict | SweepSpec", overrides: Iterable[str] = ()) -> "SweepSpec":
    """A validated spec from a YAML path, a dict, or a spec, with `a.b=value` overrides applied."""
    from raysweep.spec.load import load_spec as load_file
    from raysweep.spec.load import parse_spec
    from raysweep.spec.schema import SweepSpec

    overrides = tuple(overrides)
    if isinstance(spec, SweepSpec):
        return parse_spec(spec.model_dump(mode="json"), overrides)
    if isinstance(spec, dict):
        return parse_spec(spec, overrides)
    return load_file(spec, overrides)


def sweep(spec: "str | os.PathLike | dict | SweepSpec", overrides: Iterable[str] = (),
          verbose: bool = False) -> "SweepLayout":
    """Run (or resume, or extend) a sweep on the embedded Ray or $RAY_ADDRESS, build its catalog and
    return its directory (`.root` is the path). `verbose`: Ray's INFO lines, Tune's table and every worker's output on
    the console, not only the progress lines. One writer at a time: a second `sweep`/`resume` of the same
    dir raises SweepLockedError naming the holder. Bad input raises one of raysweep's one-line errors
    (SpecError, SweepDirError, CorpusError, StorageError) before anything trains. Trials that fail
    do not raise: `trials.parquet` and `raysweep status` say which and why."""
    from raysweep.run.tuner import run_sweep

    return run_sweep(load_spec(spec, overrides), verbose=verbose)


def resume(sweep_dir: "str | os.PathLike | SweepLayout", verbose: bool = False) -> "SweepLayout":
    """Finish an interrupted sweep from its Tune state (errored trials too), then rebuild its catalog."""
    from raysweep.run.tuner import resume_sweep

    return resume_sweep(sweep_dir, verbose=verbose)


def connect(*sweep_dirs: "str | os.PathLike | SweepLayout") -> "duckdb.DuckDBPyConnection":
    """A read-only DuckDB connection to one sweep's catalog, or the union of several (trial ids then
    read `<sweep>/<trial_id>`), with the views, `freq_bin` and every query of the SQL library."""
    from raysweep.catalog.connect import connect as connect_catalogs

    if not sweep_dirs:
        raise TypeError("raysweep.connect: name at least one sweep dir, e.g. raysweep.connect('runs/demo')")
    return connect_catalogs(list(sweep_dirs))


def report(sweep_dir: "str | os.PathLike | SweepLayout") -> "pd.DataFrame":
    """The final-step frequency-bin table (what `raysweep report` prints), one row per split, scale
    and weight decay (and vocabulary, regularizer or lr where the sweep varies them). Builds the
    catalog first when the sweep has none, or one an older raysweep built."""
    from raysweep.catalog.build import build_catalog, is_current
    from raysweep.present.report import report_table

    if not is_current(sweep_dir):
        build_catalog(sweep_dir)
    return report_table(sweep_dir)


def study_tables(sweep_dir: "str | os.PathLike | SweepLayout") -> "dict[str, pd.DataFrame]":
    """The study's tables (what `raysweep tables` writes), by name."""
    from raysweep.present.tables import study_tables as tables

    return tables(sweep_dir)


def __dir__() -> list[Any]:
    return sorted(__all__ + ["__version__"])
