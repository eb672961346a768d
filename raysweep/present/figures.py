"""The study's figures, drawn with matplotlib from the SQL library (PNG and SVG each by default, or any of
FORMATS): each figure's data is a named query (`analysis/figure_*.sql`, panels labelled by `trial_panels`)."""

from __future__ import annotations

import io
import string

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes or CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm import tqdm

from raysweep.catalog.build import search_settings
from raysweep.catalog.connect import connect
from raysweep.catalog.queries import run_query
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StoragePath, atomic_write_bytes, ensure_dir, location

BIN_LABEL = "training-frequency bin (floor log3 count; -1 = unseen)"
FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMATS = ("png", "svg")
SPLIT_NAMES = {"train": "train sample", "heldout": "held-out"}
EMBEDDING_MATRICES = (("input", "input embedding"), ("output", "output embedding (unembedding)"))


# The weight decay of a model scored from checkpoints (NULL in trials): one group of its own in every figure.
UNKNOWN_WD = -1.0


def _query(sweep_dir: StoragePath, name: str, **params) -> pd.DataFrame:
    with connect([sweep_dir]) as con:
        data = run_query(con, name, **params).df()
    if "weight_decay" in data:
        data["weight_decay"] = data["weight_decay"].fillna(UNKNOWN_WD)
    return data


def _wd_label(wd: float) -> str:
    return "λ unknown (trained elsewhere)" if wd == UNKNOWN_WD else f"λ={wd:g}"


def _panels(keys: list[tuple], ncols: int = 2, height: float = 3.6):
    n = max(1, len(keys))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _wd_colors(weight_decays, stop: float = 1.0) -> dict:
    cmap = plt.get_cmap("viridis")
    values = sorted(set(weight_decays))
    return {wd: cmap(stop * i / max(1, len(values) - 1)) for i, wd in enumerate(values)}


def loss_vs_rank(sweep_dir: StoragePath):
    """Figure 1 (the paper's): per-type mean loss against frequency rank, smoothed over log-spaced rank windows."""
    data = _query(sweep_dir, "figure_loss_vs_rank")
    keys = sorted(data.groupby(["panel", "split"]).groups)
    fig, axes = _panels(keys)
    colors = _wd_colors(data["weight_decay"])
    for ax, (panel_name, split) in zip(axes, keys):
        panel = data[(data["panel"] == panel_name) & (data["split"] == split)]
        edges = np.unique(np.geomspace(1, panel["rank"].max() + 1, 40).astype(int))
        for wd, group in panel.groupby("weight_decay"):
            window = pd.cut(group["rank"], edges, right=False)
            smooth = group.groupby(window, observed=True).agg(rank=("rank", "mean"), loss=("loss", "mean"))
            ax.plot(smooth["rank"], smooth["loss"], color=colors[wd], label=_wd_label(wd))
        ax.set(xscale="log", xlabel="token frequency rank (1 = most frequent)", ylabel="mean loss per type (nats)",
               title=f"{panel_name}, {split} split")
        ax.legend(title="weight decay")
    return fig


def bin_bars(sweep_dir: StoragePath):
    """Figure 2: token-balanced mean loss and occurrence accuracy per bin, grouped bars per weight decay."""
    data = _query(sweep_dir, "figure_bin_loss")
    keys = sorted(data.groupby(["panel", "split"]).groups)
    fig, axes = plt.subplots(2, max(1, len(keys)), figsize=(6 * max(1, len(keys)), 7), squeeze=False)
    colors = _wd_colors(data["weight_decay"])
    for col, (panel_name, split) in enumerate(keys):
        panel = data[(data["panel"] == panel_name) & (data["split"] == split)]
        bins = sorted(panel["bin"].unique())
        wds = sorted(panel["weight_decay"].unique())
        width = 0.8 / len(wds)
        for row, (metric, label) in enumerate((("loss", "mean loss per type (nats)"), ("accuracy", "accuracy"))):
            ax = axes[row][col]
            for i, wd in enumerate(wds):
                values = panel[panel["weight_decay"] == wd].set_index("bin").reindex(bins)[metric]
                ax.bar(np.arange(len(bins)) + i * width, values, width, color=colors[wd], label=_wd_label(wd))
            ax.set_xticks(np.arange(len(bins)) + 0.4 - width / 2, [str(b) for b in bins])
            ax.set(xlabel=BIN_LABEL, ylabel=label, title=f"{panel_name}, {split} split")
            ax.legend(title="weight decay", fontsize=8)
    fig.tight_layout()
    return fig


