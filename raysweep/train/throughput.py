"""Model FLOPs utilization: the peak a worker's device can reach, measured where it runs.

MFU = (model FLOPs per token x tokens/s) / peak FLOP/s (PaLM, Chowdhery et al. 2022, App. B).
GPUs with a known datasheet dense bf16 peak use it, as papers do; anything else (CPUs, unknown
GPUs) uses a large matmul measured on the worker at start, in the dtype training runs in.
"""

from __future__ import annotations

import time

import torch

from raysweep.train.devices import GPUS

# Dense bf16 peaks by the exact name torch reports (raysweep.train.devices); any other device is measured.
DATASHEET_BF16_PEAK = {name: gpu.bf16_peak_flops for gpu in GPUS.values() for name in gpu.device_names}


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """FLOP/s of an n x n x n matmul on `device`, warm, in `dtype`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s of one worker's device, where the figure comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if name in DATASHEET_BF16_PEAK:
            return DATASHEET_BF16_PEAK[name], f"datasheet bf16 ({name})"
        return measured_matmul_flops(device, torch.bfloat16, 8192, 10), f"measured bf16 matmul ({name})"
    # CPU: about 0.1 s with the worker's threads; training runs in float32 there.
    return measured_matmul_flops(device, torch.float32, 768, 8), "measured fp32 matmul (CPU)"
