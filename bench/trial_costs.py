"""What a raysweep trial costs beyond the training itself, on this machine, measured side by side:

  P1  steady-state tokens/s of a one-worker CPU raysweep trial (Ray Train, the plain module, 1 thread)
      against a bare single-process PyTorch loop at the same thread count, same model, batch and data.
      Goal >= 0.90. With --workers 2 the trial is FSDP2 over 2 gloo ranks, and the same ranks run
      without Ray too.
  P2  per-token eval + shard writes as a share of the trial's wall time at the demo's cadence.  Goal <= 5%.
  P4  seconds from the trial driver's start, and from `raysweep sweep`, to the first training step.  Goal <= 10 s.
  Demo  wall time of `raysweep sweep examples/demo.yaml` (fresh storage) at this commit and at --before
      (default: the last commit before the redesign), installed from a git checkout in a temp dir,
      run one after the other.

    python bench/trial_costs.py [--scale tiny] [--steps 500] [--workers 1] [--compile] [--before REV | --no-demo]

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
BEFORE_REDESIGN = "dbe0796"  # the last commit before the redesign (issue 22)
REPEATS = 3  # runs of each loop without Ray


def trial_figures(spec, trial_id: str, first: int, last: int) -> dict:
    """A finished trial's steady-state tokens/s, startup record, eval time and wall time."""
    layout = spec.layout
    attempt = json.loads(layout.attempts_file(trial_id).read_text().splitlines()[0])
    with duckdb.connect(str(layout.catalog_file), read_only=True) as con:
        steps = con.execute("SELECT step, time, mfu FROM train_curves() WHERE trial_id = ? ORDER BY step",
                            [trial_id]).fetchnumpy()
    results = [json.loads(line) for line in
               next(layout.tune_dir.glob(f"{trial_id}*/result.json")).read_text().splitlines()]
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


def trial_train_config(spec, scale: str):
    """The train settings of the bench's trials (lambda 1.0, seed 0), as their workers build them."""
    from raysweep.trials.point import TrialPoint

    return TrialPoint(weight_decay=1.0, scale=scale, seed=0).train_config(spec.train)


def bare_loop_tokens_per_s(spec, data, scale: str, steps: int, warmup: int) -> float:
    """The same model, optimizer, lr schedule and batches in one process, no Ray, no FSDP
    (`parallelize` with one CPU worker: the plain module, compiled blocks with train.compile)."""
    from raysweep.data.prepare import open_array
    from raysweep.models.build import build_config, build_model
    from raysweep.train.loop import batch_rows
    from raysweep.train.optim import build_lr_schedule, build_optimizer
    from raysweep.train.parallel import parallelize
    from raysweep.train.step import train_step

    torch.set_num_threads(spec.resources.workers_per_trial * spec.resources.cpus_per_worker)
    cfg = trial_train_config(spec, scale)
    model = build_model(build_config(scale, data.vocab_size, spec.model, spec.model.dropout,
                                     data.eos_id), seed=0)
    parallelize(model, torch.device("cpu"), 1, cfg)
    optimizer = build_optimizer(model, cfg)
    schedule = build_lr_schedule(optimizer, cfg)
    train_rows = open_array(data.data_dir, "train")
    tokens_per_step = spec.train.batch_size * train_rows.shape[1]
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        rows = np.sort(batch_rows(step, 0, len(train_rows), spec.train.batch_size))
        input_ids = torch.from_numpy(train_rows[rows].astype(np.int64))
        train_step(model, optimizer, input_ids, cfg.grad_clip, cfg.label_smoothing)
        schedule.step()
    return tokens_per_step * (steps - warmup) / (time.perf_counter() - started)


def _fsdp_worker(rank: int, world: int, spec_dict: dict, data_dir: str, scale: str, steps: int,
                 warmup: int, port: int, queue) -> None:
    """One rank of raysweep's FSDP2 setup (parallelize, gloo, 1 thread) without Ray."""
    import os

    import torch.distributed as dist

    from raysweep.data.prepare import PreparedData, open_array
    from raysweep.models.build import build_config, build_model
    from raysweep.spec.schema import SweepSpec
    from raysweep.train.loop import batch_rows
    from raysweep.train.optim import build_lr_schedule, build_optimizer
    from raysweep.train.parallel import parallelize
    from raysweep.train.step import train_step

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    spec, data = SweepSpec.model_validate(spec_dict), PreparedData.load(Path(data_dir))
    torch.set_num_threads(spec.resources.cpus_per_worker)
    cfg = trial_train_config(spec, scale)
    model = build_model(build_config(scale, data.vocab_size, spec.model, spec.model.dropout,
                                     data.eos_id), seed=0)
    parallelize(model, torch.device("cpu"), world, cfg)
    optimizer = build_optimizer(model, cfg)
    schedule = build_lr_schedule(optimizer, cfg)
    train_rows = open_array(data.data_dir, "train")
    per_rank = spec.train.batch_size // world
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        rows = batch_rows(step, 0, len(train_rows), spec.train.batch_size)[rank * per_rank:(rank + 1) * per_rank]
        input_ids = torch.from_numpy(train_rows[np.sort(rows)].astype(np.int64))
        train_step(model, optimizer, input_ids, cfg.grad_clip, cfg.label_smoothing)
        schedule.step()
    if rank == 0:
        queue.put(spec.train.batch_size * train_rows.shape[1] * (steps - warmup) / (time.perf_counter() - started))
    dist.destroy_process_group()


