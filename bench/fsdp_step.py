"""Where a training step's time goes, phase by phase: forward, backward, gradient clip, optimizer.

The setups below on the same model and global batch, side by side in one run (no Ray, so this isolates
FSDP2 from the trial's other costs; `bench/trial_costs.py` measures the whole trial):

  bare        one process, 2 threads, the whole batch (the P1 reference)
  2x1t        2 processes x 1 thread at once, half the batch each, no process group: the ranks'
              compute on these cores with FSDP2's communication and DTensors taken away
  fsdp        raysweep's FSDP2 step: 2 gloo ranks x 1 thread, half the batch each, apply_fsdp (with its
              shared-memory all-gather and reduce-scatter), raysweep's sharded clip_grad_norm_ and its AdamW (fused)
  fsdp-pairwise  the same with the pairwise all-gather and reduce-scatter (raysweep's across hosts)
  fsdp-gloo   the same with gloo's own all_gather and reduce_scatter (raysweep's before pairwise)
  fsdp-foreach  the same with AdamW's foreach implementation (raysweep's before fused)
  fsdp-torch  the same ranks with torch's defaults: torch.nn.utils.clip_grad_norm_ on DTensors and
              AdamW's own choice of implementation (the per-tensor loop on CPU)
  comms       the same ranks doing only FSDP2's collectives for this model, nothing else: a shared-memory
              all-gather of every parameter (under forward), a shared-memory reduce-scatter of every
              gradient (backward), the clip's scalar all-reduce (shared memory too)
  comms-pairwise  the same with the pairwise all-gather and reduce-scatter
  comms-gloo  the same with gloo's own all_gather and reduce_scatter

    python bench/fsdp_step.py [--scale tiny] [--batch 8] [--seq 64] [--steps 200] [--repeats 3]

Each setup runs `--repeats` times, interleaved; the fastest run's phases are printed (ms per step).
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import time
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.spec.schema import TrainConfig
from raysweep.models.build import build_config, build_model
from raysweep.train.optim import build_optimizer
from raysweep.train.collectives import (PairwiseAllGather, PairwiseReduceScatter, PointToPointComm,
                                        all_reduce_sum_, gloo_collectives)
from raysweep.train.parallel import apply_fsdp, clip_grad_norm_

PHASES = ("forward", "backward", "clip", "optimizer")
WARMUP = 20


def time_phases(phases: dict[str, Callable[[], object]], steps: int, sync=lambda: None) -> dict:
    """Mean ms of each phase (run in order, once per step) over `steps` steps after a warm-up."""
    totals = dict.fromkeys(phases, 0.0)
    for step in range(WARMUP + steps):
        if step == WARMUP:
            totals = dict.fromkeys(phases, 0.0)
            sync()
        for name, run in phases.items():
            started = time.perf_counter()
            run()
            totals[name] += time.perf_counter() - started
    return {name: 1e3 * total / steps for name, total in totals.items()}


def step_phases(model, optimizer, batch: torch.Tensor, clip) -> dict[str, Callable[[], object]]:
    """One training step as train_step takes it, cut into PHASES."""
    state = {}
    return {"forward": lambda: state.update(loss=model(input_ids=batch, labels=batch).loss),
            "backward": lambda: state["loss"].backward(),
            "clip": lambda: clip(model.parameters(), TrainConfig().grad_clip),
            "optimizer": lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True))}


class GlooAllGather(PointToPointComm):
    """Gloo's own all_gather, what FSDP2 calls without a custom one."""

    def __call__(self, output_tensor, input_tensor, group, async_op=False):
        return dist.all_gather_single(output_tensor, input_tensor, group=group, async_op=async_op)


class GlooReduceScatter(PointToPointComm):
    """Gloo's own reduce_scatter, what FSDP2 calls without a custom one."""

    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
        return dist.reduce_scatter_single(output_tensor, input_tensor, group=group, op=op, async_op=async_op)


def collective_phases(numel: int, all_gather: PointToPointComm,
                      reduce_scatter: PointToPointComm) -> dict[str, Callable[[], object]]:
    """FSDP2's collectives alone, for one unit of `numel` parameters on 2 ranks."""
    full, shard, scalar = torch.zeros(2 * ((numel + 1) // 2)), torch.zeros((numel + 1) // 2), torch.zeros(1)
    return {"forward": lambda: all_gather(full, shard, dist.group.WORLD),
            "backward": lambda: reduce_scatter(shard, full, dist.group.WORLD, dist.ReduceOp.AVG),
            "clip": lambda: all_reduce_sum_(scalar, dist.group.WORLD), "optimizer": lambda: None}


def _model(args) -> torch.nn.Module:
    return build_model(build_config(args.scale, args.vocab), seed=0)


def _batch(args) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq)))


def bare(args) -> dict:
    torch.set_num_threads(2)
    model = _model(args)
    # a plain model: clip_grad_norm_ is torch's own clip, as in train_step
    return time_phases(step_phases(model, build_optimizer(model, 1.0, TrainConfig()), _batch(args),
                                   clip_grad_norm_), args.steps)


