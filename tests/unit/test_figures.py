"""The figures of embedding norms over training (9) and paper-style excess loss per scale (10) on a synthetic
sweep, their plotted values against the shards and the SQL library, and `raysweep plot --format`."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raysweep.catalog.build import build_catalog
from raysweep.catalog.connect import connect
from raysweep.catalog.queries import run_query
from raysweep.present import figures
from raysweep.store.layout import SweepLayout, partition_keys
from raysweep.store.shards import complete_shards
from tests.conftest import run_cli_in_process
from tests.synthetic_sweep import write_synthetic_sweep

NEW = {"9_embedding_norms": figures.embedding_norm_curves, "10_excess_loss_by_scale": figures.excess_loss_by_scale}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    # two scales: one panel column (figure 10) and two panel rows (figure 9) each
    root = write_synthetic_sweep(tmp_path_factory.mktemp("figures") / "alpha", scales=("s1", "s2"))
    build_catalog(root)
    return root


def _bin(count: int) -> int:
    """floor(log3(count)) in integers, -1 for unseen: not the SQL's float formula."""
    return -1 if count == 0 else next(k for k in range(64) if 3 ** (k + 1) > count)


def _expected_norms(sweep) -> pd.DataFrame:
    """Per scale, weight decay, step and bin: the mean over seeds of each trial's mean row norm, from the
    embedding shards read with pyarrow alone."""
    layout = SweepLayout.at(sweep)
    parts = [pq.read_table(path).to_pandas().assign(trial_id=partition_keys(path)["trial"],
                                                    step=int(partition_keys(path)["step"]))
             for path in complete_shards(layout.shards_root("embeddings"))]
    rows = pd.concat(parts, ignore_index=True)
    freq = pq.read_table(layout.data_dir("k1") / "token_freq.parquet").to_pandas()
    rows["bin"] = rows["token_id"].map(dict(zip(freq["token_id"], freq["count"].map(_bin))))
    per_trial = rows.groupby(["trial_id", "step", "bin"])[["input_norm", "output_norm"]].mean().reset_index()
    trials = pq.read_table(layout.trials_file).to_pandas()[["trial_id", "scale", "weight_decay"]]
    return (per_trial.merge(trials, on="trial_id")
            .groupby(["scale", "weight_decay", "step", "bin"])[["input_norm", "output_norm"]].mean())


def test_embedding_norm_figure_plots_each_bins_mean_row_norm_per_step(sweep):
    want = _expected_norms(sweep)
    fig = figures.embedding_norm_curves(sweep)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    panels = {f"{scale}, {name}, {figures._wd_label(wd)}": (scale, matrix, wd)
              for scale, wd in want.index.droplevel(["step", "bin"]).unique()
              for matrix, name in figures.EMBEDDING_MATRICES}
    assert sorted(axes) == sorted(panels) and len(panels) == 2 * 3 * 2  # scales x weight decays x matrices
    for title, (scale, matrix, wd) in panels.items():
        cell = want.loc[(scale, wd)]
        lines = axes[title].get_lines()
        assert sorted(int(line.get_label()) for line in lines) == sorted(cell.index.get_level_values("bin").unique())
        for line in lines:
            series = cell.xs(int(line.get_label()), level="bin").sort_index()
            assert list(line.get_xdata()) == list(series.index), title
            np.testing.assert_allclose(line.get_ydata(), series[f"{matrix}_norm"], rtol=1e-6, err_msg=title)
    # the trial without an eval at step 20 leaves that point to its other seed alone: still drawn
    assert all(20 in line.get_xdata() for line in axes["s1, input embedding, λ=0.5"].get_lines())
    plt.close(fig)