def bare_fsdp_tokens_per_s(spec, data, scale: str, steps: int, warmup: int) -> float:
    """The trial's own FSDP2 ranks (gloo, one FSDP unit per block plus the root) as plain processes,
    no Ray: separates FSDP2's cost from Ray's."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    workers = spec.resources.workers_per_trial
    mp.spawn(_fsdp_worker, nprocs=workers,
             args=(workers, spec.model_dump(mode="json"), str(data.data_dir), scale, steps, warmup, port, queue))
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1,
                        help="workers per trial (1 thread each); 1 trains the plain module, no FSDP2")
    parser.add_argument("--before", default=BEFORE_REDESIGN, help="the commit whose demo wall time to compare")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo wall-time comparison")
    parser.add_argument("--compile", action="store_true", help="train.compile in the trial and the loops alike")
    args = parser.parse_args()

    from raysweep.data.prepare import prepare_data
    from raysweep.spec.load import load_spec

    root = Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    raw = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    raw.update(name="costs", storage=str(root / "runs"))
    raw["grid"] = {"weight_decay": [1.0], "scale": [args.scale], "seed": list(SEEDS)}
    raw["train"]["steps"] = args.steps
    raw["train"]["compile"] = args.compile
    # One trial at a time: P1 compares a trial with the bare loop alone on the machine, as each is run.
    raw["resources"] = {**raw.get("resources", {}), "workers_per_trial": args.workers, "cpus_per_worker": 1,
                        "max_concurrent_trials": 1}
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    spec.layout.root.mkdir(parents=True, exist_ok=True)  # prepare_data looks for sibling sweeps beside it
    data = prepare_data(spec.data, spec.eval, spec.layout, min_sequences=spec.train.batch_size)

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
    runs = {"bare": [], "fsdp": []} if args.workers > 1 else {"bare": []}
    for _ in range(REPEATS):
        runs["bare"].append(bare_loop_tokens_per_s(spec, data, args.scale, steps=last + 1, warmup=first))
        if args.workers > 1:
            runs["fsdp"].append(bare_fsdp_tokens_per_s(spec, data, args.scale, steps=last + 1, warmup=first))
    bare_tps = max(runs["bare"])

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
    if args.workers > 1:
        fsdp_tps = max(runs["fsdp"])
        print(f"    where P1 goes: the same FSDP2 ranks without Ray {fsdp_tps:,.0f} tokens/s, so FSDP2 on gloo costs "
              f"{fsdp_tps / bare_tps:.2f}x of the bare loop and Ray Train {trial_tps / fsdp_tps:.2f}x of that")
    print(f"P1 steady-state tokens/s: raysweep trial {trial_tps:,.0f}, bare PyTorch loop {bare_tps:,.0f} "
          f"({spec.resources.workers_per_trial * spec.resources.cpus_per_worker} thread(s)); "
          f"ratio {trial_tps / bare_tps:.2f}")
    if not args.no_demo:
        demo_wall_times(args.before)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _demo_wall_s(pythonpath: str | None, root: Path) -> float:
    """`raysweep sweep examples/demo.yaml` of the code on `pythonpath` (None: this checkout) into fresh storage."""
    import os

    env = {**os.environ, "RAYSWEEP_STORAGE": str(root / "runs")}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath  # ahead of the editable install of this checkout
    spec = root / "demo.yaml"
    raw = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    raw.pop("storage", None)
    spec.write_text(yaml.safe_dump(raw))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "raysweep.cli", "sweep", str(spec)], cwd=root, env=env,
                   capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def demo_wall_times(before: str) -> None:
    """The demo's wall time at this commit and at `before`, the latter installed (no deps: the same
    libraries) from a checkout into a temp dir."""
    this = _git("rev-parse", "--short", "HEAD")
    with tempfile.TemporaryDirectory(prefix="raysweep-before-") as tmp:
        checkout, installed = Path(tmp) / "src", Path(tmp) / "site"
        subprocess.run(["git", "worktree", "add", "--detach", str(checkout), before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(installed),
                            str(checkout)], check=True, capture_output=True)
            old_s = _demo_wall_s(str(installed), Path(tempfile.mkdtemp(prefix="demo-before-", dir=tmp)))
            new_s = _demo_wall_s(None, Path(tempfile.mkdtemp(prefix="demo-this-", dir=tmp)))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=REPO, capture_output=True)
    print(f"Demo sweep wall time: {this} {new_s:.0f} s, {before} (before the redesign) {old_s:.0f} s; "
          f"ratio {old_s / new_s:.2f}x")


if __name__ == "__main__":
    main()