def _rank(rank: int, args, port: int, setup: str, queue) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    model = _model(args)
    sync = lambda: None  # noqa: E731
    if setup != "2x1t":
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        sync = dist.barrier
    if setup.startswith("comms"):  # the model only sizes the collectives; an FSDP2 model that never ran
        # forward aborted 4 of 23 runs at exit ("terminate called without an active exception"), 0 of 16 without
        comms = {"comms-gloo": lambda: (GlooAllGather(), GlooReduceScatter()),
                 "comms-pairwise": lambda: (PairwiseAllGather(), PairwiseReduceScatter()),
                 "comms": lambda: gloo_collectives(dist.group.WORLD)}[setup]()
        phases = time_phases(collective_phases(sum(p.numel() for p in model.parameters()), *comms),
                             args.steps, sync)
    else:
        if setup != "2x1t":
            apply_fsdp(model, init_device_mesh("cpu", (2,)), use_gpu=False)
        if setup == "fsdp-gloo":
            model.set_custom_all_gather(GlooAllGather())
            model.set_custom_reduce_scatter(GlooReduceScatter())
        if setup == "fsdp-pairwise":
            model.set_custom_all_gather(PairwiseAllGather())
            model.set_custom_reduce_scatter(PairwiseReduceScatter())
        optimizer = build_optimizer(model, 1.0, TrainConfig())
        if setup in ("fsdp-torch", "fsdp-foreach"):
            for group in optimizer.param_groups:  # AdamW reads these at every step
                group["fused"] = None
                group["foreach"] = True if setup == "fsdp-foreach" else None  # None: AdamW's own default
        half = args.batch // 2
        batch = _batch(args)[rank * half:(rank + 1) * half]
        clip = torch.nn.utils.clip_grad_norm_ if setup == "fsdp-torch" else clip_grad_norm_
        phases = time_phases(step_phases(model, optimizer, batch, clip), args.steps, sync)
    if rank == 0:
        queue.put(phases)
    if setup != "2x1t":
        dist.destroy_process_group()


def two_ranks(args, setup: str) -> dict:
    """Rank 0's phases; both ranks run at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_rank, nprocs=2, args=(args, port, setup, queue))
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    setups = {"bare": lambda: bare(args), **{name: functools.partial(two_ranks, args, name)
                                             for name in ("2x1t", "fsdp", "fsdp-pairwise", "fsdp-gloo", "fsdp-foreach",
                                                         "fsdp-torch", "comms", "comms-pairwise", "comms-gloo")}}
    runs = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, run in setups.items():
            runs[name].append(run())
    best = {name: min(phase_runs, key=lambda phases: sum(phases.values())) for name, phase_runs in runs.items()}

    print(f"model {args.scale}, vocab {args.vocab}, global batch {args.batch} x seq {args.seq}; "
          f"ms per step, fastest of {args.repeats} runs of {args.steps} steps")
    print(f"{'setup':<13}" + "".join(f"{phase:>10}" for phase in PHASES) + f"{'step':>10}{'tokens/s':>10}")
    for name, phases in best.items():
        step_ms = sum(phases.values())
        tokens_per_s = "-" if name.startswith("comms") else f"{args.batch * args.seq / step_ms * 1e3:,.0f}"
        print(f"{name:<13}" + "".join(f"{phases[p]:>10.2f}" for p in PHASES) + f"{step_ms:>10.2f}{tokens_per_s:>10}")
    step = {name: sum(phases.values()) for name, phases in best.items()}
    print(f"FSDP2's own cost per step (fsdp - 2x1t): {step['fsdp'] - step['2x1t']:.2f} ms, of which its "
          f"collectives alone {step['comms']:.2f} ms; the ceiling of 2 ranks on these cores (2x1t / bare): "
          f"{step['bare'] / step['2x1t']:.2f}")
    print(f"collectives alone, shared memory / pairwise / gloo's own: all-gather {best['comms']['forward']:.2f} / "
          f"{best['comms-pairwise']['forward']:.2f} / {best['comms-gloo']['forward']:.2f} ms, reduce-scatter "
          f"{best['comms']['backward']:.2f} / {best['comms-pairwise']['backward']:.2f} / "
          f"{best['comms-gloo']['backward']:.2f} ms")
    print(f"FSDP2 step with shared memory against pairwise: {step['fsdp-pairwise'] / step['fsdp']:.2f}x faster, "
          f"against gloo's own: {step['fsdp-gloo'] / step['fsdp']:.2f}x")
    print(f"AdamW per step: fused {best['fsdp']['optimizer']:.2f} ms, foreach {best['fsdp-foreach']['optimizer']:.2f}, "
          f"torch's default {best['fsdp-torch']['optimizer']:.2f}")
    print(f"ratios: fsdp / bare {step['bare'] / step['fsdp']:.2f}, fsdp-torch / bare "
          f"{step['bare'] / step['fsdp-torch']:.2f}, fsdp / fsdp-torch {step['fsdp-torch'] / step['fsdp']:.2f}")


if __name__ == "__main__":
    main()
