"""What the training loop does besides steps, as named hooks on a step cadence (levanter's
`trainer.add_hook(cb, every=...)`): per-token evaluation, the training-metrics chunk, the
report with its checkpoint, and the check for a coming preemption.

Every rank calls every hook at the same steps: evaluation runs collectives (FSDP2 gathers
parameters in each forward) and `ray.train.report` synchronizes the ranks.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray.train
import torch
import torch.distributed as dist

from raysweep.store.layout import SweepLayout, checkpoint_dir_name
from raysweep.store.storage import is_remote, upload_tree
from raysweep.store.shards import (TRAIN_METRICS_SCHEMA, manifest_path, token_types_table, type_sums, write_shard,
                                   write_token_shard)
from raysweep.train.attempts import note_preemption
from raysweep.train.checkpoint import mark_complete, save_checkpoint
from raysweep.train.evaluate import embedding_norms, n_batches_for, rank_slice, score


def _sum_over_ranks(tensor: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(tensor)
    return tensor


class EvalHook:
    """At the spec's eval steps (SweepSpec.eval_steps): this rank's token shards for each split, rank 0's
    per-type rollup of every rank's rows and embedding-norm shard; returns the global mean loss per split."""

    def __init__(self, layout: SweepLayout, trial_id: str, eval_sets: dict, steps: list[int],
                 batch_size: int, rank: int, world: int, device: torch.device):
        self.layout, self.trial_id, self.eval_sets = layout, trial_id, eval_sets
        self.steps, self.batch_size = frozenset(steps), batch_size
        self.rank, self.world, self.device = rank, world, device

    def due(self, step: int) -> bool:
        return step in self.steps

    def __call__(self, model: torch.nn.Module, step: int) -> dict:
        started = time.perf_counter()
        metrics = {}
        for split, sequences in self.eval_sets.items():
            rows = rank_slice(len(sequences), self.rank, self.world)
            n_batches = n_batches_for(len(sequences), self.world, self.batch_size)
            rollup = self.layout.token_types_shard(split, self.trial_id, step)
            if self.rank == 0:  # a retried eval's rollup from before is not this eval's until rewritten below
                manifest_path(rollup).unlink(missing_ok=True)
            table = score(model, sequences, rows, self.batch_size, n_batches, self.device)
            write_token_shard(table, self.layout.token_shard(split, self.trial_id, step, self.rank))
            # occurrences, summed loss, correct predictions per type, over every rank's rows
            by_type = torch.from_numpy(type_sums(table, int(model.config.vocab_size)))
            by_type = _sum_over_ranks(by_type.to(self.device), self.world)
            if self.rank == 0:
                write_shard(token_types_table(by_type.cpu().numpy()), rollup)
            n, loss_sum = by_type[0], by_type[1]
            metrics[f"eval_loss_{split}"] = (loss_sum.sum() / n.sum()).item()
            # token-balanced: the mean over the token types present of each type's mean loss (DESIGN.md)
            present = n > 0
            metrics[f"eval_balanced_loss_{split}"] = (loss_sum[present] / n[present]).mean().item()
        norms = embedding_norms(model)  # a collective under FSDP2: every rank calls it
        if self.rank == 0:
            write_shard(norms, self.layout.embedding_shard(self.trial_id, step))
        metrics["eval_s"] = time.perf_counter() - started  # scoring + shard writes: eval's share of a trial
        return metrics


class MetricsHook:
    """Records every step; at each report, averages the window's losses over ranks (one collective
    per report, not per step), writes the window as a train-metrics chunk (rank 0) and returns its
    summary."""

    def __init__(self, layout: SweepLayout, trial_id: str, steps: int, tokens_per_step: int,
                 flops_per_token: int, peak_flops: float, rank: int, world: int, device: torch.device):
        self.layout, self.trial_id = layout, trial_id
        self.tokens_per_step, self.flops_per_token, self.peak_flops = tokens_per_step, flops_per_token, peak_flops
        self.rank, self.world = rank, world
        # This rank's loss per step, filled in place: keeping a 0-d tensor per step until the report grew
        # a CPU worker's memory ~4 MB a step (tiny: 0.6 -> 3 GB in 600 steps; bench/README.md).
        self.losses = torch.zeros(steps, device=device)
        self.window: list[tuple] = []
        self.flushed: list[tuple] = []  # the last report's rows, as the chunk holds them (TRAIN_METRICS_SCHEMA)

    def record(self, step: int, loss: torch.Tensor, lr: float, step_time_s: float) -> None:
        """`step`: the steps done, 1-based, as every table counts them."""
        self.losses[step - 1] = loss
        tokens_per_s = self.tokens_per_step / step_time_s
        mfu = tokens_per_s * self.flops_per_token / (self.world * self.peak_flops)
        self.window.append((step, lr, tokens_per_s, step_time_s, mfu, time.time()))

    def flush(self, step: int) -> dict:
        first = self.window[0][0] - 1
        losses = _sum_over_ranks(self.losses[first:first + len(self.window)].clone(), self.world) / self.world
        rows = [(s, loss, *rest) for (s, *rest), loss in zip(self.window, losses.tolist())]
        if self.rank == 0:
            columns = dict(zip(TRAIN_METRICS_SCHEMA.names, zip(*rows)))
            write_shard(pa.table(columns, schema=TRAIN_METRICS_SCHEMA),
                        self.layout.train_metrics_shard(self.trial_id, step))
        self.window, self.flushed = [], rows
        _, loss, lr, tokens_per_s, step_time_s, mfu, _ = zip(*rows)
        return {"step": step, "loss": float(np.mean(loss)), "lr": lr[-1],
                "tokens_per_s": float(np.median(tokens_per_s)), "step_time_s": float(np.median(step_time_s)),
                "mfu": float(np.median(mfu))}