def excess_bars(sweep_dir: StoragePath):
    """Figure 3: excess loss of each weight decay over λ = 0 per bin, mean over seeds with 95% CI."""
    data = _query(sweep_dir, "figure_excess_loss")
    keys = sorted(data.groupby(["panel", "split"]).groups)
    fig, axes = _panels(keys)
    colors = _wd_colors(data["weight_decay"])
    for ax, (panel_name, split) in zip(axes, keys):
        panel = data[(data["panel"] == panel_name) & (data["split"] == split)]
        bins = sorted(panel["bin"].unique())
        wds = sorted(panel["weight_decay"].unique())
        width = 0.8 / max(1, len(wds))
        for i, wd in enumerate(wds):
            rows = panel[panel["weight_decay"] == wd].set_index("bin").reindex(bins)
            errors = np.vstack([rows["mean_excess"] - rows["ci95_low"], rows["ci95_high"] - rows["mean_excess"]])
            ax.bar(np.arange(len(bins)) + i * width, rows["mean_excess"], width, color=colors[wd],
                   yerr=np.nan_to_num(errors), capsize=2, label=_wd_label(wd))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(bins)) + 0.4 - width / 2, [str(b) for b in bins])
        ax.set(xlabel=BIN_LABEL, ylabel="excess loss vs λ=0 (nats)",
               title=f"{panel_name}, {split} split (95% CI over seeds)")
        ax.legend(title="weight decay", fontsize=8)
    return fig


def learning_speed_bars(sweep_dir: StoragePath):
    """Figure 4: learning speed per bin (1 - mean loss ratio to the first eval), per weight decay."""
    data = _query(sweep_dir, "figure_learning_speed")
    keys = sorted(data.groupby(["panel", "split"]).groups)
    fig, axes = _panels(keys)
    colors = _wd_colors(data["weight_decay"])
    for ax, (panel_name, split) in zip(axes, keys):
        panel = data[(data["panel"] == panel_name) & (data["split"] == split)]
        for wd, group in panel.groupby("weight_decay"):
            group = group.sort_values("bin")
            ax.plot(group["bin"], group["speed"], marker="o", color=colors[wd], label=_wd_label(wd))
        ax.set(xlabel=BIN_LABEL, ylabel="learning speed (1 = loss fell to 0)", title=f"{panel_name}, {split} split")
        ax.legend(title="weight decay", fontsize=8)
    return fig


def balanced_vs_average_lines(sweep_dir: StoragePath):
    """Figure 5 (Table 1 as a plot): average and token-balanced loss against weight decay, per scale."""
    data = _query(sweep_dir, "figure_balanced_vs_average")
    keys = sorted(data["split"].unique())
    fig, axes = _panels(keys)
    for ax, split in zip(axes, keys):
        for panel_name, group in data[data["split"] == split].groupby("panel"):
            group = group.sort_values("weight_decay")
            line, = ax.plot(group["weight_decay"], group["average_loss"], marker="o", label=f"{panel_name} average")
            ax.plot(group["weight_decay"], group["balanced_loss"], marker="s", linestyle="--", color=line.get_color(),
                    label=f"{panel_name} token-balanced")
        ax.set(xscale="symlog", xlabel="AdamW weight decay λ (symlog)", ylabel="loss (nats)",
               title=f"{split} split, final step")
        ax.legend(fontsize=8)
    return fig


def lowest_bin_heatmap(sweep_dir: StoragePath):
    """Figure 6: excess loss of the rarest seen bin over weight decay x scale (train split)."""
    data = _query(sweep_dir, "figure_rarest_bin_excess")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    grid = data.pivot_table(index="panel", columns="weight_decay", values="mean_excess")
    image = ax.imshow(grid.to_numpy(), cmap="magma", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), list(grid.index))
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < np.nanmax(grid.to_numpy()) / 2 else "black")
    ax.set(xlabel="AdamW weight decay λ", ylabel="model scale", title="rarest-bin excess loss vs λ=0 (nats, train)")
    fig.colorbar(image, ax=ax, label="excess loss (nats)")
    return fig


def training_curves(sweep_dir: StoragePath):
    """Figure 7: training loss per step, one line per trial, panels per scale (a search's trials,
    whose regularizer and lr vary continuously, share one panel per scale)."""
    data = _query(sweep_dir, "figure_train_curves", per_scale=search_settings(sweep_dir) is not None)
    keys = sorted(data["panel"].unique())
    fig, axes = _panels(keys)
    colors = _wd_colors(data["weight_decay"])
    for ax, panel_name in zip(axes, keys):
        labelled = set()
        for _, group in data[data["panel"] == panel_name].groupby("trial_id"):
            wd = group["weight_decay"].iloc[0]
            ax.plot(group["step"], group["loss"], color=colors[wd], linewidth=0.8,
                    label=None if wd in labelled else _wd_label(wd))
            labelled.add(wd)
        ax.set(yscale="log", xlabel="optimizer step", ylabel="training loss (nats, log scale)", title=panel_name)
        ax.legend(title="weight decay", fontsize=8)
    return fig