def test_excess_figure_plots_the_sql_means_and_95_percent_intervals(sweep):
    with connect([sweep]) as con:
        want = run_query(con, "excess_loss_ci").df()
    want = want[want["weight_decay"] > 0].set_index(["scale", "split", "weight_decay"]).sort_index()
    assert want["ci95_low"].notna().all() and (want["ci95_low"] < want["ci95_high"]).all()  # two seeds: intervals
    fig = figures.excess_loss_by_scale(sweep)
    splits = {name: split for split, name in figures.SPLIT_NAMES.items()}
    drawn = {}
    for ax in fig.axes:
        letter, rest = ax.get_title(loc="left").split(" ", 1)
        scale, split_name = rest.split(", ")
        drawn[letter] = (scale, splits[split_name])
        labels = [container.get_label() for container in ax.containers]
        assert labels == ["λ=0.5", "λ=1"], labels  # the nonzero λs, in order: λ = 0 is the baseline
        for container in ax.containers:
            rows = want.loc[(scale, splits[split_name], float(container.get_label()[2:]))].sort_values("bin")
            data_line, _, (bars,) = container.lines
            x = np.asarray(data_line.get_xdata(), dtype=float)
            assert list(np.rint(x).astype(int)) == list(rows["bin"]) and np.all(np.abs(x - np.rint(x)) < 0.5)
            np.testing.assert_allclose(np.asarray(data_line.get_ydata(), dtype=float), rows["mean_excess"], rtol=1e-9)
            segments = np.array(bars.get_segments())  # one per bin: [[x, low], [x, high]]
            np.testing.assert_allclose(segments[:, 0, 1], rows["ci95_low"], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(segments[:, 1, 1], rows["ci95_high"], rtol=1e-9, atol=1e-12)
    # one panel per scale and split, lettered in reading order (the rows: train sample, then held-out)
    assert drawn == {"(a)": ("s1", "train"), "(b)": ("s2", "train"), "(c)": ("s1", "heldout"),
                     "(d)": ("s2", "heldout")}
    plt.close(fig)


def test_write_figures_default_writes_png_and_svg_of_the_new_figures(sweep, tmp_path, monkeypatch):
    assert {name: figures.FIGURES.get(name) for name in NEW} == NEW  # registered, so `plot` and the page draw them
    monkeypatch.setattr(figures, "FIGURES", NEW)  # the others are drawn in the --format pdf test
    written = figures.write_figures(sweep, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.{s}" for n in NEW for s in ("png", "svg"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    for path in written:
        if path.suffix == ".png":
            image = matplotlib.image.imread(path)
            assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, path
            assert image[..., :3].std() > 0.05, path  # not a blank canvas
        else:
            assert path.read_bytes().lstrip().startswith(b"<?xml") and b"<svg" in path.read_bytes(), path


def test_plot_format_pdf_writes_only_pdfs_of_every_figure(sweep, tmp_path, capsys):
    out = tmp_path / "figs"
    code, stdout, _ = run_cli_in_process(["plot", str(sweep), "--out", str(out), "--format", "pdf"], capsys)
    assert code == 0
    files = sorted(out.iterdir())
    assert sorted(stdout.split()) == sorted(str(p) for p in files)
    assert {p.suffix for p in files} == {".pdf"} and {p.stem for p in files} == set(figures.FIGURES)
    assert all(p.read_bytes().startswith(b"%PDF") for p in files)


def test_plot_refuses_an_unknown_format_in_one_line(sweep, capsys):
    code, stdout, stderr = run_cli_in_process(["plot", str(sweep), "--format", "gif"], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "--format" in stderr and "invalid choice: 'gif'" in stderr
    assert not SweepLayout.at(sweep).figures_dir.exists()
    with pytest.raises(ValueError, match="gif"):  # the Python API refuses it too, before drawing anything
        figures.write_figures(sweep, formats=("gif",))


def test_sweep_without_lambda_zero_skips_the_excess_figure(tmp_path, monkeypatch):
    root = write_synthetic_sweep(tmp_path / "nozero", weight_decays=(0.5, 1.0), seeds=(0,))
    build_catalog(root)
    assert figures.excess_loss_by_scale(root) is None  # nothing to pair with: no figure, not an empty one
    monkeypatch.setattr(figures, "FIGURES", NEW)
    written = figures.write_figures(root, tmp_path / "figs", formats=("png",))
    assert [p.name for p in written] == ["9_embedding_norms.png"]
