"""How a model is parallelised: FSDP2 over a 1-D data-parallel mesh."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def apply_fsdp(model: torch.nn.Module, mesh: DeviceMesh, use_gpu: bool,
               shard_blocks: bool | None = None) -> None:
    """FSDP2: shard each decoder block (if `shard_blocks`), then the root (embeddings, final norm, head).

    Args:
        model: a transformers causal LM whose blocks live in `model.model.layers`.
        mesh: 1-D data-parallel mesh. Built explicitly so a GPU machine running a CPU trial does
            not move the model to CUDA.
        use_gpu: bf16 params and float32 gradient reduction on GPU; CPU stays float32 because
            bf16 matmuls are slow there and the CPU runs are the exactness reference.
        shard_blocks: one FSDP unit per block, so only one block's parameters are gathered at a time:
            what bounds memory for the large presets. Default: on GPU only. On CPU the whole model is
            one unit: CPU-sized models are small, and every unit adds an all-gather and a
            reduce-scatter per step whose gloo latency dominates a small step
            (`bench/trial_costs.py` measures both).
    """
    mp_policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                 if use_gpu else MixedPrecisionPolicy())
    if shard_blocks is None:
        shard_blocks = use_gpu
    if shard_blocks:
        for block in model.model.layers:
            fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
