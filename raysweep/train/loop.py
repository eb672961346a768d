"""The per-worker training function run by Ray Train's TorchTrainer.

Reads top to bottom: setup → model → shard → optimizer → resume → loop (step, eval, checkpoint).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray.train
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from raysweep.config import SweepSpec, TrialPoint
from raysweep.data.frequency import read_token_counts
from raysweep.data.prepare import EVAL_SPLITS, PreparedData, open_array
from raysweep.evaluate import embedding_norms, n_batches_for, rank_slice, score
from raysweep.model import build_config, build_model, flops_per_token
from raysweep.shards import (TRAIN_METRICS_SCHEMA, embedding_shard_path, token_shard_path,
                             train_metrics_path, write_shard, write_token_shard)
from raysweep.storage import StoragePath, atomic_write_text, ensure_dir, local_copy, location
from raysweep.train.checkpoint import (checkpoint_dir_name, latest_checkpoint, load_checkpoint,
                                       mark_complete, save_checkpoint, trial_run_dir)
from raysweep.train.parallel import parallelize
from raysweep.train.step import train_step
from raysweep.train.throughput import peak_flops
from raysweep.train.optim import build_optimizer, decay_mask, lr_at, summarize_mask

ATTEMPTS_FILE = "attempts.jsonl"
DECAY_GROUPS_FILE = "decay_groups.json"  # which tensors decayed: the variable under study


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n_sequences: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_sequences)


def batch_rows(step: int, seed: int, n_sequences: int, batch_size: int) -> np.ndarray:
    """Global batch of training rows for a step: depends only on (seed, step), not on weight decay
    or on the number of workers, so paired trials see the same data in the same order."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, n_sequences)
    return np.array([_epoch_order(seed, int(e), n_sequences)[o] for e, o in zip(epochs, offsets)])


def trial_train_config(spec: SweepSpec, trial: TrialPoint):
    """spec.train with this trial's regularizer settings (the grid's axes) and a searched lr in place."""
    return spec.train.model_copy(update={"decay_policy": trial.decay_policy,
                                         "freq_decay_alpha": trial.freq_decay_alpha,
                                         "label_smoothing": trial.label_smoothing,
                                         "lr": trial.peak_lr(spec.train)})


def _maybe_inject_crash(spec: SweepSpec, trial: TrialPoint, step: int, rank: int) -> None:
    """Testing aid: kill rank 0's process once at `failure.inject_crash_at_step`."""
    if rank != 0 or spec.failure.inject_crash_at_step != step:
        return
    marker = trial_run_dir(spec.sweep_dir, trial.trial_id) / f".crash-injected-at-{step}"
    if marker.exists():
        return
    ensure_dir(marker.parent)
    atomic_write_text(marker, "")
    os._exit(1)  # a dead process, not an exception: what a real worker failure looks like


def _log_attempt(run_dir: StoragePath, start_step: int, **facts) -> None:
    """One line per worker-group start: how often a trial restarted, from which step, on which node.

    Read and rewritten whole, not appended: object stores cannot append, and only rank 0 of the
    one live worker group of a trial ever writes it."""
    ensure_dir(run_dir)
    record = {"start_step": start_step, "time": time.time(),
              "node_id": ray.get_runtime_context().get_node_id(), **facts}
    log = run_dir / ATTEMPTS_FILE
    earlier = log.read_text() if log.exists() else ""
    atomic_write_text(log, earlier + json.dumps(record) + "\n")


