"""[1] The per-worker training function run by Ray Train's TorchTrainer (raysweep.run.driver builds it).

Reads top to bottom: setup -> build -> shard -> optimizer -> resume -> steps. Evaluation, the
metrics chunk and the report with its checkpoint are hooks (raysweep.train.hooks).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import time

import numpy as np
import ray.train
import torch

from raysweep.data.frequency import read_token_counts
from raysweep.data.prepare import PreparedData, eval_sets, open_array
from raysweep.models import INIT_SCHEME
from raysweep.models.build import build_config, flops_per_token
from raysweep.models.init import materialize, meta_model
from raysweep.spec.schema import SweepSpec
from raysweep.store.layout import DATA_MARKER, SweepLayout
from raysweep.store.storage import atomic_write_text, ensure_dir, local_copy, location
from raysweep.train.attempts import log_attempt
from raysweep.train.checkpoint import latest_checkpoint, load_checkpoint, mark_complete
from raysweep.train.hooks import CheckpointHook, EvalHook, MetricsHook, PreemptionHook, TensorBoardHook
from raysweep.train.optim import build_lr_schedule, build_optimizer, decay_mask, summarize_mask
from raysweep.train.parallel import parallelize, worker_device
from raysweep.train.step import train_step
from raysweep.train.throughput import peak_flops
from raysweep.trials.point import TrialPoint


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n_sequences: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_sequences)


def batch_rows(step: int, seed: int, n_sequences: int, batch_size: int) -> np.ndarray:
    """Global batch of training rows for a step: depends only on (seed, step), not on weight decay
    or on the number of workers, so paired trials see the same data in the same order."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, n_sequences)
    return np.array([_epoch_order(seed, int(e), n_sequences)[o] for e, o in zip(epochs, offsets)])


def train_loop_per_worker(config: dict) -> None:
    # [1] Setup: parse the trial dict back into the validated spec first thing.
    entered_at = time.time()  # all before this is Ray's worker-group start and this module's import
    spec = SweepSpec.model_validate(config["spec"])
    trial = TrialPoint.model_validate(config["trial"])
    train_cfg = trial.train_config(spec.train)  # lambda, the regularizers and the lr of this trial
    data = PreparedData.load(location(config["data_dir"]))
    layout = spec.layout
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(spec.resources.cpus_per_worker)
    device = worker_device(spec.resources.use_gpu)

    # [2] Build on the meta device: the architecture, no memory yet.
    model_config = build_config(trial.scale, data.vocab_size, spec.model, trial.dropout, data.eos_id, spec.layout)
    model = meta_model(model_config)
    template = copy.deepcopy(model)  # the unsharded meta twin each unit is built from

    # [3] Shard (FSDP2 when there is more than one worker, or a GPU), then materialize: each rank allocates
    # and initializes its own shards, unit by unit; the values are the seed's, whatever the world size.
    applied = parallelize(model, device, world, train_cfg)
    materialize(model, template, trial.seed, device)

    # [4] Optimizer and lr schedule.
    arrays_dir = local_copy(data.data_dir, data.data_key, DATA_MARKER)  # memmap needs a local file
    counts = read_token_counts(arrays_dir, data.vocab_size) if train_cfg.uses_row_decay else None
    optimizer = build_optimizer(model, train_cfg, counts)

    # [5] Resume from the newest complete checkpoint, if this is a restart.
    start_step = 0
    ray_checkpoint = ray.train.get_checkpoint()
    resume_from = latest_checkpoint(ray_checkpoint.path if ray_checkpoint else None, layout.trial_dir(trial.trial_id))
    if resume_from is not None:
        start_step = load_checkpoint(model, optimizer, resume_from)
    schedule = build_lr_schedule(optimizer, train_cfg, start_step)

    peak, peak_source = peak_flops(device)
    if rank == 0:
        if resume_from is not None:
            # Ray registered it, so every rank had uploaded; the previous group may have died
            # before rank 0 could mark it, and this step is never saved again.
            mark_complete(resume_from, start_step)
        log_attempt(layout, trial.trial_id, start_step,
                     since_driver_start_s=time.time() - config["driver_started_at"],
                     train_fn_entered_s=entered_at - config["driver_started_at"],
                     peak_flops=peak, peak_source=peak_source, workers=world, init=INIT_SCHEME, **applied)
        atomic_write_text(layout.decay_groups_file(trial.trial_id),
                          json.dumps(summarize_mask(model, decay_mask(model, train_cfg.decay_policy)), indent=1))

    train_rows = open_array(arrays_dir, "train")
    steps, batch_size = spec.train.steps, spec.train.batch_size
    per_rank = batch_size // world
    evaluation = EvalHook(layout, trial.trial_id, eval_sets(data, arrays_dir), spec.eval_steps(), spec.eval.batch_size,
                          rank, world, device)
    metrics = MetricsHook(layout, trial.trial_id, steps, batch_size * train_rows.shape[1],
                          flops_per_token(model_config, spec.data.seq_len), peak, rank, world, device)
    checkpoint = CheckpointHook(layout, trial.trial_id, spec.checkpoint_steps(), rank, world)
    preemption = PreemptionHook(layout, trial.trial_id, rank)
    live = TensorBoardHook(layout, trial.trial_id, rank)
    if start_step == 0 and evaluation.due(0):
        live(0, [], evaluation(model, 0))  # the initialization, before any update: nothing to report to Ray yet

    # [6] Steps. Eval before checkpoint at the same step, so a checkpoint at step k implies
    # complete shards at step k; a restart from k never needs to redo them.
    for step in range(start_step, steps):
        started = time.perf_counter()
        rows = batch_rows(step, trial.seed, len(train_rows), batch_size)
        local = rows[rank * per_rank:(rank + 1) * per_rank]
        input_ids = torch.from_numpy(train_rows[np.sort(local)].astype(np.int64)).to(device)
        lr = schedule.get_last_lr()[0]
        torch.manual_seed(hash((trial.seed, step, rank)) & 0x7FFFFFFF)  # dropout replays on resume
        loss = train_step(model, optimizer, input_ids, spec.train.grad_clip, train_cfg.label_smoothing)
        schedule.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # a GPU step ends when its kernels do, not when they are queued
        done = step + 1
        metrics.record(done, loss, lr, time.perf_counter() - started)
        _maybe_inject_crash(spec, layout, trial, done, rank)

        evaluate, save = evaluation.due(done), checkpoint.due(done)
        if evaluate or save:
            noticed = preemption.noticed_now()  # a node of this group will be reclaimed: checkpoint now
            report = metrics.flush(done) | (evaluation(model, done) if evaluate else {})
            live(done, metrics.flushed, report)
            checkpoint.report(model, optimizer, report, done, save or noticed)
            if noticed:
                preemption.record(done)


def _maybe_inject_crash(spec: SweepSpec, layout: SweepLayout, trial: TrialPoint, step: int, rank: int) -> None:
    """Testing aid: kill rank 0's process once at `failure.inject_crash_at_step`."""
    if rank != 0 or spec.failure.inject_crash_at_step != step:
        return
    marker = layout.crash_marker(trial.trial_id, step)
    if marker.exists():
        return
    ensure_dir(marker.parent)
    atomic_write_text(marker, "")
    os._exit(1)  # a dead process, not an exception: what a real worker failure looks like
