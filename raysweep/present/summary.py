"""What `raysweep sweep` and `raysweep resume` print when the sweep has run: the report table, where
the sweep and its catalog are, a search's Pareto front, and one error line naming what did not finish."""

from __future__ import annotations

import sys

from raysweep.present.report import format_report, pareto_front_table, report_table
from raysweep.run.preflight import load_sweep_spec
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import read_parquet_table
from raysweep.trials.source import trial_source


def print_sweep_summary(sweep_dir, command: str) -> int:
    """Prints the summary; returns the exit status: 1 when a trial of the sweep did not finish
    (rows of earlier grids in trials.parquet are not this sweep's)."""
    layout = SweepLayout.at(sweep_dir)
    catalog = layout.catalog_file  # built by run_sweep / resume_sweep, under the writer lock
    print(format_report(report_table(layout)))
    print(f"\nsweep dir: {layout.root}\ncatalog:   {catalog}")
    front = pareto_front_table(layout)
    if not front.empty:
        print("\nPareto front of the search (final step; `SELECT * FROM pareto_front` in the catalog):")
        print(front.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    in_sweep = {p.table_id for p in trial_source(load_sweep_spec(layout)).points()}
    trials = [t for t in read_parquet_table(layout.trials_file).to_pylist() if t["trial_id"] in in_sweep]
    # ERROR, INTERRUPTED, or PENDING: never ran (PRUNED: stopped by the search's scheduler, as asked)
    failed = [t for t in trials if t["status"] not in ("TERMINATED", "PRUNED")]
    if failed:
        print(f"raysweep {command}: error: {len(failed)} of {len(trials)} trials did not finish (first: "
              f"{failed[0]['trial_id']}: {failed[0]['error'] or failed[0]['status']}); "
              f"`raysweep status {layout.root}` lists them, "
              f"`raysweep resume {layout.root}` retries them", file=sys.stderr)
        return 1
    return 0
