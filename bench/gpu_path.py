"""The GPU training path without Ray: FSDP2 + NCCL + bf16 MixedPrecisionPolicy on one node.

Runs raysweep's own model presets, `parallelize` (activation checkpointing, torch.compile of the
blocks, FSDP2 with one unit per decoder block plus the root), fused AdamW, `train_step`, per-token
`score` and a DCP checkpoint round trip. Each variant (`--variants`) trains in turn in the same run;
it prints each one's tokens/s, peak memory and MFU against a bf16 matmul measured in the same run,
then scored rows/s. On a CPU-only machine
it runs the same code with gloo and float32 (a smoke test, not a figure; one CPU process trains the
plain module, as a single CPU worker does).

    torchrun --nproc_per_node=1 bench/gpu_path.py --scale qwen2-0.5b --seq-len 512 --batch 16

Variants: eager, compile, ac (activation checkpointing of every block), compile+ac.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from raysweep.models.build import build_config, build_model, flops_per_token
from raysweep.spec.schema import TrialTrainConfig
from raysweep.store.shards import write_token_shard
from raysweep.store.storage import location
from raysweep.train.checkpoint import load_checkpoint, save_checkpoint
from raysweep.train.evaluate import n_batches_for, rank_slice, score
from raysweep.train.optim import build_optimizer
from raysweep.train.parallel import parallelize
from raysweep.train.step import train_step
from raysweep.train.throughput import measured_matmul_flops, peak_flops

VARIANTS = {"eager": {}, "compile": {"compile": True}, "ac": {"activation_checkpointing": 1},
            "compile+ac": {"compile": True, "activation_checkpointing": 1}}


def train_variant(config, device: torch.device, batch: torch.Tensor, args, options: dict):
    """Train `args.steps` steps of one variant at a constant lr (no schedule: the step costs the same).
    Returns its figures (median step time after the warm-up, tokens/s, model TFLOP/s per device, peak
    memory), its model, optimizer and train config."""
    use_gpu = device.type == "cuda"
    cfg = TrialTrainConfig(steps=args.steps, warmup_steps=1, lr=3e-4, weight_decay=0.1, **options)
    model = build_model(config, seed=0)
    parallelize(model, device, dist.get_world_size(), cfg)
    optimizer = build_optimizer(model, cfg)
    if use_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for step in range(args.steps):
        started = time.perf_counter()
        loss = train_step(model, optimizer, batch, cfg.grad_clip)
        losses.append(loss.item())  # .item() syncs the device
        times.append(time.perf_counter() - started)
    step_s = float(np.median(times[args.warmup:]))
    tokens_per_s = batch.numel() * dist.get_world_size() / step_s
    figures = {"losses": losses, "first_step_s": times[0], "step_s": step_s, "tokens_per_s": tokens_per_s,
               "tflops": tokens_per_s * flops_per_token(config, args.seq_len) / 1e12 / dist.get_world_size(),
               "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if use_gpu else float("nan")}
    return figures, model, optimizer, cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="qwen2-0.5b")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16, help="sequences per rank per step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--eval-sequences", type=int, default=256)
    parser.add_argument("--variants", default="eager,compile,compile+ac",
                        help=f"comma-separated, trained in turn: {', '.join(VARIANTS)}")
    args = parser.parse_args()

    use_gpu = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)

    config = build_config(args.scale, args.vocab)
    rng = np.random.default_rng(rank)
    batch = torch.from_numpy(rng.integers(0, args.vocab, (args.batch, args.seq_len))).to(device)
    names = args.variants.split(",")
    if unknown := [name for name in names if name not in VARIANTS]:
        parser.error(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    results = {}
    for name in names:
        model = optimizer = None  # free the previous variant's before building the next
        # only the last variant's model is kept, for the eval and checkpoint checks
        results[name], model, optimizer, cfg = train_variant(config, device, batch, args, VARIANTS[name])

    eval_set = rng.integers(0, args.vocab, (args.eval_sequences, args.seq_len)).astype(np.int64)
    rows = rank_slice(len(eval_set), rank, world)
    n_batches = n_batches_for(len(eval_set), world, 16)
    score(model, eval_set, rows[:16], 16, 1, device)  # warm: a compiled model compiles its eval graph here
    started = time.perf_counter()
    table = score(model, eval_set, rows, 16, n_batches, device)
    if use_gpu:
        torch.cuda.synchronize()
    rows_per_s = table.num_rows / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as directory:
        shared = [directory]
        dist.broadcast_object_list(shared, src=0)  # every rank checkpoints into rank 0's directory
        directory = shared[0]
        started = time.perf_counter()
        write_token_shard(table, location(directory) / f"part-{rank}.parquet")
        shard_rows_per_s = table.num_rows / (time.perf_counter() - started)
        save_checkpoint(model, optimizer, args.steps, Path(directory), rank)
        before = score(model, eval_set, rows, 16, n_batches, device)["loss"].to_numpy()
        reloaded = build_model(config, seed=1)
        parallelize(reloaded, device, world, cfg)
        reloaded_opt = build_optimizer(reloaded, cfg)
        step = load_checkpoint(reloaded, reloaded_opt, Path(directory))
        after = score(reloaded, eval_set, rows, 16, n_batches, device)["loss"].to_numpy()
        dist.barrier()  # rank 0 removes the directory on leaving

    if rank == 0:
        print(f"device: {torch.cuda.get_device_name(device) if use_gpu else 'cpu'}  world: {world}  "
              f"scale: {args.scale}  vocab: {args.vocab}  seq_len: {args.seq_len}  batch/rank: {args.batch}")
        peak = measured_matmul_flops(device, torch.bfloat16, 8192, 10) / 1e12 if use_gpu else float("nan")
        print(f"{'variant':<12}{'first step s':>13}{'step ms':>10}{'tokens/s':>12}{'TFLOP/s':>9}"
              f"{'peak GiB':>10}{'MFU':>8}{'loss first->last':>20}")
        for name, r in results.items():
            print(f"{name:<12}{r['first_step_s']:>13.1f}{r['step_s'] * 1e3:>10.1f}{r['tokens_per_s']:>12,.0f}"
                  f"{r['tflops']:>9.1f}{r['peak_gib']:>10.1f}{r['tflops'] / peak:>8.1%}"
                  f"{r['losses'][0]:>10.4f}->{r['losses'][-1]:.4f}")
        print(f"eval: scored rows/s {rows_per_s:,.0f}, token-shard rows written/s {shard_rows_per_s:,.0f} "
              f"({table.num_rows:,} rows)")
        print(f"checkpoint round trip: step {step}, max |loss diff| {np.abs(before - after).max():.3g}")
        if use_gpu:
            best = max(results, key=lambda name: results[name]["tflops"])
            datasheet, source = peak_flops(device)
            print(f"bf16 8192^3 matmul measured: {peak:.0f} TFLOP/s; {source}: {datasheet / 1e12:.0f} TFLOP/s")
            print(f"MFU of the best variant ({best}): {results[best]['tflops'] * 1e12 / datasheet:.1%} of {source}, "
                  f"{results[best]['tflops'] / peak:.1%} of the measured matmul")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
