"""`search: optuna` end to end on a real local Ray: Optuna (through Ray Tune's OptunaSearch) picks
λ, α and lr for FSDP2 trials; each trial reports, at every eval, the objectives the SQL library computes
from its shards, and Ray's ASHAScheduler stops the trial that falls behind; the catalog keeps the Pareto
front of the finished trials, the one Optuna's own study holds; resume reruns nothing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from raysweep.catalog.connect import connect
from tests.conftest import run_cli, tiny_spec_dict, write_spec

pytestmark = pytest.mark.ray

SPACE = {"weight_decay": {"low": 0.0, "high": 1.0}, "lr": {"low": 1.0e-5, "high": 1.0e-2, "log": True},
         "freq_decay_alpha": {"low": 0.0, "high": 0.5}}
N_SAMPLES, WARMUP = 2, 5
# Run first, in this order: a good lr, then one too small to learn anything in 20 steps, which ASHA must
# stop at its first rung (the eval at step 20) against the first.
GOOD_LR, BAD_LR, RUNG, STEPS = 1.0e-2, 1.0e-5, 20, 120
POINTS = [{"weight_decay": 0.1, "lr": GOOD_LR, "freq_decay_alpha": 0.0},
          {"weight_decay": 0.2, "lr": BAD_LR, "freq_decay_alpha": 0.3}]


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
                                       "seed": 11, "points_to_evaluate": POINTS,
                                       "scheduler": "asha", "reduction_factor": 2},
                               resources={"max_concurrent_trials": 1},  # the bad trial meets the good one's rung
                               # long enough after the rung that stopping it shows (a nano step takes ms)
                               train={"steps": STEPS, "checkpoint_every": STEPS // 2})
    spec = write_spec(tmp_path / "spec.yaml", spec_dict)
    result = run_cli(["sweep", str(spec)], tmp_path, env=shared_ray)
    sweep = tmp_path / "runs" / "search"
    assert "Pareto front of the search" in result.stdout

    with connect([sweep]) as con:
        trials = con.execute("SELECT * FROM trials ORDER BY trial_id").df()
        objectives = con.execute("SELECT * FROM trial_objectives()").df()
        at_rung = con.execute("SELECT * FROM trial_objectives(step := ?)", [RUNG]).df()
        front = con.execute("SELECT * FROM pareto_front").df()
        peak_lr = dict(con.execute("SELECT trial_id, max(lr) FROM train_metrics GROUP BY 1").fetchall())
        last_step = dict(con.execute("SELECT trial_id, max(step) FROM train_metrics GROUP BY 1").fetchall())
    status_of = dict(zip(trials["lr"], trials["status"]))
    assert status_of == {GOOD_LR: "TERMINATED", BAD_LR: "PRUNED"}, status_of
    good, bad = (trials.loc[trials["lr"] == lr, "trial_id"].item() for lr in (GOOD_LR, BAD_LR))
    assert f"{bad}: pruned at step {RUNG} by the search's scheduler" in result.stdout
    assert last_step[bad] < spec_dict["train"]["steps"] and not (sweep / "train" / bad / "complete.json").exists()
    # Tune saw each trial's objectives at the rung, as the catalog computes them from that step's shards
    for trial_id in (good, bad):
        results = [json.loads(line) for line in
                   next((sweep / "tune").glob(f"{trial_id}*/result.json")).read_text().splitlines()]
        (reported,) = [r for r in results if r.get("step") == RUNG]
        for objective in ("heldout_average_loss", "train_lowest_bin_loss"):
            split, name = objective.split("_", 1)
            recomputed = at_rung[(at_rung["trial_id"] == trial_id) & (at_rung["split"] == split)].iloc[0][name]
            assert reported[objective] == pytest.approx(recomputed, rel=1e-9), (trial_id, objective)
    for name, span in SPACE.items():
        assert trials[name].between(span["low"], span["high"]).all(), name
        assert (trials[name].map(lambda v: float(f"{v:.4g}")) == trials[name]).all()  # rounded: id = row = run
    assert trials["trial_id"].str.contains("-lr").all() and trials["weight_decay"].nunique() == N_SAMPLES

    for row in trials.itertuples():
        # the searched lr reached the loop: the schedule peaks at it right after warmup
        assert peak_lr[row.trial_id] == pytest.approx(row.lr, rel=1e-12)
    # what the finished trial's driver reported to Tune is what the catalog computes from every shard
    reported = json.loads((sweep / "train" / good / "complete.json").read_text())
    for split in ("train", "heldout"):
        recomputed = objectives[(objectives["trial_id"] == good) & (objectives["split"] == split)].iloc[0]
        for name in ("average_loss", "balanced_loss", "lowest_bin_loss"):
            assert reported[f"{split}_{name}"] == pytest.approx(recomputed[name], rel=1e-9), name

    # the front holds finished trials only; Optuna's study (told the pruned trial's rung values) agrees here
    study = _optuna_study(sweep / "tune")
    assert len(study.trials) == N_SAMPLES
    id_of = dict(zip(trials["weight_decay"], trials["trial_id"]))  # sampled λ rounded as the trials were
    optuna_front = {id_of[float(f"{t.params['weight_decay']:.4g}")] for t in study.best_trials}
    assert set(front["trial_id"]) == optuna_front == {good}

    tables = tmp_path / "tables"
    run_cli(["tables", str(sweep), "--out", str(tables)], tmp_path)
    assert (tables / "pareto_front.csv").read_text().count("\n") == len(front) + 1
    figures = tmp_path / "figures"
    run_cli(["plot", str(sweep), "--out", str(figures)], tmp_path)
    assert sorted(p.name for p in figures.glob("*.png")) == ["7_training_curves.png", "8_pareto_front.png"]
    assert run_cli(["verify", str(sweep)], tmp_path).returncode == 0
    # status shows each trial's rounded point, how far it got, and which one was pruned
    status = run_cli(["status", str(sweep)], tmp_path).stdout.splitlines()
    rows = {line.split()[0]: dict(zip(status[0].split(), line.split())) for line in status[1:-1]}  # last: sweep line
    assert sorted(float(r["weight_decay"]) for r in rows.values()) == sorted(trials["weight_decay"])
    assert (rows[good]["status"], rows[good]["last_step"]) == ("TERMINATED", str(spec_dict["train"]["steps"]))
    assert (rows[bad]["status"], rows[bad]["last_step"]) == ("PRUNED", str(RUNG))  # where Tune stopped it
    assert status[-1].startswith("sweep: 1 of 2 trials done") and "1 pruned" in status[-1]

    # A finished search resumes to the same trials: Optuna's state comes back, nothing reruns.
    attempts = {t: (sweep / "train" / t / "attempts.jsonl").read_text() for t in trials["trial_id"]}
    run_cli(["resume", str(sweep)], tmp_path, env=shared_ray)
    assert {t: (sweep / "train" / t / "attempts.jsonl").read_text() for t in trials["trial_id"]} == attempts
    with connect([sweep]) as con:
        assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == N_SAMPLES
