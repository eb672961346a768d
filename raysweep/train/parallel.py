"""How a model runs on its workers: activation checkpointing, torch.compile of the blocks, then FSDP2
over a 1-D data-parallel mesh (torchtitan's order, so each block is checkpointed and compiled whole
and then sharded)."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from raysweep.models.build import decoder_blocks
from raysweep.spec.schema import TrainConfig


def worker_device(use_gpu: bool) -> torch.device:
    """The device of this Ray Train worker: the GPU Ray assigned it, or the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")


def parallelize(model: torch.nn.Module, device: torch.device, world_size: int, cfg: TrainConfig) -> dict:
    """The spec's activation checkpointing, then compile, then FSDP2 (`apply_fsdp`), in place.

    A single CPU worker trains the plain module: with nothing to shard, FSDP2's hooks and copies only
    cost time. A GPU worker is always wrapped, alone too: FSDP2's MixedPrecisionPolicy is what gives it
    bf16 compute with float32 master weights. Returns how many blocks ended up checkpointed and
    compiled, for the trial's attempts log."""
    blocks = decoder_blocks(model)  # before FSDP2 renames their classes
    if cfg.activation_checkpointing:
        # transformers' own wrapper: parameter names stay unchanged (decay groups, checkpoints), and
        # FSDP2 skips its forward hooks while the backward recomputes.
        model.activation_checkpointing_enable(every_n_layers=cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(blocks, device)
    if world_size > 1 or device.type == "cuda":
        apply_fsdp(model, blocks, init_device_mesh(device.type, (world_size,)))
    return {"checkpointed_blocks": sum(bool(getattr(block, "gradient_checkpointing", False)) for block in blocks),
            "compiled_blocks": sum(block._compiled_call_impl is not None for block in blocks)}


def apply_compile(blocks: list[torch.nn.Module], device: torch.device) -> None:
    """torch.compile each decoder block in place: the module and its parameter names stay as they are,
    and the blocks' shared code compiles once."""
    if device.type == "cpu":
        _require_cpp_compiler()
    for block in blocks:
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


def apply_fsdp(model: torch.nn.Module, blocks: list[torch.nn.Module], mesh) -> None:
    """FSDP2: shard each decoder block, then the root (embeddings, final norm, head).

    Args:
        model: a transformers causal LM.
        blocks: its decoder blocks (`decoder_blocks`).
        mesh: 1-D data-parallel mesh, built explicitly so a GPU machine running a CPU trial does not
            move the model to CUDA. One unit per block: only one block's parameters are gathered at
            a time, which bounds memory for the large presets.
    The policy: bf16 params and float32 gradient reduction on GPU; CPU stays float32 because bf16
    matmuls are slow there and the CPU runs are the exactness reference.
    """
    mp_policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                 if mesh.device_type == "cuda" else MixedPrecisionPolicy())
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
