"""The GPU training path without Ray: FSDP2 + NCCL + bf16 MixedPrecisionPolicy on one node.

Runs raysweep's own model presets, `apply_fsdp`, optimizer, per-token `score` and DCP
checkpoint round trip, and prints tokens/s, MFU against a bf16 matmul measured in the same run,
and scored rows/s. On a CPU-only machine it runs the same code with gloo and float32.

    torchrun --nproc_per_node=1 bench/gpu_path.py --scale qwen2-0.5b --seq-len 512 --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from raysweep.config import TrainConfig
from raysweep.evaluate import n_batches_for, rank_slice, score
from raysweep.model import build_config, build_model, flops_per_token
from raysweep.train.checkpoint import load_checkpoint, save_checkpoint
from raysweep.train.optim import build_optimizer
from raysweep.train.parallel import apply_fsdp
from raysweep.train.throughput import measured_matmul_flops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="qwen2-0.5b")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16, help="sequences per rank per step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    use_gpu = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (world,))

    config = build_config(args.scale, args.vocab)
    model = build_model(config, seed=0)
    apply_fsdp(model, mesh, use_gpu)
    optimizer = build_optimizer(model, 0.1, TrainConfig(steps=args.steps, warmup_steps=1, lr=3e-4))
    rng = np.random.default_rng(rank)
    batch = torch.from_numpy(rng.integers(0, args.vocab, (args.batch, args.seq_len))).to(device)

    losses, times = [], []
    for step in range(args.steps):
        if use_gpu:
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # .item() syncs the device
        times.append(time.perf_counter() - started)
    step_s = float(np.median(times[args.warmup:]))
    tokens_per_s = args.batch * args.seq_len * world / step_s
    achieved_tflops = tokens_per_s * flops_per_token(config, args.seq_len) / 1e12 / world

    eval_set = rng.integers(0, args.vocab, (64, args.seq_len)).astype(np.int64)
    rows = rank_slice(len(eval_set), rank, world)
    n_batches = n_batches_for(len(eval_set), world, 16)
    started = time.perf_counter()
    table = score(model, eval_set, rows, 16, n_batches, device)
    if use_gpu:
        torch.cuda.synchronize()
    rows_per_s = table.num_rows / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(model, optimizer, args.steps, Path(directory), rank)
        before = score(model, eval_set, rows, 16, n_batches, device)["loss"].to_numpy()
        reloaded = build_model(config, seed=1)
        apply_fsdp(reloaded, mesh, use_gpu)
        reloaded_opt = build_optimizer(reloaded, 0.1, TrainConfig(steps=args.steps, warmup_steps=1))
        step = load_checkpoint(reloaded, reloaded_opt, Path(directory))
        after = score(reloaded, eval_set, rows, 16, n_batches, device)["loss"].to_numpy()

    if rank == 0:
        print(f"device: {torch.cuda.get_device_name(device) if use_gpu else 'cpu'}  world: {world}  "
              f"scale: {args.scale}  vocab: {args.vocab}  seq_len: {args.seq_len}  batch/rank: {args.batch}")
        print(f"loss: first {losses[0]:.4f}  last {losses[-1]:.4f}")
        print(f"train: step {step_s * 1e3:.1f} ms  tokens/s {tokens_per_s:,.0f}  "
              f"model TFLOP/s per GPU {achieved_tflops:.1f}")
        print(f"eval: scored rows/s {rows_per_s:,.0f}")
        print(f"checkpoint round trip: step {step}, max |loss diff| {np.abs(before - after).max():.3g}")
        if use_gpu:
            peak = measured_matmul_flops(device, torch.bfloat16, 8192, 10) / 1e12
            print(f"bf16 8192^3 matmul measured: {peak:.0f} TFLOP/s")
            print(f"MFU vs measured matmul: {achieved_tflops / peak:.1%}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