def pareto_front(sweep_dir: StoragePath):
    """Figure 8 (`search: optuna`): every finished trial on each pair of objectives, coloured by λ,
    with the catalog's Pareto front ringed and joined."""
    objectives = search_settings(sweep_dir)
    with connect([sweep_dir]) as con:
        front = con.table("pareto_front").df()  # the catalog's table (analysis/create_pareto_front.sql)
        scored = run_query(con, "search_objectives", objectives=objectives).df()
    # every finished trial with its searched fields and one column per objective, to scatter
    values = scored.pivot(index="trial_id", columns="objective", values="value").reindex(columns=objectives)
    data = scored.drop(columns=["objective", "value"]).drop_duplicates("trial_id").join(values, on="trial_id")
    searched = [c for c in front.columns if c not in objectives and c != "trial_id" and front[c].nunique() > 1]
    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1:]] or \
        [(searched[0] if searched else "weight_decay", objectives[0])]  # one objective: against a searched field
    fig, axes = _panels(pairs)
    for ax, (x, y) in zip(axes, pairs):
        points = ax.scatter(data[x], data[y], c=data["weight_decay"], cmap="viridis", s=28)
        on_front = front.sort_values(x)
        ax.plot(on_front[x], on_front[y], color="crimson", linewidth=1, drawstyle="steps-post")
        ax.scatter(on_front[x], on_front[y], facecolors="none", edgecolors="crimson", s=90, label="Pareto front")
        ax.set(xlabel=x.replace("_", " "), ylabel=y.replace("_", " "), title="search trials, final step")
        ax.legend(fontsize=8)
        fig.colorbar(points, ax=ax, label="AdamW weight decay λ")
    return fig


def _bin_colors(bins) -> dict:
    cmap = plt.get_cmap("plasma")
    values = sorted(set(bins))
    # stop short of plasma's pale yellow end, which vanishes on white
    return {b: cmap(0.9 * i / max(1, len(values) - 1)) for i, b in enumerate(values)}


