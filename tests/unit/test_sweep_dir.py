"""A sweep dir written by the version before the regularizer axes: it resumes when its trial ids
are unchanged, and is refused (one line) when they would be."""

import pytest
import yaml

from raysweep.models import INIT_SCHEME
from raysweep.run.migrations import current_regularizer
from raysweep.run.preflight import check_existing_sweep
from raysweep.spec import SweepDirError, parse_spec, spec_to_yaml


def _write_pre_axes_spec(spec) -> None:
    """spec.yaml as the earlier version wrote it: no freq_decay_alpha, label_smoothing or grid axes."""
    raw = yaml.safe_load(spec_to_yaml(spec))
    for field in ("freq_decay_alpha", "label_smoothing"):
        raw["train"].pop(field)
    for axis in ("decay_policy", "freq_decay_alpha", "label_smoothing", "dropout"):
        raw["grid"].pop(axis)
    spec.layout.root.mkdir(parents=True)
    spec.layout.spec_file.write_text(yaml.safe_dump(raw))


def test_pre_axes_sweep_with_plain_adamw_resumes(tmp_path):
    spec = parse_spec({"name": "old", "storage": str(tmp_path)})
    _write_pre_axes_spec(spec)
    assert check_existing_sweep(spec) is True


def test_pre_axes_sweep_whose_ids_would_change_is_refused(tmp_path):
    spec = parse_spec({"name": "old", "storage": str(tmp_path), "train": {"decay_policy": "no_embeddings"}})
    _write_pre_axes_spec(spec)
    with pytest.raises(SweepDirError, match="older raysweep whose trial ids did not name decay_policy='no_embeddings'"):
        check_existing_sweep(spec)


def test_trials_rows_of_earlier_grids_get_this_versions_regularizer():
    old_row = {"trial_id": "tiny-wd0.0-s0", "weight_decay": 0.0, "scale": "tiny", "seed": 0,
               "decay_policy": "all_matrices", "regularizer": "adamw:all_matrices"}
    row = current_regularizer(old_row)
    assert row["regularizer"] == "adamw" and row["dropout"] == 0.0 and row["trial_id"] == "tiny-wd0.0-s0"


def test_a_search_dir_refuses_another_seed_where_a_grid_would_extend(tmp_path):
    grid = {"name": "g", "storage": str(tmp_path)}
    spec = parse_spec(grid)
    spec.layout.root.mkdir(parents=True)
    spec.layout.spec_file.write_text(spec_to_yaml(spec))
    assert check_existing_sweep(parse_spec(grid, ("grid.seed=[0, 1]",))) is False  # extends the grid

    search = {"name": "s", "storage": str(tmp_path), "search": "optuna", "grid": {"weight_decay": [0.0]},
              "optuna": {"space": {"weight_decay": {"low": 0.0, "high": 1.0}}}}
    spec = parse_spec(search)
    spec.layout.root.mkdir(parents=True)
    spec.layout.spec_file.write_text(spec_to_yaml(spec))
    assert check_existing_sweep(spec) is True  # the same search resumes
    for change in ("grid.seed=[1]", "optuna.num_samples=20", "train.compile=true"):  # a grid continues under compile
        with pytest.raises(SweepDirError, match="holds a sweep with a different spec"):
            check_existing_sweep(parse_spec(search, (change,)))


def _catalog_as_the_previous_version_left_it(sweep) -> None:
    """What the version before the redesign wrote: no catalog_info or t_quantiles, and a trials table
    without vocab_size."""
    import duckdb
    import pyarrow.parquet as pq

    from raysweep.catalog.build import build_catalog

    build_catalog(sweep)
    with duckdb.connect(str(sweep / "catalog.duckdb")) as con:
        con.execute("DROP TABLE catalog_info; DROP TABLE t_quantiles")
    trials = pq.read_table(sweep / "trials.parquet")
    pq.write_table(trials.drop_columns(["vocab_size"]), sweep / "trials.parquet")


def test_previous_versions_catalog_is_rebuilt_by_report_and_named_by_sql(tmp_path):
    """report on a sweep whose catalog an older raysweep built → rebuilt, the table printed (vocab_size
    filled from the data dir); sql before that → one line saying how to rebuild, exit 2."""
    import subprocess
    import sys

    from tests.synthetic_sweep import write_synthetic_sweep

    sweep = write_synthetic_sweep(tmp_path / "runs" / "old")
    _catalog_as_the_previous_version_left_it(sweep)
    sql = subprocess.run([sys.executable, "-m", "raysweep.cli", "sql", str(sweep), "SELECT 1"],
                         capture_output=True, text=True, timeout=120)
    assert sql.returncode == 2
    assert sql.stderr.strip().endswith(f"rebuild it with `raysweep catalog {sweep}` (it is derived from the shards)")
    report = subprocess.run([sys.executable, "-m", "raysweep.cli", "report", str(sweep)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "balanced_loss" in report.stdout and len(report.stdout.splitlines()) > 3
    assert subprocess.run([sys.executable, "-m", "raysweep.cli", "sql", str(sweep), "SELECT count(*) FROM trials "
                           "WHERE vocab_size IS NULL"], capture_output=True, text=True, timeout=120).stdout.split()[-1] == "0"


def test_trials_an_earlier_raysweep_trained_are_not_continued(tmp_path):
    """a sweep dir whose first worker group logged no `workers` (raysweep before the redesign: another lr
    schedule, 2 FSDP2 ranks) → sweep and resume refuse it in one line that says what still reads it."""
    import json
    import subprocess
    import sys

    spec = parse_spec({"name": "old", "storage": str(tmp_path)})
    spec.layout.root.mkdir(parents=True)
    spec.layout.spec_file.write_text(spec_to_yaml(spec))
    attempts = spec.layout.attempts_file("tiny-wd0.0-s0")
    attempts.parent.mkdir(parents=True)
    attempts.write_text(json.dumps({"start_step": 0, "time": 1.0, "node_id": "n"}) + "\n")
    with pytest.raises(SweepDirError, match="trained by an earlier raysweep .* `raysweep report`, `verify` and `sql` "
                                            "still read it"):
        check_existing_sweep(spec)
    resumed = subprocess.run([sys.executable, "-m", "raysweep.cli", "resume", str(spec.layout.root)],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 2 and "trained by an earlier raysweep" in resumed.stderr.strip().splitlines()[-1]
    attempts.write_text(json.dumps({"start_step": 0, "time": 1.0, "node_id": "n", "workers": 1}) + "\n")
    with pytest.raises(SweepDirError, match="another init"):  # the redesign's, but initialized the old way
        check_existing_sweep(spec)
    attempts.write_text(json.dumps({"start_step": 0, "time": 1.0, "node_id": "n", "workers": 1,
                                    "init": INIT_SCHEME}) + "\n")
    assert check_existing_sweep(spec) is True  # this version's trials: the same spec resumes
