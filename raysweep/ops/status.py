"""`raysweep status`: every trial's state as Ray Tune recorded it, plus Train worker restarts.

Reads the sweep's Tune experiment through Tune's public `ExperimentAnalysis` (no running Ray
needed), names each trial by its trial source's point, and adds the worker-group starts its rank 0
logged in `attempts.jsonl`. A search trial reports to Tune only at its eval steps, so its last step
comes from its newest training-metrics chunk; one its scheduler stopped early shows as PRUNED. Once the
sweep command has ended, its `trials.parquet` is newer than Tune's state and its status wins: Tune
leaves a trial stopped by Ctrl-C as RUNNING, the trials table says INTERRUPTED.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pandas as pd

from raysweep.run.trials_table import error_summary
from raysweep.store.layout import SweepLayout, partition_keys
from raysweep.store.shards import complete_shards
from raysweep.store.storage import read_parquet_table
from raysweep.trials.source import trial_source


def _last_written_step(layout: SweepLayout, trial_id: str) -> int | None:
    chunks = complete_shards(layout.trial_train_metrics_dir(trial_id))
    return max((int(partition_keys(c)["upto"]) for c in chunks), default=None)


def _progress(layout: SweepLayout, trial_id: str, steps: int) -> dict:
    """From the trial's two newest train-metrics chunks: the step the newest one goes up to, the last step's
    training loss, the newest chunk's median tokens/s, and the seconds left at the wall-clock pace of the last
    report cycle (steps, eval and checkpoint alike; with one chunk, its median step time)."""
    chunks = sorted(complete_shards(layout.trial_train_metrics_dir(trial_id)),
                    key=lambda chunk: int(partition_keys(chunk)["upto"]))
    if not chunks:
        return {"written_step": None, "loss": float("nan"), "tokens_per_s": float("nan"), "eta_s": float("nan")}
    newest = read_parquet_table(chunks[-1]).to_pandas().sort_values("step")
    last_step, last_time = int(newest.step.iloc[-1]), float(newest.time.iloc[-1])
    per_step = float(newest.step_time_s.median())
    if len(chunks) > 1:
        previous = read_parquet_table(chunks[-2]).to_pandas()
        cycle_steps = last_step - int(previous.step.max())
        if cycle_steps > 0 and last_time > previous.time.max():
            per_step = (last_time - float(previous.time.max())) / cycle_steps
    return {"written_step": int(partition_keys(chunks[-1])["upto"]), "loss": float(newest.loss.iloc[-1]),
            "tokens_per_s": float(newest.tokens_per_s.median()), "eta_s": max(0, steps - last_step) * per_step}


def _reported_step(result: dict | None) -> int | None:
    return (result or {}).get("step")  # may be 0: a checkpoint scored at its initialization


def _last_step(last_result: dict | None, written_step: int | None, status: str) -> int | None:
    """The newer of Tune's last result and the newest train-metrics chunk (a search trial reports to Tune only
    at its evals); a pruned trial's is where the scheduler stopped it (its workers may have run on a little)."""
    reported = _reported_step(last_result)
    if status == "PRUNED":
        return reported
    return max((s for s in (reported, written_step) if s is not None), default=None)


def _final_statuses(layout: SweepLayout) -> dict[str, str]:
    """The trials table's statuses, when the sweep command wrote it after Tune's last state."""
    states = layout.tune_states()
    trials_file = layout.trials_file
    if not states or not trials_file.exists() or trials_file.stat().st_mtime < states[-1].stat().st_mtime:
        return {}
    return {row["trial_id"]: row["status"] for row in read_parquet_table(trials_file).to_pylist()}


COLUMNS = ["trial_id", "status", "weight_decay", "scale", "seed", "last_step", "steps", "loss", "tokens_per_s",
           "eta_s", "trial_retries", "worker_restarts", "preempted", "error"]
UNFINISHED = ("RUNNING", "PENDING", "PAUSED")