class CheckpointHook:
    """`ray.train.report` of the metrics, with a DCP checkpoint at the spec's checkpoint steps.

    Ray registers a checkpoint only when its controller polls the report; once every rank has
    returned from it (each after its own upload), rank 0 marks the stored checkpoint `_COMPLETE`."""

    def __init__(self, layout: SweepLayout, trial_id: str, steps: list[int], rank: int, world: int):
        self.layout, self.trial_id = layout, trial_id
        self.steps, self.rank, self.world = frozenset(steps), rank, world

    def due(self, step: int) -> bool:
        return step in self.steps

    def report(self, model, optimizer, metrics: dict, step: int, save: bool) -> None:
        if not save:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix=f"ckpt-{step}-rank{self.rank}-") as directory:
            save_checkpoint(model, optimizer, step, Path(directory), self.rank)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=checkpoint_dir_name(step))
        if self.world > 1:
            dist.barrier()  # every rank has uploaded its part: the stored checkpoint is whole
        if self.rank == 0:
            mark_complete(self.layout.checkpoint_dir(self.trial_id, step), step)


class TensorBoardHook:
    """Rank 0's live curves, as TensorBoard scalars under `<sweep>/tensorboard/<trial_id>/`: every step's
    training metrics (the rows of its train-metrics chunk: loss, lr, tokens/s, MFU) and each eval's average
    and token-balanced loss per split, written and flushed at each report, so `tensorboard --logdir <sweep dir>`
    shows a trial as it runs. On an object store the events are written on the node and uploaded at each report
    (an object cannot be appended to). A restarted group starts a new event file at its checkpoint's step."""

    TRAIN_SCALARS = ("loss", "lr", "tokens_per_s", "mfu")

    def __init__(self, layout: SweepLayout, trial_id: str, rank: int):
        self.writer = None
        if rank != 0:
            return
        from torch.utils.tensorboard import SummaryWriter  # tensorboard's protobufs: rank 0 only

        self.stored = layout.tensorboard_dir(trial_id)
        self.local = Path(tempfile.mkdtemp(prefix="raysweep-tb-")) if is_remote(self.stored) else Path(self.stored)
        self.writer = SummaryWriter(log_dir=str(self.local))

    def __call__(self, step: int, train_rows: list[tuple], report: dict) -> None:
        if self.writer is None:
            return
        for row in train_rows:
            values = dict(zip(TRAIN_METRICS_SCHEMA.names, row))
            for name in self.TRAIN_SCALARS:
                self.writer.add_scalar(f"train/{name}", values[name], values["step"], walltime=values["time"])
        for name, value in report.items():
            if name.startswith(("eval_loss_", "eval_balanced_loss_")):
                self.writer.add_scalar(f"eval/{name.removeprefix('eval_')}", value, step)
        self.writer.flush()
        if self.local != self.stored:
            upload_tree(self.local, self.stored)


class PreemptionHook:
    """At every report (where the ranks meet anyway): has Ray been told that a node of this worker group will be
    preempted? A spot reclaim drains the node with the preemption reason, and Ray Train passes that on. The first
    time it has, this report saves a checkpoint whatever its step, and once that checkpoint is marked complete
    rank 0 writes the notice on this attempt's line of attempts.jsonl. Ray Train then restarts the group from the
    newest checkpoint when the node goes, charged to `failure.max_preemption_failures`, not `max_failures`. The
    notice lands at the next report: keep reports (eval.every, train.checkpoint_every) closer together than the
    provider's warning (AWS 2 min, GCP 30 s)."""

    def __init__(self, layout: SweepLayout, trial_id: str, rank: int):
        self.layout, self.trial_id, self.rank = layout, trial_id, rank
        self.info = None

    def noticed_now(self) -> bool:
        """Every rank, at every report: Ray agrees on one answer across the group."""
        info = ray.train.get_preemption_info()
        if info is None or self.info is not None:
            return False
        self.info = info
        return True

    def record(self, step: int) -> None:
        """After the report at `step` has checkpointed: what the notice said, on this attempt's line."""
        if self.rank == 0:
            note_preemption(self.layout, self.trial_id, step, self.info.preempted_node_ids, self.info.deadline_ms)
