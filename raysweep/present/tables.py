"""The study's tables as files: each one a named query of the SQL library (`analysis/*.sql`), mostly a
per-trial query aggregated over seeds, written as CSV (for tools) and gathered on one Markdown page (for
people).

`raysweep tables SWEEP_DIR --out docs/study` writes `<name>.csv` per table and `tables.md`.
"""

from __future__ import annotations

import math

import pandas as pd

from raysweep.catalog.build import search_settings
from raysweep.catalog.connect import connect
from raysweep.present.report import format_unfinished, unfinished_trials
from raysweep.catalog.queries import run_query
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StoragePath, atomic_write_text, ensure_dir, location

# name -> (title, query of analysis/); a grid's tables pool the seeds of each grid point
TABLES = {
    "table1_balanced_vs_average": (
        "Average vs token-balanced loss and accuracy (final step), mean over seeds ± 95% CI half-width",
        "balanced_vs_average_ci"),
    "excess_loss_by_bin": (
        "Excess token-balanced loss of each frequency bin over the paired λ = 0 trial, mean over seeds with 95% CI",
        "report_excess"),
    "bin_loss": (
        "Token-balanced loss per frequency bin (bin k: 3^k <= training count < 3^(k+1); -1 unseen), mean over seeds",
        "study_bin_loss"),
    "bin_loss_min5": (
        "Confound: per-bin loss over types seen at least 5 times in the eval split, mean over seeds",
        "study_bin_loss_min5"),
    "bin_loss_by_token_shape": (
        "Confound: per-bin loss by word start and piece length (train sample), mean over seeds",
        "study_bin_loss_by_token_shape"),
    "split_gap": (
        "Train sample vs held-out text per bin, mean over seeds",
        "study_split_gap"),
    "learning_speed_by_bin": (
        "Learning speed per bin (1 - mean over evals of loss / loss at the first eval), mean over seeds",
        "study_learning_speed_by_bin"),
    "embedding_norms_by_bin": (
        "Mean input / output embedding row norm per bin (final step), mean over seeds",
        "study_embedding_norms_by_bin"),
    "loss_plateau": (
        "Has the training loss flattened? Mean training loss over the last 10% of steps against the 10% before "
        "(relative change: 0 is flat), mean over seeds",
        "study_loss_plateau"),
}

# A search's trials each have their own point. Its front is the catalog table `pareto_front`
# (analysis/create_pareto_front.sql, run when the catalog is built), read as it is.
PARETO_FRONT = "pareto_front"
SEARCH_TABLES = {
    "pareto_front": (
        "Pareto front of the search: finished trials no other trial dominates on the objectives (final step)",
        PARETO_FRONT),
    "search_trials": (
        "Every trial of the search with its objectives (final step)",
        "search_trials"),
    "search_bin_loss": (
        "Token-balanced loss per frequency bin of every trial of the search (final step)",
        "search_bin_loss"),
}


def _markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def study_tables(sweep_dir) -> dict[str, pd.DataFrame]:
    """Every table of the sweep by name: a grid's tables pool the seeds of a grid point; a search's
    trials each have their own point."""
    tables = SEARCH_TABLES if search_settings(sweep_dir) is not None else TABLES
    with connect([sweep_dir]) as con:
        return {name: con.table(PARETO_FRONT).df() if query == PARETO_FRONT else run_query(con, query).df()
                for name, (_, query) in tables.items()}


def write_tables(sweep_dir: str | StoragePath, out_dir: str | StoragePath) -> list[StoragePath]:
    """Every table as `<name>.csv` under `out_dir`, and all of them on `tables.md`."""
    layout, out_dir = SweepLayout.at(sweep_dir), location(out_dir)
    ensure_dir(out_dir)
    written, page = [], [f"# Tables of sweep `{layout.name}`", "",
                         "Written by `raysweep tables`; each table is one named query of the SQL "
                         "library (`analysis/*.sql`, listed in `raysweep/present/tables.py`), the seeds "
                         "of each grid point pooled.", ""]
    unfinished = format_unfinished(unfinished_trials(layout))
    if unfinished:
        page += ["```", unfinished, "```", ""]
    titles = {name: title for name, (title, _) in {**TABLES, **SEARCH_TABLES}.items()}
    for name, frame in study_tables(layout).items():
        path = out_dir / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        written.append(path)
        page += [f"## {titles[name]}", "", f"`{name}.csv`", "", _markdown(frame), ""]
    atomic_write_text(out_dir / "tables.md", "\n".join(page))
    return written + [out_dir / "tables.md"]


__all__ = ["TABLES", "study_tables", "write_tables"]
