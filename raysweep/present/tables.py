"""The study's tables as files: each one SQL over the catalog, mostly a named query of the library
aggregated over seeds, written as CSV (for tools) and gathered on one Markdown page (for people).

`raysweep tables SWEEP_DIR --out docs/study` writes `<name>.csv` per table and `tables.md`.
"""

from __future__ import annotations

import math

import pandas as pd

from raysweep.catalog.build import SEARCH_COLUMNS, search_settings
from raysweep.catalog.connect import connect
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StoragePath, atomic_write_text, ensure_dir, location

_BY = "tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay"  # a trial's place in the grid, seeds pooled

# name -> (title, SQL)
TABLES = {
    "table1_balanced_vs_average": (
        "Average vs token-balanced loss and accuracy (final step), mean over seeds ± 95% CI half-width",
        "SELECT * FROM balanced_vs_average_ci() ORDER BY split, scale, vocab_size, regularizer, weight_decay"),
    "excess_loss_by_bin": (
        "Excess token-balanced loss of each frequency bin over the paired λ = 0 trial, mean over seeds with 95% CI",
        "SELECT * FROM excess_loss_ci() WHERE weight_decay > 0 ORDER BY split, scale, vocab_size, regularizer, weight_decay, bin"),
    "bin_loss": (
        "Token-balanced loss per frequency bin (bin k: 3^k <= training count < 3^(k+1); -1 unseen), mean over seeds",
        f"""SELECT b.split, {_BY}, b.bin, count(*) AS n_seeds, avg(b.n_types) AS n_types,
                   avg(b.type_mean_loss) AS type_mean_loss, avg(b.accuracy) AS accuracy
            FROM bin_loss() b JOIN trials tr ON tr.trial_id = b.trial_id GROUP BY ALL ORDER BY ALL"""),
    "bin_loss_min5": (
        "Confound: per-bin loss over types seen at least 5 times in the eval split, mean over seeds",
        f"""SELECT b.split, {_BY}, b.bin, avg(b.n_types) AS n_types, avg(b.type_mean_loss) AS type_mean_loss
            FROM bin_loss(min_occurrences := 5) b JOIN trials tr ON tr.trial_id = b.trial_id
            GROUP BY ALL ORDER BY ALL"""),
    "bin_loss_by_token_shape": (
        "Confound: per-bin loss by word start and piece length (train sample), mean over seeds",
        f"""SELECT {_BY}, b.bin, b.starts_word, b.length_class, avg(b.n_types) AS n_types,
                   avg(b.type_mean_loss) AS type_mean_loss
            FROM bin_loss_by_token_shape() b JOIN trials tr ON tr.trial_id = b.trial_id
            WHERE b.split = 'train' GROUP BY ALL ORDER BY ALL"""),
    "split_gap": (
        "Train sample vs held-out text per bin, mean over seeds",
        f"""SELECT {_BY}, g.bin, avg(g.train_loss) AS train_loss, avg(g.heldout_loss) AS heldout_loss,
                   avg(g.gap) AS gap
            FROM split_gap() g JOIN trials tr ON tr.trial_id = g.trial_id GROUP BY ALL ORDER BY ALL"""),
    "learning_speed_by_bin": (
        "Learning speed per bin (1 - mean over evals of loss / loss at the first eval), mean over seeds",
        f"""SELECT l.split, {_BY}, l.bin, avg(l.learning_speed) AS learning_speed
            FROM learning_speed_bins() l JOIN trials tr ON tr.trial_id = l.trial_id GROUP BY ALL ORDER BY ALL"""),
    "embedding_norms_by_bin": (
        "Mean input / output embedding row norm per bin (final step), mean over seeds",
        f"""SELECT {_BY}, e.bin, avg(e.input_norm) AS input_norm, avg(e.output_norm) AS output_norm
            FROM embedding_norms() e JOIN trials tr ON tr.trial_id = e.trial_id GROUP BY ALL ORDER BY ALL"""),
    "loss_plateau": (
        "Has the training loss flattened? Mean training loss over the last 10% of steps against the 10% before "
        "(relative change: 0 is flat), mean over seeds",
        f"""SELECT {_BY}, count(*) AS n_seeds, avg(p.window_steps) AS window_steps,
                   avg(p.previous_loss) AS previous_loss, avg(p.last_loss) AS last_loss,
                   avg(p.relative_change) AS relative_change, min(p.relative_change) AS min_change,
                   max(p.relative_change) AS max_change
            FROM loss_plateau() p JOIN trials tr ON tr.trial_id = p.trial_id GROUP BY ALL ORDER BY ALL"""),
}

_SEARCHED = f"tr.trial_id, {SEARCH_COLUMNS}"
SEARCH_TABLES = {
    "pareto_front": (
        "Pareto front of the search: finished trials no other trial dominates on the objectives (final step)",
        "SELECT * FROM pareto_front"),
    "search_trials": (
        "Every trial of the search with its objectives (final step)",
        f"""SELECT o.split, {_SEARCHED}, o.average_loss, o.balanced_loss, o.lowest_bin, o.lowest_bin_loss,
                   o.accuracy
            FROM trial_objectives() o JOIN trials tr ON tr.trial_id = o.trial_id ORDER BY o.split, tr.trial_id"""),
    "search_bin_loss": (
        "Token-balanced loss per frequency bin of every trial of the search (final step)",
        f"""SELECT b.split, {_SEARCHED}, b.bin, b.n_types, b.type_mean_loss, b.accuracy
            FROM bin_loss() b JOIN trials tr ON tr.trial_id = b.trial_id ORDER BY b.split, tr.trial_id, b.bin"""),
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
        return {name: con.execute(sql).df() for name, (_, sql) in tables.items()}


def write_tables(sweep_dir: str | StoragePath, out_dir: str | StoragePath) -> list[StoragePath]:
    """Every table as `<name>.csv` under `out_dir`, and all of them on `tables.md`."""
    layout, out_dir = SweepLayout.at(sweep_dir), location(out_dir)
    ensure_dir(out_dir)
    written, page = [], [f"# Tables of sweep `{layout.name}`", "",
                         "Written by `raysweep tables`; each table is one SQL over the catalog "
                         "(`raysweep/present/tables.py`), the seeds of each grid point pooled.", ""]
    titles = {name: title for name, (title, _) in {**TABLES, **SEARCH_TABLES}.items()}
    for name, frame in study_tables(layout).items():
        path = out_dir / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        written.append(path)
        page += [f"## {titles[name]}", "", f"`{name}.csv`", "", _markdown(frame), ""]
    atomic_write_text(out_dir / "tables.md", "\n".join(page))
    return written + [out_dir / "tables.md"]


__all__ = ["TABLES", "study_tables", "write_tables"]
