"""trials.parquet: one row per trial that Tune knew in a run, written from the points that ran."""

from __future__ import annotations

import re

import pyarrow as pa

from raysweep.data.prepare import PreparedData
from raysweep.run.migrations import current_regularizer
from raysweep.spec.schema import SweepSpec
from raysweep.store.storage import read_parquet_table, write_parquet
from raysweep.trials.point import TrialPoint
from raysweep.trials.source import trial_source

TRIALS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("weight_decay", pa.float64()), ("scale", pa.string()),
    ("seed", pa.int64()), ("decay_policy", pa.string()), ("freq_decay_alpha", pa.float64()),
    ("label_smoothing", pa.float64()), ("dropout", pa.float64()), ("regularizer", pa.string()),
    ("n_params", pa.int64()), ("flops_per_token", pa.int64()), ("lr", pa.float64()),
    ("steps", pa.int64()), ("data_key", pa.string()), ("vocab_size", pa.int64()),
    ("status", pa.string()), ("error", pa.string()),
    # where the model came from (a hub id or dir; None: a preset) and what token_freq counted
    ("model_source", pa.string()), ("counting_corpus", pa.string()),
])

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def error_summary(error: BaseException | str) -> str:
    """The line that names the cause: a Ray task error's text is the actor's header, the remote
    traceback, and last the exception itself (with terminal colours)."""
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(error)).splitlines() if line.strip()]
    return lines[-1] if lines else (type(error).__name__ if isinstance(error, BaseException) else "")


def trial_row(spec: SweepSpec, trial: TrialPoint, data: PreparedData, status: str, error: str | None) -> dict:
    """The trial's row of the trials table (TRIALS_SCHEMA)."""
    from raysweep.models.build import build_config, count_params, flops_per_token  # torch: only when writing

    model_config = build_config(trial.scale, data.vocab_size, spec.model, trial.dropout, data.eos_id, spec.layout)
    return {
        "trial_id": trial.trial_id, "weight_decay": trial.weight_decay, "scale": trial.scale,
        "seed": trial.seed, "decay_policy": trial.decay_policy,
        "freq_decay_alpha": trial.freq_decay_alpha, "label_smoothing": trial.label_smoothing,
        "dropout": trial.dropout, "regularizer": trial.regularizer,
        "n_params": count_params(model_config),
        "flops_per_token": flops_per_token(model_config, spec.data.seq_len),
        "lr": trial.peak_lr(spec.train), "steps": spec.train.steps, "data_key": data.data_key,
        "vocab_size": data.vocab_size,
        "status": status, "error": error,
        "model_source": spec.model.configs[trial.scale].hf if trial.scale in spec.model.configs else None,
        "counting_corpus": spec.data.counting_corpus or spec.data.corpus,
    }


def checkpoint_rows(spec: SweepSpec, datas: dict, ran: list[tuple]) -> list[dict]:
    """One row per model scored from checkpoints (its revisions are its steps): TERMINATED once every
    revision is, ERROR if one failed, INTERRUPTED if some ran, else PENDING. What trained it (weight decay,
    seed, lr) is not known here and stays NULL."""
    from raysweep.models.build import count_params, flops_per_token, stored_config

    by_model: dict[str, list] = {}
    for point, status, error in ran:
        by_model.setdefault(point.model, []).append((point, status, error))
    rows = []
    for model, points in by_model.items():
        statuses = [status for _, status, _ in points]
        errors = [error for _, _, error in points if error]
        status = ("TERMINATED" if set(statuses) == {"TERMINATED"} else "ERROR" if errors
                  else "INTERRUPTED" if {"TERMINATED", "INTERRUPTED"} & set(statuses) else "PENDING")
        data = datas[model]
        config = stored_config(spec.layout, model)
        rows.append({name: None for name in TRIALS_SCHEMA.names} | {
            "trial_id": model, "scale": model, "n_params": count_params(config),
            "flops_per_token": flops_per_token(config, spec.data.seq_len),
            "steps": max(spec.checkpoints.models[model].step_of(r) for r in spec.checkpoints.models[model].revisions),
            "data_key": data.data_key, "vocab_size": data.vocab_size, "status": status,
            "error": errors[0] if errors else None, "model_source": spec.checkpoints.models[model].hf,
            "counting_corpus": spec.data.counting_corpus or spec.data.corpus})
    return rows


def trial_status(done: bool, error: str | None, started: bool, pruned: bool = False) -> str:
    """ERROR with an error; TERMINATED once finished (its done marker); PRUNED when a search's scheduler
    stopped it early; INTERRUPTED when it ran without finishing (a stopped sweep); PENDING when it never
    started."""
    return ("ERROR" if error else "TERMINATED" if done else "PRUNED" if pruned
            else "INTERRUPTED" if started else "PENDING")


def write_trials_table(spec: SweepSpec, datas: dict, ran: list[tuple]) -> list[dict]:
    """trials.parquet from the trials of this run (`ran`: point, status, error; a checkpoint source's points
    make one row per model), merged with the rows of
    earlier runs of the sweep (an earlier grid) that this one did not touch. Returns this run's rows."""
    rows = ([trial_row(spec, point, datas[point.data_slot], status, error) for point, status, error in ran]
            if trial_source(spec).trains else checkpoint_rows(spec, datas, ran))
    path = spec.layout.trials_file
    this_run = {row["trial_id"] for row in rows}
    earlier = []
    if path.exists():
        earlier = [current_regularizer(r) for r in read_parquet_table(path).to_pylist() if r["trial_id"] not in this_run]
    write_parquet(pa.Table.from_pylist(earlier + rows, schema=TRIALS_SCHEMA), path)
    return rows
