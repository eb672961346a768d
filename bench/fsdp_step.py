"""Where a training step's time goes, phase by phase: forward, backward, gradient clip, optimizer.

Two setups on the same model and global batch, side by side in one run (no Ray, so this isolates
FSDP2 from the trial's other costs; `bench/trial_costs.py` measures the whole trial):

  bare   one process, 2 threads, the whole batch: `parallelize` with world_size 1 leaves the module
         plain (what a single CPU worker trains)
  fsdp   2 gloo ranks x 1 thread, half the batch each: `parallelize` with world_size 2, FSDP2 with one
         unit per decoder block plus the root, over torch's own gloo collectives

Both clip with torch.nn.utils.clip_grad_norm_ (on DTensor gradients under FSDP2) and step raysweep's
fused AdamW, as `train_step` does.

    python bench/fsdp_step.py [--scale tiny] [--batch 8] [--seq 64] [--steps 200] [--repeats 3]

Each setup runs `--repeats` times, interleaved; the fastest run's phases are printed (ms per step).
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.models.build import build_config, build_model
from raysweep.spec.schema import TrialTrainConfig
from raysweep.train.optim import build_optimizer
from raysweep.train.parallel import parallelize

PHASES = ("forward", "backward", "clip", "optimizer")
WARMUP = 20
CFG = TrialTrainConfig(weight_decay=1.0)


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


def step_phases(model, batch: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One training step as train_step takes it, cut into PHASES."""
    optimizer, state = build_optimizer(model, CFG), {}
    return {"forward": lambda: state.update(loss=model(input_ids=batch, labels=batch).loss),
            "backward": lambda: state["loss"].backward(),
            "clip": lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), CFG.grad_clip),
            "optimizer": lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True))}


def _model(args) -> torch.nn.Module:
    return build_model(build_config(args.scale, args.vocab), seed=0)


def _batch(args) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq)))


def bare(args) -> dict:
    torch.set_num_threads(2)
    model = _model(args)
    parallelize(model, torch.device("cpu"), 1, CFG)  # plain: nothing to shard
    return time_phases(step_phases(model, _batch(args)), args.steps)


def _rank(rank: int, args, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = _model(args)
    parallelize(model, torch.device("cpu"), 2, CFG)
    half = args.batch // 2
    phases = time_phases(step_phases(model, _batch(args)[rank * half:(rank + 1) * half]), args.steps, dist.barrier)
    if rank == 0:
        queue.put(phases)
    dist.destroy_process_group()


def fsdp(args) -> dict:
    """Rank 0's phases; both ranks run at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_rank, nprocs=2, args=(args, port, queue))
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    setups = {"bare": bare, "fsdp": fsdp}
    runs = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, run in setups.items():
            runs[name].append(run(args))
    best = {name: min(phase_runs, key=lambda phases: sum(phases.values())) for name, phase_runs in runs.items()}

    print(f"model {args.scale}, vocab {args.vocab}, global batch {args.batch} x seq {args.seq}; "
          f"ms per step, fastest of {args.repeats} runs of {args.steps} steps")
    print(f"{'setup':<8}" + "".join(f"{phase:>10}" for phase in PHASES) + f"{'step':>10}{'tokens/s':>10}")
    step = {name: sum(phases.values()) for name, phases in best.items()}
    for name, phases in best.items():
        print(f"{name:<8}" + "".join(f"{phases[p]:>10.2f}" for p in PHASES)
              + f"{step[name]:>10.2f}{args.batch * args.seq / step[name] * 1e3:>10,.0f}")
    print(f"fsdp / bare tokens/s: {step['bare'] / step['fsdp']:.2f}")


if __name__ == "__main__":
    main()
