"""How a model runs on its workers: activation checkpointing, torch.compile of the blocks, FSDP2 over a
1-D data-parallel mesh."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard

from raysweep.config import TrainConfig
from raysweep.train.collectives import all_reduce_sum_, gloo_collectives


def parallelize(model: torch.nn.Module, mesh: DeviceMesh, use_gpu: bool, cfg: TrainConfig,
                shard_blocks: bool | None = None) -> dict:
    """The spec's activation checkpointing, then compile, then FSDP2 (`apply_fsdp`), in place:
    torchtitan's order, so each decoder block is checkpointed and compiled whole and then sharded.
    Returns how many blocks ended up checkpointed and compiled, for the trial's attempts log."""
    if cfg.activation_checkpointing:
        # transformers' own wrapper: parameter names stay unchanged (decay groups, checkpoints), and
        # FSDP2 skips its forward hooks while the backward recomputes.
        model.activation_checkpointing_enable(every_n_layers=cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model, use_gpu)
    apply_fsdp(model, mesh, use_gpu, shard_blocks)
    blocks = model.model.layers
    return {"checkpointed_blocks": sum(bool(getattr(block, "gradient_checkpointing", False)) for block in blocks),
            "compiled_blocks": sum(block._compiled_call_impl is not None for block in blocks)}


def apply_compile(model: torch.nn.Module, use_gpu: bool) -> None:
    """torch.compile each decoder block in place: the module and its parameter names stay as they are,
    and the blocks' shared code compiles once."""
    if not use_gpu:
        _require_cpp_compiler()
    for block in model.model.layers:
        block.compile()


def _require_cpp_compiler() -> None:
    """Inductor compiles CPU kernels with a C++ compiler; without one the first step fails deep inside
    torch, so say it here."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise RuntimeError("train.compile: torch.compile on CPU needs a C++ compiler (g++ or clang++) on "
                           "every worker node; install one, or set train.compile: false") from None


def apply_fsdp(model: torch.nn.Module, mesh: DeviceMesh, use_gpu: bool,
               shard_blocks: bool | None = None) -> None:
    """FSDP2: shard each decoder block (if `shard_blocks`), then the root (embeddings, final norm, head).
    Over gloo, every unit gathers and reduces with `raysweep.train.collectives` instead of gloo's own.

    Args:
        model: a transformers causal LM whose blocks live in `model.model.layers`.
        mesh: 1-D data-parallel mesh. Built explicitly so a GPU machine running a CPU trial does
            not move the model to CUDA.
        use_gpu: bf16 params and float32 gradient reduction on GPU; CPU stays float32 because
            bf16 matmuls are slow there and the CPU runs are the exactness reference.
        shard_blocks: one FSDP unit per block, so only one block's parameters are gathered at a time:
            what bounds memory for the large presets. Default: on GPU only. On CPU the whole model is
            one unit: CPU-sized models are small, and every unit adds an all-gather, a
            reduce-scatter and FSDP2's hooks around them to each step, which cost a small step more
            than they overlap (`bench/trial_costs.py` measures both: 1.17x for one unit).
    """
    mp_policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                 if use_gpu else MixedPrecisionPolicy())
    if shard_blocks is None:
        shard_blocks = use_gpu
    units = list(model.model.layers) if shard_blocks else []
    for block in units:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
    if dist.get_backend(mesh.get_group()) == "gloo":
        all_gather, reduce_scatter = gloo_collectives(mesh.get_group())
        for unit in [*units, model]:
            unit.set_custom_all_gather(all_gather)
            unit.set_custom_reduce_scatter(reduce_scatter)


def clip_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (L2), with one scalar all-reduce for FSDP2's sharded gradients.

    Each rank's gradient shards are disjoint (Shard(0) on a 1-D mesh), so the global squared norm is
    the sum of the local ones. Torch's own clip reaches the same norm through DTensor dispatch per
    tensor: 3.2-3.8 ms a step against 1.9-2.1 for the tiny preset on 2 gloo ranks
    (bench/fsdp_step.py). Any other layout goes to torch's clip. Returns the total norm before
    clipping.
    """
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    sharded = [g for g in grads if isinstance(g, DTensor)]
    if not sharded or len(sharded) < len(grads) or any(
            g.device_mesh.ndim != 1 or g.placements != (Shard(0),) for g in sharded):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    local = [g.to_local() for g in sharded]
    squared = torch.nn.utils.get_total_norm(local) ** 2
    all_reduce_sum_(squared, sharded[0].device_mesh.get_group())
    total = squared.sqrt()
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # torch's own epsilon and clamp
    for grad in local:
        grad.mul_(scale)
    return total
