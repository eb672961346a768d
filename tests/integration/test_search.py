"""`search: optuna` end to end on a real local Ray: Optuna (through Ray Tune's OptunaSearch) picks
λ, α and lr for FSDP2 trials; each trial reports the objectives the SQL library computes from its
shards; the catalog keeps the Pareto front, the one Optuna's own study holds; resume reruns nothing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from raysweep.catalog.connect import connect
from tests.conftest import run_cli, tiny_spec_dict, write_spec

pytestmark = pytest.mark.ray

SPACE = {"weight_decay": {"low": 0.0, "high": 1.0}, "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
         "freq_decay_alpha": {"low": 0.0, "high": 0.5}}
N_SAMPLES, WARMUP = 2, 5


def _optuna_study(tune_dir: Path):
    """Optuna's own study, from the searcher state Ray Tune saved beside the experiment."""
    state = pickle.loads(next(tune_dir.glob("searcher-state-*.pkl")).read_bytes())
    while "_ot_study" not in state:  # wrapped by Tune's ConcurrencyLimiter
        state = state["searcher"].__dict__
    return state["_ot_study"]


def test_optuna_search_reports_sql_objectives_and_keeps_the_pareto_front(tmp_path, shared_ray):
    spec_dict = tiny_spec_dict(tmp_path / "runs", name="search", search="optuna",
                               grid={"weight_decay": [0.0], "scale": ["nano"], "seed": [0]},
                               optuna={"num_samples": N_SAMPLES, "n_startup_trials": 1, "space": SPACE,
                                       "objectives": ["heldout_average_loss", "train_lowest_bin_loss"],
                                       "seed": 11})
    spec = write_spec(tmp_path / "spec.yaml", spec_dict)
    result = run_cli(["sweep", str(spec)], tmp_path, env=shared_ray)
    sweep = tmp_path / "runs" / "search"
    assert "Pareto front of the search" in result.stdout

    with connect([sweep]) as con:
        trials = con.execute("SELECT * FROM trials ORDER BY trial_id").df()
        objectives = con.execute("SELECT * FROM trial_objectives()").df()
        front = con.execute("SELECT * FROM pareto_front").df()
        peak_lr = dict(con.execute("SELECT trial_id, max(lr) FROM train_metrics GROUP BY 1").fetchall())
    assert len(trials) == N_SAMPLES and set(trials["status"]) == {"TERMINATED"}
    for name, span in SPACE.items():
        assert trials[name].between(span["low"], span["high"]).all(), name
        assert (trials[name].map(lambda v: float(f"{v:.4g}")) == trials[name]).all()  # rounded: id = row = run
    assert trials["trial_id"].str.contains("-lr").all() and trials["weight_decay"].nunique() == N_SAMPLES

    for row in trials.itertuples():
        # the searched lr reached the loop: the schedule peaks at it right after warmup
        assert peak_lr[row.trial_id] == pytest.approx(row.lr, rel=1e-12)
        # what the driver reported to Tune is what the catalog computes from every shard
        reported = json.loads((sweep / "train" / row.trial_id / "complete.json").read_text())
        for split in ("train", "heldout"):
            recomputed = objectives[(objectives["trial_id"] == row.trial_id) & (objectives["split"] == split)].iloc[0]
            for name in ("average_loss", "balanced_loss", "lowest_bin_loss"):
                assert reported[f"{split}_{name}"] == pytest.approx(recomputed[name], rel=1e-9), name

    study = _optuna_study(sweep / "tune")
    assert len(study.trials) == N_SAMPLES
    id_of = dict(zip(trials["weight_decay"], trials["trial_id"]))  # sampled λ rounded as the trials were
    optuna_front = {id_of[float(f"{t.params['weight_decay']:.4g}")] for t in study.best_trials}
    assert set(front["trial_id"]) == optuna_front and len(front) >= 1

    tables = tmp_path / "tables"
    run_cli(["tables", str(sweep), "--out", str(tables)], tmp_path)
    assert (tables / "pareto_front.csv").read_text().count("\n") == len(front) + 1
    figures = tmp_path / "figures"
    run_cli(["plot", str(sweep), "--out", str(figures)], tmp_path)
    assert sorted(p.name for p in figures.glob("*.png")) == ["7_training_curves.png", "8_pareto_front.png"]
    assert run_cli(["verify", str(sweep)], tmp_path).returncode == 0
    # status shows each trial's rounded point and how far it got, though Tune saw one result per trial
    status = run_cli(["status", str(sweep)], tmp_path).stdout.splitlines()
    rows = [dict(zip(status[0].split(), line.split())) for line in status[1:-1]]  # the last: the sweep line
    assert sorted(float(r["weight_decay"]) for r in rows) == sorted(trials["weight_decay"])
    assert {r["last_step"] for r in rows} == {str(spec_dict["train"]["steps"])}

    # A finished search resumes to the same trials: Optuna's state comes back, nothing reruns.
    attempts = {t: (sweep / "train" / t / "attempts.jsonl").read_text() for t in trials["trial_id"]}
    run_cli(["resume", str(sweep)], tmp_path, env=shared_ray)
    assert {t: (sweep / "train" / t / "attempts.jsonl").read_text() for t in trials["trial_id"]} == attempts
    with connect([sweep]) as con:
        assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == N_SAMPLES
