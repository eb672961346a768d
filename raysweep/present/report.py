"""The sweep's frequency-bin table: what `raysweep sweep` and `raysweep report` print."""

from __future__ import annotations

import pandas as pd

from raysweep.catalog.connect import connect, has_view
from raysweep.catalog.queries import run_query


def report_table(sweep_dir) -> pd.DataFrame:
    """Final-step table: per split x scale (x vocabulary size, regularizer and lr, when the sweep has
    more than one) x weight decay, average and token-balanced loss and the token-balanced loss of each
    frequency bin (columns unseen, bin0, bin1, ...), averaged over seeds."""
    with connect([sweep_dir]) as con:
        long = run_query(con, "report_bins").df()
    if long.empty:
        return long
    keys = ["split", "scale", "vocab_size", "regularizer", "lr", "weight_decay", "n_seeds", "average_loss",
            "balanced_loss"]
    # A model scored from checkpoints has no regularizer, lr or weight decay: a NULL key is its own group.
    unknown = ["regularizer", "lr", "weight_decay"]
    long[unknown] = long[unknown].astype(object).where(long[unknown].notna(), "-")
    wide = long.pivot_table(index=keys, columns="bin", values="bin_loss").reset_index()
    wide.columns = [c if isinstance(c, str) else ("unseen" if c == -1 else f"bin{int(c)}")
                    for c in wide.columns]
    bins = sorted((c for c in wide.columns if c.startswith("bin")), key=lambda c: int(c[3:]))
    for column in ("vocab_size", "regularizer", "lr"):
        if wide[column].nunique() == 1:
            keys.remove(column)  # a single value: the column would say nothing
    ordered = keys + (["unseen"] if "unseen" in wide.columns else []) + bins
    return wide.sort_values(["split", "scale", "vocab_size", "regularizer", "lr", "weight_decay"])[ordered] \
        .reset_index(drop=True)


def unfinished_trials(sweep_dir) -> pd.DataFrame:
    """The trials that did not finish (ERROR, INTERRUPTED, PENDING, or PRUNED by a search's scheduler), with their error: what the report,
    the tables and the page name beside their numbers."""
    with connect([sweep_dir]) as con:
        return run_query(con, "report_trials").df().query("status != 'TERMINATED'")[["trial_id", "status", "error"]]


def format_unfinished(unfinished: pd.DataFrame) -> str:
    """One line per trial that did not finish ('' when all did)."""
    if unfinished.empty:
        return ""
    lines = [f"  {row.trial_id}: {row.status}" + (f" ({row.error})" if row.error else "") for row in unfinished.itertuples()]
    return (f"{len(unfinished)} trial(s) did not finish (a row above is theirs only if they wrote their last step; "
            "Table 1 leaves out ERROR trials):\n" + "\n".join(lines))


def full_report(sweep_dir) -> str:
    """The frequency-bin table, then the trials that did not finish."""
    return "\n\n".join(part for part in (format_report(report_table(sweep_dir)),
                                          format_unfinished(unfinished_trials(sweep_dir))) if part)


def format_report(table: pd.DataFrame) -> str:
    if table.empty:
        return "no final-step token shards in this sweep yet"
    header = ("Final step, mean loss (nats) per token type, averaged over seeds. average = over "
              "occurrences; balanced = over types; binK = types with 3^K <= train count < 3^(K+1).")
    return header + "\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}",
                                           na_rep="-")


def pareto_front_table(sweep_dir) -> pd.DataFrame:
    """The catalog's `pareto_front` table (a `search: optuna` sweep's; empty for a grid)."""
    with connect([sweep_dir]) as con:
        return con.table("pareto_front").df() if has_view(con, "pareto_front") else pd.DataFrame()
