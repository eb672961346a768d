"""Models built on the meta device, then materialized and initialized unit by unit, shard by shard.

A trial's model is created on the meta device (no memory), sharded there by FSDP2, and only then given
storage: each rank allocates its own shards (`to_empty`). Its values come unit by unit: each decoder block,
and each module outside the blocks that holds parameters or buffers, is built full size on the CPU alone,
initialized by transformers' own `_init_weights` from a seed derived from (seed, unit name), and the rows
this rank holds are copied in. An embedding or head larger than `ROW_BLOCK_BYTES` is built in blocks of
rows of a fixed count, each from its own seed, and a rank builds only the blocks its shard overlaps.

So a rank's peak memory is its shards plus one block (never the whole model), and every value is a function
of (seed, name, row block), not of the world size: 2 ranks and 1 process build the same parameters
(tests/unit/test_fsdp.py). FSDP2 shards each parameter's rows (dim 0) in `torch.chunk`'s pieces.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch.distributed.tensor import DTensor, Shard
from transformers import AutoModelForCausalLM, PretrainedConfig

# A matrix outside the blocks larger than this is built in blocks of rows (qwen2-1.5b's embedding: 0.93 GB).
ROW_BLOCK_BYTES = 16 * 2**20


def meta_model(config: PretrainedConfig) -> torch.nn.Module:
    """The config's causal LM, float32, on the meta device: its architecture without storage."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)


