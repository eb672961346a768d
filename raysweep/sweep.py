"""The sweep: a Ray Tune grid of trials, each a driver that runs one Ray Train TorchTrainer.

Three layers, as in Ray's Train/Tune interop guide:
  [1] `train_loop_per_worker` (raysweep.train.loop): one FSDP2 rank.
  [2] `run_trial`: the Tune function trainable; builds a TorchTrainer named after the trial id.
  [3] `run_sweep` / `resume_sweep`: the Tuner over the grid (weight_decay x scale x seed x ...), or
      over `optuna.num_samples` points that Optuna chooses (raysweep.search).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

import pyarrow as pa
import ray
import yaml
from ray import tune
from ray.train import CheckpointConfig
from ray.train import FailureConfig as TrainFailureConfig
from ray.train import RunConfig as TrainRunConfig
from ray.train import ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from raysweep.catalog import trial_objectives
from raysweep.cluster import DRIVER_RESOURCE
from raysweep.config import (REGULARIZER_AXES, SpecError, SweepSpec, TrialPoint, data_config, grid_points,
                             parse_spec, regularizer_axes, spec_to_yaml, vocab_axis)
from raysweep.data.corpus import corpus_fingerprint
from raysweep.data.frequency import read_token_counts
from raysweep.data.prepare import PreparedData, data_key, prepare_data
from raysweep.data.tokenizer import load_tokenizer_file
from raysweep.model import build_config, count_params, flops_per_token
from raysweep.search import (corner_points, is_search, param_space, point_from_config, record_point,
                             searcher, sweep_points)
from raysweep.storage import (StoragePath, atomic_write_text, first_missing_dir, is_remote, location,
                              read_parquet_table, remove_empty_dirs, write_parquet)
from raysweep.train.checkpoint import TRIAL_DONE_FILE, trial_run_dir
from raysweep.train.loop import train_loop_per_worker
from raysweep.train.optim import max_row_decay_factor

log = logging.getLogger("raysweep")

TRIALS_FILE = "trials.parquet"
TRIALS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("weight_decay", pa.float64()), ("scale", pa.string()),
    ("seed", pa.int64()), ("decay_policy", pa.string()), ("freq_decay_alpha", pa.float64()),
    ("label_smoothing", pa.float64()), ("dropout", pa.float64()), ("regularizer", pa.string()),
    ("n_params", pa.int64()), ("flops_per_token", pa.int64()), ("lr", pa.float64()),
    ("steps", pa.int64()), ("data_key", pa.string()), ("vocab_size", pa.int64()),
    ("status", pa.string()), ("error", pa.string()),
])


class SweepDirError(ValueError):
    """A sweep directory that cannot be used as asked."""


def _trial_from_config(spec: SweepSpec, config: dict) -> TrialPoint:
    """The point of a Tune trial config (configs of sweeps from before an axis existed lack its
    key: the default, plain AdamW's, applies)."""
    if is_search(spec):
        return point_from_config(spec, config)
    return TrialPoint.model_validate({k: v for k, v in config.items() if k in TrialPoint.model_fields})


# [2] The trial driver -------------------------------------------------------------------------

def run_trial(config: dict, spec_dict: dict, data_dirs: dict[str, str]) -> None:
    """Tune function trainable: run (or resume) one trial's TorchTrainer to completion.

    `config` holds only the grid point; the spec and the data dirs (one per point of the vocab axis,
    keyed by `_data_slot`) come from `tune.with_parameters`.
    """
    spec = SweepSpec.model_validate(spec_dict)
    trial = _trial_from_config(spec, config)
    marker = trial_run_dir(spec.sweep_dir, trial.trial_id) / TRIAL_DONE_FILE
    if marker.exists():  # finished in an earlier run of this sweep dir: nothing to redo
        tune.report(json.loads(marker.read_text()))
        return
    data_dir = data_dirs[_data_slot(trial.vocab_size)]
    if is_search(spec):
        record_point(spec, trial)
    use_gpu = spec.resources.use_gpu
    resources = {"CPU": spec.resources.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec_dict, "trial": trial.model_dump(),
                           "data_dir": data_dir,
                           "driver_started_at": time.time()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.resources.workers_per_trial, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=TrainRunConfig(
            # The name is the trial id, never a timestamp: a retried or restored trial finds
            # its own checkpoints under the same name.
            name=trial.trial_id,
            storage_path=str(spec.sweep_dir / "train"),
            failure_config=TrainFailureConfig(
                max_failures=spec.failure.max_failures,
                max_preemption_failures=spec.failure.max_preemption_failures,
                controller_failure_limit=spec.failure.controller_failure_limit),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # A search's sampler needs its objectives in every result Tune sees, and they exist only
            # once the trial has finished: Tune then sees the one final report below.
            callbacks=[] if is_search(spec) else [TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float, str))}
    if is_search(spec):
        data = PreparedData.load(location(data_dir))
        row = pa.Table.from_pylist([trial_row(spec, trial, data, "TERMINATED", None)], schema=TRIALS_SCHEMA)
        scores = trial_objectives(spec.sweep_dir, row, data.data_dir / "token_freq.parquet")
        missing = [o for o in spec.optuna.objectives if o not in scores]
        if missing:
            raise SweepDirError(f"optuna.objectives: trial {trial.trial_id} has no final-step shards to score "
                                f"{missing[0]}; use objectives of a split the data has")
        final |= scores
    atomic_write_text(marker, json.dumps(final))
    if is_search(spec):
        tune.report(final)


# [3] The Tuner --------------------------------------------------------------------------------

def init_ray(spec: SweepSpec) -> None:
    """Connect to RAY_ADDRESS if set, else start an embedded local Ray."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        if DRIVER_RESOURCE not in ray.cluster_resources():
            raise SweepDirError(f"the Ray cluster at {os.environ['RAY_ADDRESS']} has no "
                                f"'{DRIVER_RESOURCE}' resource; start its head with "
                                f"--resources='{{\"{DRIVER_RESOURCE}\": 64}}'")
        return
    ray.init(resources={DRIVER_RESOURCE: 1024}, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=True,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})


def max_concurrent_trials(spec: SweepSpec) -> int:
    """How many trials fit at once on the cluster's scarcest resource (the spec may cap it)."""
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    cluster = ray.cluster_resources()
    workers = spec.resources.workers_per_trial
    fits = int(cluster.get("CPU", 0) // (workers * spec.resources.cpus_per_worker))
    if spec.resources.use_gpu:
        fits = min(fits, int(cluster.get("GPU", 0) // workers))
    return max(1, fits)


def _local_resources() -> dict:
    """What the embedded Ray will have, known before starting it."""
    import torch

    return {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}


def _check_cluster_can_hold(spec: SweepSpec, cluster: dict | None = None) -> None:
    cluster = cluster if cluster is not None else ray.cluster_resources()
    need_cpu = spec.resources.workers_per_trial * spec.resources.cpus_per_worker
    problems = []
    if cluster.get("CPU", 0) < need_cpu:
        problems.append(f"resources.workers_per_trial: a trial needs {need_cpu} CPUs "
                        f"(workers_per_trial x cpus_per_worker) but the cluster has "
                        f"{cluster.get('CPU', 0):g}; lower resources.workers_per_trial or "
                        "resources.cpus_per_worker, or run on a larger cluster (RAY_ADDRESS)")
    if spec.resources.use_gpu and cluster.get("GPU", 0) < spec.resources.workers_per_trial:
        problems.append(f"resources.use_gpu: a trial needs {spec.resources.workers_per_trial} GPUs "
                        f"but the cluster has {cluster.get('GPU', 0):g}; use --set "
                        "resources.use_gpu=false or fewer workers")
    if problems:
        raise SpecError(problems)


def _data_slot(vocab_size: int | None) -> str:
    return "" if vocab_size is None else str(vocab_size)


def _trainable(spec: SweepSpec, datas: dict):
    trainable = tune.with_parameters(run_trial, spec_dict=spec.model_dump(mode="json"),
                                     data_dirs={_data_slot(v): str(d.data_dir) for v, d in datas.items()})
    return tune.with_resources(trainable, {"CPU": 0, DRIVER_RESOURCE: 1})


def _param_space(spec: SweepSpec) -> dict:
    if is_search(spec):
        return param_space(spec)
    axes = {"weight_decay": spec.grid.weight_decay, "scale": spec.grid.scale, "seed": spec.grid.seed,
            **regularizer_axes(spec)}
    if spec.grid.vocab_size:  # absent otherwise: trial configs (and ids) of sweeps without the axis stay as they were
        axes["vocab_size"] = spec.grid.vocab_size
    return {name: tune.grid_search(list(values)) for name, values in axes.items()}


def _tune_config(spec: SweepSpec) -> tune.TuneConfig:
    def trial_name(trial) -> str:
        return _trial_from_config(spec, trial.config).trial_id

    search = {"search_alg": searcher(spec), "num_samples": spec.optuna.num_samples} if is_search(spec) else {}
    return tune.TuneConfig(max_concurrent_trials=max_concurrent_trials(spec), trial_name_creator=trial_name,
                           trial_dirname_creator=trial_name, **search)


def _spec_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    diffs = []
    for key in keys:
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _spec_differences(a, b, path + ".")
        elif a != b:
            diffs.append(f"{path}: {a!r} -> {b!r}")
    return diffs


# Spec fields that change how a step runs, not what it computes (the same losses up to float
# rounding: tests/unit/test_fsdp.py), so a sweep may continue under other values. Spelled as
# `_spec_differences` begins its lines ("path: old -> new"), so no longer name shares the prefix.
EXECUTION_ONLY = ("train.compile:", "train.activation_checkpointing:")


def _check_existing_sweep(spec: SweepSpec) -> bool:
    """True if this sweep dir already ran exactly this spec (so it resumes).

    A grid spec that differs only in its grid extends the sweep (finished trials are kept), and one
    that changes only how steps run (`EXECUTION_ONLY`) continues it; any other difference is refused,
    because the trials would no longer be comparable.
    """
    spec_file = spec.sweep_dir / "spec.yaml"
    if not spec_file.exists():
        return False
    raw = yaml.safe_load(spec_file.read_text())
    _check_ids_unchanged(spec, raw)
    try:  # fields added since the sweep was written take their defaults on both sides
        old = SweepSpec.model_validate(raw).model_dump(mode="json")
    except (ValueError, TypeError):
        old = raw
    new = spec.model_dump(mode="json")
    # A search's grid holds its fixed values: another seed or scale is another search. And a search
    # continues only under its own spec: its searcher's state is restored, not rebuilt.
    may_differ = () if is_search(spec) else ("grid.", *EXECUTION_ONLY)
    diffs = [d for d in _spec_differences(old, new) if not d.startswith(may_differ)]
    if diffs:
        raise SweepDirError(f"{spec.sweep_dir}: holds a sweep with a different spec ({'; '.join(diffs)}); "
                            f"use another `name` or `storage`, or the original values")
    return old == new


def _check_ids_unchanged(spec: SweepSpec, old_raw: dict) -> None:
    """Trial ids name a non-default decay policy or dropout since the regularizer axes exist; a
    sweep written before them with such a setting has its results under the old ids."""
    if "freq_decay_alpha" in (old_raw.get("train") or {}):
        return  # written by a version with the axes: same ids
    policy = (old_raw.get("train") or {}).get("decay_policy", "all_matrices")
    dropout = (old_raw.get("model") or {}).get("dropout", 0.0)
    if policy != "all_matrices" or dropout:
        raise SweepDirError(f"{spec.sweep_dir}: was written by an older raysweep whose trial ids did not name "
                            f"decay_policy={policy!r} / dropout={dropout!r}; finish it with that version, or "
                            "run the spec under another `name`")


def _check_storage(sweep_dir: StoragePath) -> None:
    """The sweep dir can be created and written: fail now, not in a worker an hour from now."""
    if is_remote(sweep_dir):
        probe = sweep_dir / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except Exception as exc:  # botocore / gcsfs raise their own types for auth and missing buckets
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SweepDirError(f"storage: cannot write to {sweep_dir} ({reason}); check the bucket "
                                "name and the credentials (AWS_* / GOOGLE_APPLICATION_CREDENTIALS), "
                                "or --set storage=PATH") from None
        return
    for path in (sweep_dir.parent, sweep_dir):
        if path.exists() and not path.is_dir():
            raise SweepDirError(f"storage: {path} is a file, not a directory; point storage at a "
                                "directory (--set storage=PATH)")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        probe = sweep_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SweepDirError(f"storage: cannot write to {sweep_dir} ({exc.strerror or exc}); point "
                            "storage at a writable directory (--set storage=PATH)") from None


def _check_data_unchanged(spec: SweepSpec) -> None:
    """A resumed sweep must read the data its checkpoints were trained on. Its spec is the same,
    so a new data key means a corpus or tokenizer file changed on disk."""
    if not (spec.sweep_dir / "spec.yaml").exists():
        return  # never started: a data dir left by a failed first attempt binds nothing
    built = sorted((spec.sweep_dir / "data").glob("*/meta.json"), key=lambda m: m.stat().st_mtime)
    keys = {data_key(data_config(spec, v), spec.eval) for v in vocab_axis(spec)}
    if not built or any(meta.parent.name in keys for meta in built):
        return
    key = data_key(spec.data, spec.eval)
    old = json.loads(built[-1].read_text())  # the newest: what the sweep ran on last
    tok = spec.data.tokenizer
    if tok.kind == "file":
        vocab = load_tokenizer_file(tok.path).get_vocab_size(with_added_tokens=True)
        if vocab != old["vocab_size"]:
            raise SweepDirError(f"data.tokenizer.path: {tok.path} now has a vocabulary of {vocab}, but "
                                f"this sweep's data and checkpoints use {old['vocab_size']}; restore the "
                                "original file or start a new sweep under another name")
    changed = "data.tokenizer.path" if tok.kind == "file" and old.get("fingerprints", {}).get(
        "tokenizer") != corpus_fingerprint(tok.path) else "data.corpus"
    raise SweepDirError(f"{changed}: the file changed since this sweep's data was built (data key "
                        f"{old['data_key']} -> {key}); restore the original file or start a new "
                        "sweep under another name")


def _prepare(spec: SweepSpec) -> dict:
    """The data dir of every point of the vocab axis ({None: dir} without one), built or reused."""
    try:
        return {v: prepare_data(data_config(spec, v), spec.eval, spec.sweep_dir, min_sequences=spec.train.batch_size)
                for v in vocab_axis(spec)}
    except OSError as exc:  # disk full, quota, file-size limit: nothing half-built is kept
        where = exc.filename or spec.sweep_dir / "data"
        if is_remote(spec.sweep_dir):  # s3fs / gcsfs raise OSErrors for refused or failed requests
            raise SweepDirError(f"storage: uploading the data dir to {where} failed "
                                f"({str(exc).splitlines()[0] or type(exc).__name__}); check the "
                                "credentials and the bucket's permissions") from None
        raise SweepDirError(f"storage: writing {where} failed ({exc.strerror or exc}): the disk is full "
                            "or a quota or file-size limit was hit; free space or point storage "
                            "elsewhere (--set storage=PATH)") from None


def load_prepared(spec: SweepSpec) -> dict:
    """The data dirs a sweep was run on ({vocab axis point: PreparedData}), without building any."""
    return {v: PreparedData.load(spec.sweep_dir / "data" / data_key(data_config(spec, v), spec.eval))
            for v in vocab_axis(spec)}


def _check_row_decay(spec: SweepSpec, datas: dict) -> None:
    """Frequency-aware decay must shrink every embedding row: lr x lambda x (count / median) **
    alpha >= 1 for the most frequent type would flip its row each step. Needs the data's counts,
    so it is checked after data prep, before any trial starts."""
    points = corner_points(spec) if is_search(spec) else grid_points(spec)
    points = [p for p in points if p.freq_decay_alpha and p.weight_decay]
    if not points:
        return
    field = ("optuna.space.freq_decay_alpha" if "freq_decay_alpha" in spec.optuna.space else
             "grid.freq_decay_alpha" if spec.grid.freq_decay_alpha else "train.freq_decay_alpha")
    if is_search(spec):
        field += " (at a corner of optuna.space)"
    counts = {}  # one read per data dir
    for point in points:
        data = datas[point.vocab_size]
        if data.data_key not in counts:
            counts[data.data_key] = read_token_counts(data.data_dir, data.vocab_size)
        lr = point.peak_lr(spec.train)
        factor = max_row_decay_factor(counts[data.data_key], point.freq_decay_alpha, lr, point.weight_decay)
        if factor >= 1:
            raise SpecError([f"{field}: alpha {point.freq_decay_alpha!r} with weight decay "
                             f"{point.weight_decay!r} and lr {lr!r} decays the most frequent "
                             f"type's embedding rows by {factor:.3g} per step (>= 1 flips them); lower alpha, "
                             "the weight decay or the lr"])


def _check_search_split(spec: SweepSpec, datas: dict) -> None:
    """The split a search scores must have eval sequences (a small corpus may pack no held-out one)."""
    for objective in spec.optuna.objectives if is_search(spec) else []:
        split = objective.split("_", 1)[0]
        if not all(d.n_eval_sequences[split] for d in datas.values()):
            raise SpecError([f"optuna.objectives: the data has no {split!r} eval sequences to score {objective}; "
                             "use a larger corpus or data.heldout_fraction, or objectives of the other split"])


def run_sweep(spec: SweepSpec) -> StoragePath:
    """Prepare data, run every grid point as a trial, write the trials table. Returns the sweep dir."""
    sweep_dir = spec.sweep_dir
    same_spec = _check_existing_sweep(spec)
    created = first_missing_dir(sweep_dir)
    try:
        _check_storage(sweep_dir)
        if not os.environ.get("RAY_ADDRESS"):
            _check_cluster_can_hold(spec, _local_resources())
        _check_data_unchanged(spec)
        datas = _prepare(spec)
        _check_row_decay(spec, datas)
        _check_search_split(spec, datas)
    except BaseException:
        if created is not None:  # bad input leaves storage as it was: no empty sweep dir either
            remove_empty_dirs(created)
        raise
    atomic_write_text(sweep_dir / "spec.yaml", spec_to_yaml(spec))
    init_ray(spec)
    _check_cluster_can_hold(spec)
    tune_path = sweep_dir / "tune"
    if same_spec and tune.Tuner.can_restore(str(tune_path)):
        log.warning("resuming the sweep in %s", sweep_dir)
        return resume_sweep(sweep_dir)
    tuner = tune.Tuner(
        _trainable(spec, datas),
        param_space=_param_space(spec),
        tune_config=_tune_config(spec),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(sweep_dir),
            failure_config=tune.FailureConfig(max_failures=spec.failure.trial_max_failures),
            verbose=1),
    )
    _finish(spec, tuner.fit(), datas)
    return sweep_dir


def load_sweep_spec(sweep_dir: str | StoragePath) -> SweepSpec:
    """The spec a sweep dir was run with, with `storage` pointing where the dir is now."""
    sweep_dir = location(sweep_dir)
    spec_file = sweep_dir / "spec.yaml"
    if not spec_file.exists():
        raise SweepDirError(f"{sweep_dir}: not a sweep directory (no spec.yaml); "
                            "run `raysweep sweep SPEC.yaml` first")
    raw = yaml.safe_load(spec_file.read_text())
    return parse_spec(raw, (f"storage={sweep_dir.parent}",), source=str(spec_file))


def resume_sweep(sweep_dir: str | StoragePath) -> StoragePath:
    """Restore an interrupted sweep from its Tune state and finish it (errored trials included)."""
    spec = load_sweep_spec(sweep_dir)
    _check_data_unchanged(spec)
    tune_path = spec.sweep_dir / "tune"
    if not tune.Tuner.can_restore(str(tune_path)):
        raise SweepDirError(f"{sweep_dir}: no Tune experiment state to resume under {tune_path}; "
                            "start it with `raysweep sweep`")
    datas = _prepare(spec)
    init_ray(spec)
    _check_cluster_can_hold(spec)
    tuner = tune.Tuner.restore(str(tune_path), trainable=_trainable(spec, datas),
                                 resume_errored=True)
    _finish(spec, tuner.fit(), datas)
    return spec.sweep_dir


# The trials table -----------------------------------------------------------------------------

def _finish(spec: SweepSpec, results, datas: dict) -> None:
    """trials.parquet from Tune's results: which trials ran in this run, and why each failed one did."""
    ran = {}
    for result in results:
        ran[_trial_from_config(spec, result.config).trial_id] = error_summary(result.error) if result.error else None
    write_trials_table(spec, datas, ran)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def error_summary(error: BaseException) -> str:
    """The line that names the cause: a Ray task error's text is the actor's header, the remote
    traceback, and last the exception itself (with terminal colours)."""
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(error)).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _current_regularizer(row: dict) -> dict:
    """A trials row of an earlier grid with the regularizer columns as this version writes them
    (rows from before the axes lack them), so excess_loss still pairs it with its baseline."""
    point = TrialPoint.model_validate({k: row[k] for k in TrialPoint.model_fields
                                       if row.get(k) is not None and k != "lr"})
    return row | {axis: getattr(point, axis) for axis in REGULARIZER_AXES} | {"regularizer": point.regularizer}


def trial_row(spec: SweepSpec, trial: TrialPoint, data: PreparedData, status: str, error: str | None) -> dict:
    """The trial's row of the trials table (TRIALS_SCHEMA)."""
    model_config = build_config(trial.scale, data.vocab_size, spec.model.family, trial.dropout, data.eos_id)
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
    }


def write_trials_table(spec: SweepSpec, datas: dict, ran: dict[str, str | None]) -> StoragePath:
    """trials.parquet: one row per trial of this grid (or search), merged with earlier grids of the sweep.

    `ran`: the trials Tune ran in this run, each with its error (None: no error). Status: ERROR for
    those with an error; TERMINATED for a finished trial (its done marker); INTERRUPTED for one that
    ran without finishing (a stopped sweep); PENDING for one that never started.
    """
    rows = []
    for trial in sweep_points(spec):
        complete = (trial_run_dir(spec.sweep_dir, trial.trial_id) / TRIAL_DONE_FILE).exists()
        error = ran.get(trial.trial_id)
        status = ("ERROR" if error else "TERMINATED" if complete
                  else "INTERRUPTED" if trial.trial_id in ran else "PENDING")
        rows.append(trial_row(spec, trial, datas[trial.vocab_size], status, error))
    table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)
    path = spec.sweep_dir / TRIALS_FILE
    if path.exists():  # keep trials of earlier grids of this sweep
        earlier = read_parquet_table(path)
        keep = [_current_regularizer(r) for r in earlier.to_pylist()
                if r["trial_id"] not in {x["trial_id"] for x in rows}]
        table = pa.Table.from_pylist(keep + rows, schema=TRIALS_SCHEMA)
    write_parquet(table, path)
    return path
