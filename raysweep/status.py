"""`raysweep status`: every trial's state as Ray Tune recorded it, plus Train worker restarts.

Reads the newest `tune/experiment_state-*.json` (Tune's own checkpoint of the experiment: each
trial's status, failure count, error file and last result), needs no running Ray, and adds the
worker-group starts a trial's rank 0 logged in `train/<trial>/attempts.jsonl`. A search trial reports
to Tune only at its end, so its point comes from `point.json` (the rounded values, not Optuna's raw
sample) and its last step from its newest training-metrics shard. Once the sweep command has ended,
its `trials.parquet` is newer than Tune's state and its status wins: Tune leaves a trial stopped by
Ctrl-C as RUNNING, the trials table says INTERRUPTED.
"""

from __future__ import annotations

import json

import pandas as pd

from raysweep.search import POINT_FILE
from raysweep.shards import complete_shards, partition_keys
from raysweep.storage import StoragePath, location, read_parquet_table
from raysweep.sweep import TRIALS_FILE
from raysweep.train.checkpoint import trial_run_dir
from raysweep.train.loop import ATTEMPTS_FILE


def _decoded(value):
    """Tune stores most fields as JSON text inside the JSON; decode when it is."""
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def _last_written_step(sweep_dir: StoragePath, trial_id: str) -> int | None:
    chunks = complete_shards(sweep_dir / "shards" / "train_metrics" / f"trial={trial_id}")
    return max((int(partition_keys(c)["upto"]) for c in chunks), default=None)


def _final_statuses(sweep_dir: StoragePath, tune_state: StoragePath) -> dict[str, str]:
    """The trials table's statuses, when the sweep command wrote it after Tune's last state."""
    trials_file = sweep_dir / TRIALS_FILE
    if not trials_file.exists() or trials_file.stat().st_mtime < tune_state.stat().st_mtime:
        return {}
    return {row["trial_id"]: row["status"] for row in read_parquet_table(trials_file).to_pylist()}


def trial_status(sweep_dir: str | StoragePath) -> pd.DataFrame:
    sweep_dir = location(sweep_dir)
    states = sorted((sweep_dir / "tune").glob("experiment_state-*.json"))
    if not states:
        raise FileNotFoundError(f"{sweep_dir}: no Tune experiment state (tune/experiment_state-*.json); "
                                "is this a sweep directory that has started?")
    final_statuses = _final_statuses(sweep_dir, states[-1])
    rows = []
    for trial_json, run_json in json.loads(states[-1].read_text())["trial_data"]:
        trial, run = json.loads(trial_json), json.loads(run_json)
        config = _decoded(trial["config"])
        last = _decoded(run.get("last_result")) or {}
        trial_id = _decoded(trial.get("custom_dirname")) or trial["trial_id"]
        run_dir = trial_run_dir(sweep_dir, trial_id)
        if (run_dir / POINT_FILE).exists():
            config = json.loads((run_dir / POINT_FILE).read_text())
        attempts_file = run_dir / ATTEMPTS_FILE
        attempts = attempts_file.read_text().splitlines() if attempts_file.exists() else []
        error_name = _decoded(run.get("error_filename"))
        error_file = sweep_dir / "tune" / trial_id / error_name if error_name else None
        error = error_file.read_text().strip().splitlines()[-1] if error_file and error_file.exists() else ""
        status = final_statuses.get(trial_id, _decoded(trial["status"]))
        rows.append({"trial_id": trial_id, "status": status,
                     "weight_decay": config.get("weight_decay"), "scale": config.get("scale"),
                     "seed": config.get("seed"),
                     "last_step": last.get("step") or _last_written_step(sweep_dir, trial_id),
                     "trial_retries": int(_decoded(run.get("num_failures")) or 0),
                     "worker_restarts": max(0, len(attempts) - 1), "error": error[:120]})
    return pd.DataFrame(rows).sort_values(["scale", "weight_decay", "seed"]).reset_index(drop=True)