def unit_seed(seed: int, name: str, block: int = 0) -> int:
    digest = hashlib.blake2b(f"{seed}/{name}/{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def materialize(model: torch.nn.Module, template: torch.nn.Module, seed: int, device: torch.device) -> None:
    """Give `model` (on the meta device, sharded or not) storage on `device` and its initial values.

    `template`: an unsharded meta copy of the model taken before sharding (`copy.deepcopy`), from which each
    unit is built full size."""
    from raysweep.models.build import decoder_blocks

    tied = _tied_parameters(model)
    model.to_empty(device=device)  # under FSDP2: this rank's shards only
    _retie(model, tied)
    targets = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    init = template._init_weights  # the architecture's own init, any architecture
    blocks = {id(b) for b in decoder_blocks(template)}
    done: set[int] = set()  # parameters already written (a tied head is its embedding)
    # Blocks first, the rest (embeddings, head, final norm) after: a page of a shard is resident once written,
    # so a block's full-size copy never coexists with the embedding's rows, the largest shard of all.
    units = [(name, m) for name, m in template.named_modules() if id(m) in blocks]
    units += [(name, m) for name, m in template.named_modules()
              if id(m) not in blocks and not _inside(name, template, blocks) and _holds_state(m)]
    for name, module in units:
        if id(module) in blocks:
            _materialize_unit(module, name, seed, init, targets, done)
        elif _rows_apart(module):
            _materialize_rows(module, name, seed, init, targets, done)
        else:
            _materialize_unit(module, name, seed, init, targets, done, recurse=False)
    unwritten = [name for name, tensor in targets.items() if id(tensor) not in done]
    if unwritten:  # storage from to_empty holds whatever was in memory: never train on it
        raise ValueError(f"model: no unit initialized {unwritten[0]} (of {len(unwritten)}); it lives outside the "
                         "decoder blocks and every module that holds state")


def _rows_apart(module: torch.nn.Module) -> bool:
    """A plain embedding or linear layer (not a subclass, which may add state or init of its own) holding
    only its weight and bias, larger than ROW_BLOCK_BYTES: built in blocks of rows."""
    state = [name for name, _ in module.named_parameters(recurse=False)] + \
            [name for name, _ in module.named_buffers(recurse=False)]
    return type(module) in (torch.nn.Embedding, torch.nn.Linear) and set(state) <= {"weight", "bias"} \
        and module.weight.numel() * 4 > ROW_BLOCK_BYTES


def _tied_parameters(model: torch.nn.Module) -> list[list[tuple[torch.nn.Module, str]]]:
    """Each parameter held by more than one module (a head tied to its embedding), as (module, attr) places."""
    places: dict[int, list] = {}
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            places.setdefault(id(param), []).append((module, attr))
    return [p for p in places.values() if len(p) > 1]


def _retie(model: torch.nn.Module, tied: list) -> None:
    """`to_empty` gives each place of a shared parameter its own storage: share the first one again."""
    for (first, first_attr), *others in tied:
        for module, attr in others:
            setattr(module, attr, getattr(first, first_attr))


def _inside(name: str, root: torch.nn.Module, blocks: set[int]) -> bool:
    """Whether the module called `name` is a decoder block's submodule."""
    parts = name.split(".") if name else []
    return any(id(root.get_submodule(".".join(parts[:i]))) in blocks for i in range(1, len(parts)))


def _holds_state(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def _materialize_unit(unit: torch.nn.Module, name: str, seed: int, init, targets: dict, done: set,
                      recurse: bool = True) -> None:
    """Build `unit` full size on the CPU, init it (children before parents, as transformers does), copy it in."""
    unit.to_empty(device="cpu", recurse=recurse)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(unit_seed(seed, name))
        for module in reversed(list(unit.modules()) if recurse else [unit]):
            init(module)
        prefix = f"{name}." if name else ""
        state = list(unit.named_parameters(recurse=recurse)) + list(unit.named_buffers(recurse=recurse))
        for key, value in state:
            _copy_rows(targets[prefix + key], value, 0, done)
    unit.to_empty(device="meta", recurse=recurse)  # free it: the template stays a meta twin


def _materialize_rows(module: torch.nn.Module, name: str, seed: int, init, targets: dict, done: set) -> None:
    """An embedding or head in blocks of rows, each built and initialized alone from its own seed; only the
    blocks that overlap this rank's shard are built."""
    weight = targets[f"{name}.weight"]
    if id(weight) in done:
        return
    n_rows, row_elems = module.weight.shape[0], module.weight[0].numel()
    rows_per_block = max(1, ROW_BLOCK_BYTES // (4 * row_elems))
    start, local = _local_rows(weight, n_rows)
    for block in range(start // rows_per_block, math.ceil((start + len(local)) / rows_per_block)):
        lo, hi = block * rows_per_block, min((block + 1) * rows_per_block, n_rows)
        piece = _row_block(module, lo, hi)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(unit_seed(seed, name, block))
            init(piece)
            for key, value in piece.named_parameters():
                _copy_rows(targets[f"{name}.{key}"], value, lo, set(), n_rows)
    done.add(id(weight))
    if getattr(module, "bias", None) is not None:
        done.add(id(targets[f"{name}.bias"]))


def _row_block(module: torch.nn.Module, lo: int, hi: int) -> torch.nn.Module:
    """Rows lo:hi of an embedding (token ids) or a linear layer (output features), as a module of that kind."""
    with torch.device("meta"):
        if isinstance(module, torch.nn.Embedding):
            padding = module.padding_idx - lo if module.padding_idx is not None and lo <= module.padding_idx < hi \
                else None
            piece = torch.nn.Embedding(hi - lo, module.embedding_dim, padding_idx=padding)
        else:
            piece = torch.nn.Linear(module.in_features, hi - lo, bias=module.bias is not None)
    return piece.to_empty(device="cpu")


def _local_rows(target: torch.Tensor, n_rows: int) -> tuple[int, torch.Tensor]:
    """(first global row, local tensor) of this rank's piece of `target`: FSDP2's Shard(0) of torch.chunk's
    pieces, or the whole tensor when it is not sharded."""
    if not isinstance(target, DTensor):
        return 0, target
    if tuple(target.placements) != (Shard(0),):
        raise ValueError(f"model: a parameter is sharded as {target.placements}, not on its rows (Shard(0))")
    mesh = target.device_mesh
    chunk = math.ceil(n_rows / mesh.size())
    start = min(mesh.get_local_rank() * chunk, n_rows)
    return start, target.to_local()


def _copy_rows(target: torch.Tensor, value: torch.Tensor, first_row: int, done: set, n_rows: int | None = None) -> None:
    """Copy the rows of `value` (global rows first_row:...) that this rank holds into `target`."""
    if id(target) in done:
        return
    done.add(id(target))
    if value.dim() == 0:
        (target.to_local() if isinstance(target, DTensor) else target).copy_(value)
        return
    start, local = _local_rows(target, n_rows if n_rows is not None else value.shape[0])
    lo, hi = max(start, first_row), min(start + len(local), first_row + len(value))
    if lo < hi:
        local[lo - start:hi - start].copy_(value[lo - first_row:hi - first_row])
