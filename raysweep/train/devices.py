"""The GPUs raysweep knows by datasheet: memory and dense bf16 peak. Plain data, no torch: the spec
names one in `cost.gpu` and is validated without importing torch (raysweep.train.throughput reads the
peaks by the names torch reports, raysweep.ops.plan the memory and peak by the spec's name)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    memory_gib: float
    """What one GPU holds as torch reports it (`total_memory`), GiB: a little under the datasheet's GB."""
    bf16_peak_flops: float
    """Dense (no sparsity) bf16 tensor-core peak from the vendor's datasheet, FLOP/s."""
    device_names: tuple[str, ...]
    """The names `torch.cuda.get_device_name` reports for it."""


GPUS: dict[str, Gpu] = {
    "H100-80GB": Gpu(79.1, 989e12, ("NVIDIA H100 80GB HBM3",)),
    "H100-PCIe-80GB": Gpu(79.1, 756e12, ("NVIDIA H100 PCIe",)),
    "H100-NVL-94GB": Gpu(93.1, 835e12, ("NVIDIA H100 NVL",)),
    "H200-141GB": Gpu(139.8, 989e12, ("NVIDIA H200",)),
    "A100-80GB": Gpu(79.2, 312e12, ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe")),
    "A100-40GB": Gpu(39.4, 312e12, ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB")),
    "L40S-48GB": Gpu(44.4, 362e12, ("NVIDIA L40S",)),
}