def _evaluate(model, eval_sets, spec, trial, step, rank, world, device) -> dict:
    """Write this rank's token shards for every split; return global mean loss per split."""
    metrics = {}
    for split, sequences in eval_sets.items():
        rows = rank_slice(len(sequences), rank, world)
        n_batches = n_batches_for(len(sequences), world, spec.eval.batch_size)
        table = score(model, sequences, rows, spec.eval.batch_size, n_batches, device)
        write_token_shard(table, token_shard_path(spec.sweep_dir, split, trial.trial_id, step, rank))
        totals = torch.tensor([float(np.sum(table["loss"].to_numpy())), table.num_rows],
                              dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        metrics[f"eval_loss_{split}"] = (totals[0] / totals[1]).item()
    norms = embedding_norms(model)  # a collective: every rank calls it
    if rank == 0:
        write_shard(norms, embedding_shard_path(spec.sweep_dir, trial.trial_id, step))
    return metrics


def train_loop_per_worker(config: dict) -> None:
    # [1] Setup: parse the trial dict back into the validated spec first thing.
    entered_at = time.time()  # all before this is Ray's worker-group start and this module's import
    spec = SweepSpec.model_validate(config["spec"])
    trial = TrialPoint.model_validate(config["trial"])
    data = PreparedData.load(location(config["data_dir"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(spec.resources.cpus_per_worker)
    device = (torch.device("cuda", torch.cuda.current_device()) if spec.resources.use_gpu
              else torch.device("cpu"))
    mesh = init_device_mesh(device.type, (world,))

    # [2] Model: identical random init on every rank (same seed), then sharded.
    model_config = build_config(trial.scale, data.vocab_size, spec.model.family, trial.dropout, data.eos_id)
    model = build_model(model_config, trial.seed)
    train_cfg = trial_train_config(spec, trial)
    applied = parallelize(model, mesh, spec.resources.use_gpu, train_cfg)
    arrays_dir = local_copy(data.data_dir, data.data_key, "meta.json")  # memmap needs a local file
    row_decay = bool(train_cfg.freq_decay_alpha and trial.weight_decay)  # the only user of the counts
    optimizer = build_optimizer(model, trial.weight_decay, train_cfg,
                                token_counts=read_token_counts(arrays_dir, data.vocab_size) if row_decay else None)

    # [3] Resume from the newest complete checkpoint, if this is a restart.
    start_step = 0
    run_dir = trial_run_dir(spec.sweep_dir, trial.trial_id)
    ray_checkpoint = ray.train.get_checkpoint()
    resume_from = latest_checkpoint(ray_checkpoint.path if ray_checkpoint else None, run_dir)
    if resume_from is not None:
        start_step = load_checkpoint(model, optimizer, resume_from)

    peak, peak_source = peak_flops(device)
    model_flops_per_token = flops_per_token(model_config, spec.data.seq_len)
    if rank == 0:
        if resume_from is not None:
            # Ray registered it, so every rank had uploaded; the previous group may have died
            # before rank 0 could mark it, and this step is never saved again.
            mark_complete(resume_from, start_step)
        _log_attempt(run_dir, start_step, since_driver_start_s=time.time() - config["driver_started_at"],
                     train_fn_entered_s=entered_at - config["driver_started_at"],
                     peak_flops=peak, peak_source=peak_source, **applied)
        mask = decay_mask(model, trial.decay_policy)
        atomic_write_text(run_dir / DECAY_GROUPS_FILE, json.dumps(summarize_mask(model, mask), indent=1))

    train_rows = open_array(arrays_dir, "train")
    eval_sets = {s: np.asarray(open_array(arrays_dir, f"eval-{s}")) for s in EVAL_SPLITS
                 if data.n_eval_sequences[s] > 0}
    per_rank = spec.train.batch_size // world
    tokens_per_step = spec.train.batch_size * train_rows.shape[1]
    window: list[tuple] = []
    # This rank's loss per step, filled in place: keeping a 0-d tensor per step until the report grew
    # a CPU worker's memory ~4 MB a step (tiny: 0.6 -> 3 GB in 600 steps; bench/README.md).
    step_losses = torch.zeros(spec.train.steps, device=device)

    # [4] The loop. Eval before checkpoint at the same step, so a checkpoint at step k implies
    # complete shards at step k; a restart from k never needs to redo them.
    for step in range(start_step, spec.train.steps):
        started = time.perf_counter()
        rows = batch_rows(step, trial.seed, len(train_rows), spec.train.batch_size)
        local = rows[rank * per_rank:(rank + 1) * per_rank]
        input_ids = torch.from_numpy(train_rows[np.sort(local)].astype(np.int64)).to(device)
        lr = lr_at(step, train_cfg)
        torch.manual_seed(hash((trial.seed, step, rank)) & 0x7FFFFFFF)  # dropout replays on resume
        loss = train_step(model, optimizer, input_ids, lr, spec.train.grad_clip, trial.label_smoothing)
        done = step + 1
        step_time_s = time.perf_counter() - started
        tokens_per_s = tokens_per_step / step_time_s
        step_losses[step] = loss
        window.append((done, None, lr, tokens_per_s, step_time_s,  # loss: from step_losses at the report
                       tokens_per_s * model_flops_per_token / (world * peak), time.time()))
        _maybe_inject_crash(spec, trial, done, rank)

        is_last = done == spec.train.steps
        evaluate = done % spec.eval.every == 0 or is_last
        save = done % spec.train.checkpoint_every == 0 or is_last
        if not (evaluate or save):
            continue
        window = _average_losses_over_ranks(window, step_losses, world)
        eval_started = time.perf_counter()
        metrics = _evaluate(model, eval_sets, spec, trial, done, rank, world, device) if evaluate else {}
        metrics["eval_s"] = time.perf_counter() - eval_started  # scoring + shard writes, for P2
        metrics.update(_window_metrics(window, done))
        if rank == 0:
            columns = dict(zip(TRAIN_METRICS_SCHEMA.names, zip(*window)))
            write_shard(pa.table(columns, schema=TRAIN_METRICS_SCHEMA),
                        train_metrics_path(spec.sweep_dir, trial.trial_id, done))
        window = []
        _report(model, optimizer, metrics, done, rank, run_dir, save)


def _average_losses_over_ranks(window: list[tuple], step_losses: torch.Tensor, world: int) -> list[tuple]:
    """The window with each step's loss averaged over ranks: one collective per report instead of
    one per step (gloo has no AVG: sum, then divide)."""
    first_step = window[0][0] - 1
    losses = step_losses[first_step:first_step + len(window)].clone()
    dist.all_reduce(losses)
    return [(entry[0], loss / world, *entry[2:]) for entry, loss in zip(window, losses.tolist())]


def _window_metrics(window: list[tuple], step: int) -> dict:
    steps, losses, lrs, tokens_per_s, step_times, mfus, _ = zip(*window)
    return {"step": step, "loss": float(np.mean(losses)), "lr": lrs[-1],
            "tokens_per_s": float(np.median(tokens_per_s)), "step_time_s": float(np.median(step_times)),
            "mfu": float(np.median(mfus))}


def _report(model, optimizer, metrics: dict, step: int, rank: int, run_dir: StoragePath, save: bool) -> None:
    """ray.train.report, with a DCP checkpoint when `save`. Every rank calls it the same number
    of times, and it synchronizes the ranks, hence only at eval/checkpoint cadence."""
    if not save:
        ray.train.report(metrics)
        return
    name = checkpoint_dir_name(step)
    with tempfile.TemporaryDirectory(prefix=f"ckpt-{step}-rank{rank}-") as directory:
        save_checkpoint(model, optimizer, step, Path(directory), rank)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                         checkpoint_dir_name=name)
    dist.barrier()  # every rank has uploaded its part: the stored checkpoint is whole
    if rank == 0:
        mark_complete(run_dir / name, step)