def _record(line: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError:  # a damaged line still stands for a group that started
        return {}
    return record if isinstance(record, dict) else {}


def _restarts(layout: SweepLayout, trial_id: str) -> dict:
    """Worker-group restarts from the trial's attempts log, and how many of its groups were warned of a
    preemption (the restart after one is charged to failure.max_preemption_failures)."""
    attempts_file = layout.attempts_file(trial_id)
    lines = attempts_file.read_text().splitlines() if attempts_file.exists() else []
    attempts = [_record(line) for line in lines if line.strip()]
    return {"worker_restarts": max(0, len(attempts) - 1),
            "preempted": sum("preemption_notice" in attempt for attempt in attempts)}


def _tune_error(layout: SweepLayout, trial, trial_id: str) -> str | None:
    """The error text Tune stored for a failed trial, read from that trial's own dir in this sweep and nowhere
    else: the state of a sweep dir from elsewhere may name any file as its error file."""
    name = trial.run_metadata.error_filename
    if trial.status != trial.ERROR or not name or PurePosixPath(name).name != name:
        return None
    path = layout.tune_dir / trial_id / name
    return path.read_text() if path.exists() else None


def _from_tune(layout: SweepLayout, spec) -> list[dict]:
    from ray.tune import ExperimentAnalysis

    source, final_statuses = trial_source(spec), _final_statuses(layout)
    rows = []
    for trial in ExperimentAnalysis(str(layout.tune_dir)).trials:
        point = source.point_of(trial.config)
        error = _tune_error(layout, trial, point.trial_id)
        # Finished (its done file) wins over what Tune last saved; so does the sweep command's final table.
        status = final_statuses.get(point.trial_id, "TERMINATED" if layout.done_file(point.trial_id).exists()
                                    else "PRUNED" if source.pruned(trial.last_result) else trial.status)
        steps = max(source.report_steps(point), default=0)
        progress = _progress(layout, point.trial_id, steps)  # one listing and read of the chunks per trial
        rows.append({"trial_id": point.trial_id, "status": status,
                     "weight_decay": point.weight_decay, "scale": point.scale, "seed": point.seed,
                     "last_step": _last_step(trial.last_result, progress.pop("written_step"), status), "steps": steps,
                     **progress,
                     "trial_retries": int(trial.num_failures or 0), **_restarts(layout, point.trial_id),
                     "error": error_summary(error)[:120] if error else ""})
    return rows


def _from_trials_table(layout: SweepLayout) -> list[dict]:
    """Where Tune's state cannot be read (a sweep of an earlier raysweep: its state names modules
    that moved), the trials table the sweep command wrote, without Tune's retry count."""
    return [{"trial_id": row["trial_id"], "status": row["status"], "weight_decay": row["weight_decay"],
             "scale": row["scale"], "seed": row["seed"], "last_step": _last_written_step(layout, row["trial_id"]),
             "trial_retries": float("nan"), **_restarts(layout, row["trial_id"]),
             "error": (row["error"] or "")[:120]}
            for row in read_parquet_table(layout.trials_file).to_pylist()]


def trial_status(sweep_dir) -> pd.DataFrame:
    from raysweep.run.preflight import load_sweep_spec

    layout = SweepLayout.at(sweep_dir)
    if not layout.tune_states():
        raise FileNotFoundError(f"{layout.root}: no Tune experiment state (tune/experiment_state-*.json); "
                                "is this a sweep directory that has started?")
    spec = load_sweep_spec(layout)
    try:
        rows = _from_tune(layout, spec)
    except (ImportError, AttributeError):  # unpickling an earlier raysweep's trial state
        if not layout.trials_file.exists():
            raise
        rows = _from_trials_table(layout)
    frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(["scale", "weight_decay", "seed"]).reset_index(drop=True)
    frame.loc[~frame.status.isin(UNFINISHED), "eta_s"] = float("nan")  # nothing left to wait for
    return frame


def format_duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: not known
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def sweep_line(frame: pd.DataFrame) -> str:
    """Trials done, running and left, and the sweep's ETA: the work left (running trials' ETAs, plus each
    pending trial at the mean pace of the measured ones) spread over as many trials as run now."""
    counts = frame.status.value_counts()
    running, pending = int(counts.get("RUNNING", 0)), int(counts.get("PENDING", 0))
    line = (f"sweep: {int(counts.get('TERMINATED', 0))} of {len(frame)} trials done, {running} running, "
            f"{pending} pending, {int(counts.get('ERROR', 0))} failed")
    if counts.get("PRUNED"):
        line += f", {int(counts['PRUNED'])} pruned"
    known = frame[frame.last_step > 0]
    per_step = ((known.eta_s / (known.steps - known.last_step)).replace([float("inf")], float("nan")).mean()
                if len(known) else float("nan"))
    left = frame[frame.status == "RUNNING"].eta_s.sum() + per_step * frame[frame.status == "PENDING"].steps.sum()
    if running or pending:
        line += f"; ETA {format_duration(left / max(1, running))}"
    return line


def format_status(frame: pd.DataFrame) -> str:
    """What `raysweep status` prints: the table, then the sweep line."""
    shown = frame.assign(eta=frame.eta_s.map(format_duration)).drop(columns="eta_s")
    shown = shown[[c if c != "eta_s" else "eta" for c in COLUMNS]]
    table = shown.to_string(index=False, na_rep="-", formatters={
        "loss": lambda v: "-" if v != v else f"{v:.4f}", "tokens_per_s": lambda v: "-" if v != v else f"{v:.0f}"})
    return f"{table}\n{sweep_line(frame)}"
