"""What a raysweep trial costs beyond the training itself, on this machine, measured side by side:

  P1  steady-state tokens/s of a raysweep trial (Ray Train + FSDP2, 2 gloo workers x 1 thread) against
      a bare single-process PyTorch loop (2 threads) on the same model, batch and data.  Goal >= 0.95.
  P2  per-token eval + shard writes as a share of the trial's wall time at the demo's cadence.  Goal <= 5%.
  P4  seconds from the trial driver's start, and from `raysweep sweep`, to the first training step.  Goal <= 10 s.

    python bench/trial_costs.py [--scale tiny] [--steps 500] [--compile]

--compile sets the spec's train.compile and compiles the blocks of the loops without Ray alike.

The trial is the demo's (examples/demo.yaml: batch 8, seq 64, eval and checkpoint every 250 steps), two grid
points (seeds 0 and 1: the same work twice) run through the real `raysweep sweep`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


SEEDS = (0, 1)  # two identical trials: the P1 figure is the better one
REPEATS = 3  # runs of each loop without Ray


def trial_figures(spec, trial_id: str, first: int, last: int) -> dict:
    """A finished trial's steady-state tokens/s, startup record, eval time and wall time."""
    attempt = json.loads((spec.sweep_dir / "train" / trial_id / "attempts.jsonl").read_text().splitlines()[0])
    with duckdb.connect(str(spec.sweep_dir / "catalog.duckdb"), read_only=True) as con:
        steps = con.execute("SELECT step, time, mfu FROM train_curves() WHERE trial_id = ? ORDER BY step",
                            [trial_id]).fetchnumpy()
    results = [json.loads(line) for line in
               next((spec.sweep_dir / "tune").glob(f"{trial_id}*/result.json")).read_text().splitlines()]
    times = dict(zip(steps["step"], steps["time"]))
    driver_start = attempt["time"] - attempt["since_driver_start_s"]
    return {"trial_id": trial_id, "attempt": attempt, "times": times, "driver_start": driver_start,
            "tokens_per_s": spec.train.batch_size * spec.data.seq_len * (last - first) / (times[last] - times[first]),
            "eval_s": sum(r.get("eval_s", 0.0) for r in results), "wall_s": times[spec.train.steps] - driver_start,
            "mfu": float(np.median(steps["mfu"][first:last]))}


def train_module_import_s() -> float:
    """Seconds to import the train function's module where Ray Train's worker already has torch and
    ray.train.torch: the part of a worker's start that is raysweep's."""
    code = ("import time, torch, ray.train.torch; started = time.perf_counter(); import raysweep.train.loop; "
            "print(time.perf_counter() - started)")
    return float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout)


def bare_loop_tokens_per_s(spec, data, scale: str, steps: int, warmup: int) -> float:
    """The same model, optimizer, lr schedule and batches in one process, no Ray, no FSDP."""
    from raysweep.data.prepare import open_array
    from raysweep.models.build import build_config, build_model
    from raysweep.train.loop import batch_rows
    from raysweep.train.step import train_step
    from raysweep.train.optim import build_optimizer, lr_at
    from raysweep.train.parallel import apply_compile

    torch.set_num_threads(spec.resources.workers_per_trial * spec.resources.cpus_per_worker)
    model = build_model(build_config(scale, data.vocab_size, spec.model.family, spec.model.dropout,
                                     data.eos_id), seed=0)
    if spec.train.compile:
        apply_compile(model, use_gpu=False)
    optimizer = build_optimizer(model, 1.0, spec.train)
    train_rows = open_array(data.data_dir, "train")
    tokens_per_step = spec.train.batch_size * train_rows.shape[1]
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        rows = np.sort(batch_rows(step, 0, len(train_rows), spec.train.batch_size))
        input_ids = torch.from_numpy(train_rows[rows].astype(np.int64))
        train_step(model, optimizer, input_ids, lr_at(step, spec.train), spec.train.grad_clip)
    return tokens_per_step * (steps - warmup) / (time.perf_counter() - started)


def _fsdp_worker(rank: int, world: int, spec_dict: dict, data_dir: str, scale: str, steps: int,
                 warmup: int, port: int, shard_blocks: bool, queue) -> None:
    """One rank of raysweep's FSDP2 setup (parallelize, gloo, 1 thread) without Ray."""
    import os

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from raysweep.spec.schema import SweepSpec
    from raysweep.data.prepare import PreparedData, open_array
    from raysweep.models.build import build_config, build_model
    from raysweep.train.loop import batch_rows
    from raysweep.train.step import train_step
    from raysweep.train.optim import build_optimizer, lr_at
    from raysweep.train.parallel import parallelize

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    spec, data = SweepSpec.model_validate(spec_dict), PreparedData.load(Path(data_dir))
    torch.set_num_threads(spec.resources.cpus_per_worker)
    model = build_model(build_config(scale, data.vocab_size, spec.model.family, spec.model.dropout,
                                     data.eos_id), seed=0)
    parallelize(model, init_device_mesh("cpu", (world,)), use_gpu=False, cfg=spec.train, shard_blocks=shard_blocks)
    optimizer = build_optimizer(model, 1.0, spec.train)
    train_rows = open_array(data.data_dir, "train")
    per_rank = spec.train.batch_size // world
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        rows = batch_rows(step, 0, len(train_rows), spec.train.batch_size)[rank * per_rank:(rank + 1) * per_rank]
        input_ids = torch.from_numpy(train_rows[np.sort(rows)].astype(np.int64))
        train_step(model, optimizer, input_ids, lr_at(step, spec.train), spec.train.grad_clip)
    if rank == 0:
        queue.put(spec.train.batch_size * train_rows.shape[1] * (steps - warmup) / (time.perf_counter() - started))
    dist.destroy_process_group()