def embedding_norm_curves(sweep_dir: StoragePath):
    """Figure 9: mean L2 norm of each frequency bin's input- and output-embedding rows over training, one line
    per bin, mean over seeds; a row of panels per scale and matrix, a column per weight decay (rows share y, so
    the columns compare how each λ shrinks the rare bins' rows against the frequent ones')."""
    data = _query(sweep_dir, "figure_embedding_norms")
    if data.empty:
        return None  # no embedding shards to draw
    wds = sorted(data["weight_decay"].unique())
    rows = [(panel, matrix) for panel in sorted(data["panel"].unique()) for matrix in EMBEDDING_MATRICES]
    fig, axes = plt.subplots(len(rows), len(wds), figsize=(3.8 * len(wds) + 1.6, 2.8 * len(rows)),
                             sharex=True, sharey="row", squeeze=False)
    colors = _bin_colors(data["bin"])
    for r, (panel_name, (matrix, matrix_name)) in enumerate(rows):
        for c, wd in enumerate(wds):
            ax = axes[r][c]
            cell = data[(data["panel"] == panel_name) & (data["weight_decay"] == wd)]
            if cell.empty:  # a panel whose grid lacks this λ (e.g. another regularizer's)
                ax.set_visible(False)
                continue
            for b, group in cell.groupby("bin"):
                group = group.sort_values("step")
                ax.plot(group["step"], group[f"{matrix}_norm"], marker=".", linewidth=1.1, color=colors[b],
                        label=str(b))
            ax.set_title(f"{panel_name}, {matrix_name}, {_wd_label(wd)}", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("optimizer step")
            if c == 0:
                ax.set_ylabel("mean row L2 norm")
    handles = [plt.Line2D([], [], color=color, marker=".", label=str(b)) for b, color in colors.items()]
    # outside the top row's last drawn panel: tight_layout reserves room for an Axes' legend, not a figure's
    legend_ax = next(ax for ax in axes[0][::-1] if ax.get_visible())
    legend_ax.legend(handles=handles, title="frequency bin\n(floor log3 count;\n-1 = unseen)", fontsize=7,
                     title_fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def _letter(i: int) -> str:
    return string.ascii_lowercase[i] if i < len(string.ascii_lowercase) else str(i + 1)


def excess_loss_by_scale(sweep_dir: StoragePath):
    """Figure 10 (paper style): per-bin excess loss over the paired λ = 0 trial, mean over seeds with its 95% t
    interval as error bars, one column per model scale (rows: eval split), one series per nonzero weight decay,
    shared axes. No interval with one seed (its bounds are NULL): the points stand alone."""
    data = _query(sweep_dir, "figure_excess_loss")
    if data.empty:
        return None  # no λ = 0 trial to pair with, or no nonzero λ
    panels = sorted(data["panel"].unique())
    splits = sorted(data["split"].unique(), key=lambda s: (list(SPLIT_NAMES) + [s]).index(s))
    wds = sorted(data["weight_decay"].unique())
    colors = _wd_colors(wds, stop=0.85)  # viridis' yellow end is too pale for thin error bars
    fig, axes = plt.subplots(len(splits), len(panels), figsize=(4.2 * len(panels) + 1.4, 3.3 * len(splits)),
                             sharex=True, sharey="row", squeeze=False)
    # dodge the series sideways (a fraction of a bin) so that overlapping intervals stay apart
    offsets = (np.arange(len(wds)) - (len(wds) - 1) / 2) * min(0.12, 0.6 / len(wds))
    series = {}  # one legend entry per λ, whichever panel drew it
    for r, split in enumerate(splits):
        for c, panel_name in enumerate(panels):
            ax = axes[r][c]
            cell = data[(data["split"] == split) & (data["panel"] == panel_name)]
            for offset, wd in zip(offsets, wds):
                rows = cell[cell["weight_decay"] == wd].sort_values("bin")
                if rows.empty:
                    continue
                errors = np.vstack([rows["mean_excess"] - rows["ci95_low"], rows["ci95_high"] - rows["mean_excess"]])
                series[wd] = ax.errorbar(rows["bin"] + offset, rows["mean_excess"], yerr=errors.astype(float), fmt="-o",
                            markersize=3.5, linewidth=1.2, elinewidth=1, capsize=2.5, color=colors[wd],
                            label=_wd_label(wd))
            ax.axhline(0, color="black", linewidth=0.8, linestyle=":")
            ax.grid(axis="y", alpha=0.3)
            ax.spines[["top", "right"]].set_visible(False)
            ax.set_xticks(sorted(data["bin"].unique()))
            ax.set_title(f"({_letter(r * len(panels) + c)}) {panel_name}, {SPLIT_NAMES.get(split, split)}",
                         loc="left", fontsize=10)
            if r == len(splits) - 1:
                ax.set_xlabel("training-frequency bin (-1 = unseen)")
            if c == 0:
                ax.set_ylabel("excess loss vs λ=0 (nats)")
    axes[0][-1].legend(handles=[series[wd] for wd in sorted(series)], title="weight decay\n(95% CI over seeds)",
                       fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


FIGURES = {
    "1_loss_vs_rank": loss_vs_rank,
    "2_bin_loss_accuracy": bin_bars,
    "3_excess_loss": excess_bars,
    "4_learning_speed": learning_speed_bars,
    "5_balanced_vs_average": balanced_vs_average_lines,
    "6_rarest_bin_heatmap": lowest_bin_heatmap,
    "7_training_curves": training_curves,
    "9_embedding_norms": embedding_norm_curves,
    "10_excess_loss_by_scale": excess_loss_by_scale,
}


def write_figures(sweep_dir: str | StoragePath, out_dir: StoragePath | None = None,
                  formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[StoragePath]:
    """Every figure in each of `formats` (of FORMATS) under `out_dir` (default `<sweep>/figures`, which may
    be on an object store: figures are rendered in memory and written whole). A figure whose data the sweep
    lacks (it returns None) is not written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"figure format {', '.join(unknown)}: not one of {', '.join(FORMATS)}")
    sweep_dir = location(sweep_dir)
    out_dir = out_dir or SweepLayout.at(sweep_dir).figures_dir
    ensure_dir(out_dir)
    written = []
    figures = FIGURES
    if search_settings(sweep_dir) is not None:
        # Per-grid-point figures pool trials that differ in a searched lr or alpha: a search gets its
        # curves and its front.
        figures = {"7_training_curves": training_curves, "8_pareto_front": pareto_front}
    elif _query(sweep_dir, "report_trials")["weight_decay"].eq(UNKNOWN_WD).all():
        # Models scored from checkpoints: no weight decay to compare, no training curves; per model, loss by
        # frequency, per bin, and how fast each bin was learned over the revisions.
        figures = {name: FIGURES[name] for name in ("1_loss_vs_rank", "2_bin_loss_accuracy", "4_learning_speed")}
    for name, draw in tqdm(figures.items(), desc="figures", unit="fig", disable=None):
        fig = draw(sweep_dir)
        if fig is None:
            continue
        fig.tight_layout()
        for suffix in formats:
            path = out_dir / f"{name}.{suffix}"
            rendered = io.BytesIO()
            fig.savefig(rendered, format=suffix, dpi=110)
            atomic_write_bytes(path, rendered.getvalue())
            written.append(path)
        plt.close(fig)
    return written