def bare_fsdp_tokens_per_s(spec, data, scale: str, steps: int, warmup: int, shard_blocks: bool = False) -> float:
    """The trial's own FSDP2 ranks as plain processes: separates FSDP2's cost from Ray's.
    `shard_blocks`: one FSDP unit per block, as on GPU, instead of the CPU's one unit."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_fsdp_worker, nprocs=spec.resources.workers_per_trial,
             args=(spec.resources.workers_per_trial, spec.model_dump(mode="json"), str(data.data_dir), scale,
                   steps, warmup, port, shard_blocks, queue))
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--compile", action="store_true", help="train.compile in the trial and the loops alike")
    args = parser.parse_args()

    from raysweep.spec.schema import load_spec
    from raysweep.data.prepare import prepare_data

    root = Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    raw = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    raw.update(name="costs", storage=str(root / "runs"))
    raw["grid"] = {"weight_decay": [1.0], "scale": [args.scale], "seed": list(SEEDS)}
    raw["train"]["steps"] = args.steps
    raw["train"]["compile"] = args.compile
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    data = prepare_data(spec.data, spec.eval, spec.sweep_dir, min_sequences=spec.train.batch_size)

    launched = time.time()
    run = subprocess.run([sys.executable, "-m", "raysweep.cli", "sweep", str(spec_path)], cwd=root,
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"the sweep failed:\n{run.stderr[-3000:]}")
    # Steady state: steps 51..249 (after warmup, before the first eval/checkpoint at 250).
    first, last = 50, min(249, args.steps - 1)
    trials = [trial_figures(spec, f"{args.scale}-wd1.0-s{seed}", first, last) for seed in SEEDS]
    trial_tps = max(t["tokens_per_s"] for t in trials)
    # Interleaved repeats, best taken: a burst of load on a shared VM then hits every kind alike.
    runs = {"bare": [], "fsdp": [], "per_block": []}
    for _ in range(REPEATS):
        runs["bare"].append(bare_loop_tokens_per_s(spec, data, args.scale, steps=last + 1, warmup=first))
        runs["fsdp"].append(bare_fsdp_tokens_per_s(spec, data, args.scale, steps=last + 1, warmup=first))
        runs["per_block"].append(bare_fsdp_tokens_per_s(spec, data, args.scale, steps=last + 1, warmup=first,
                                                        shard_blocks=True))
    bare_tps, fsdp_tps, per_block_tps = (max(runs[kind]) for kind in ("bare", "fsdp", "per_block"))

    attempt, times = trials[0]["attempt"], trials[0]["times"]
    print(f"model {args.scale}{' (compiled blocks)' if args.compile else ''}, batch {spec.train.batch_size} x seq {spec.data.seq_len}, "
          f"{spec.resources.workers_per_trial} workers x {spec.resources.cpus_per_worker} thread(s); "
          f"peak used for MFU: {attempt['peak_flops'] / 1e9:.1f} GFLOP/s ({attempt['peak_source']})")
    print(f"P4 raysweep sweep -> first trial's first step: {times[1] - launched:.1f} s")
    import_s = train_module_import_s()
    for trial in trials:
        attempt, times = trial["attempt"], trial["times"]
        entered = attempt["train_fn_entered_s"]
        print(f"P4 {trial['trial_id']}: trial driver start -> first step {times[1] - trial['driver_start']:.1f} s = "
              f"Ray's worker-group start incl. importing the train function {entered:.1f} s + raysweep's setup "
              f"{attempt['since_driver_start_s'] - entered:.1f} s + the first step {times[1] - attempt['time']:.1f} s")
    print(f"    the train function's import alone, in a fresh process that has torch and Ray Train: {import_s:.1f} s")
    for trial in trials:
        print(f"P2 {trial['trial_id']}: eval + shard writes {trial['eval_s']:.2f} s of {trial['wall_s']:.1f} s "
              f"trial wall time = {trial['eval_s'] / trial['wall_s']:.1%}; median MFU in training {trial['mfu']:.1%}")
    print("    steady-state tokens/s of every run (the best is used): trials "
          + ", ".join(f"{trial['tokens_per_s']:,.0f}" for trial in trials)
          + "".join(f"; {kind} " + ", ".join(f"{tps:,.0f}" for tps in tps_list) for kind, tps_list in runs.items()))
    print(f"    where P1 goes: the same FSDP2 ranks without Ray {fsdp_tps:,.0f} tokens/s, so FSDP2 on gloo costs "
          f"{fsdp_tps / bare_tps:.2f}x of the bare loop and Ray Train {trial_tps / fsdp_tps:.2f}x of that")
    print(f"    FSDP2 units: the whole model as one (raysweep on CPU) {fsdp_tps:,.0f} tokens/s, one per block "
          f"(as on GPU) {per_block_tps:,.0f}; ratio {fsdp_tps / per_block_tps:.2f}")
    print(f"P1 steady-state tokens/s: raysweep trial {trial_tps:,.0f}, bare PyTorch loop {bare_tps:,.0f}; "
          f"ratio {trial_tps / bare_tps:.2f}")


if __name__ == "__main__":
    main()
