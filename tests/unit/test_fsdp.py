"""FSDP2 on 2 gloo ranks trains the same model as one process: parallelize's wrappings (one unit, one
per block, with activation checkpointing and torch.compile), the sharded gradient clip and AdamW,
checked parameter by parameter (no Ray: the component here is the sharding); and the collectives it runs
through on gloo (shared memory, pairwise) against their definitions."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from raysweep.spec.schema import TrainConfig
from raysweep.models.build import build_config, build_model
from raysweep.train.step import train_step
from raysweep.train.optim import build_optimizer
from raysweep.train.parallel import clip_grad_norm_, parallelize

VOCAB = 67  # odd: the embedding rows do not split evenly over 2 ranks
CLIPS = (0.05, 1e3, 0.05)  # well under the gradient norm, then far over it: clipped, unclipped, clipped
STEPS = len(CLIPS)
CFG = TrainConfig(lr=0.01)
# name -> (one FSDP unit per block, the spec's train options for parallelize)
SETUPS = {
    "one-unit": (False, CFG),
    "unit-per-block": (True, CFG),
    "per-block-checkpointed": (True, CFG.model_copy(update={"activation_checkpointing": 1})),
    "one-unit-compiled": (False, CFG.model_copy(update={"compile": True})),
}


def _batches() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, (STEPS, 4, 16)))


def _model() -> torch.nn.Module:
    return build_model(build_config("nano", vocab_size=VOCAB), seed=0)


def _first_grad_norm(model, batch) -> torch.Tensor:
    model(input_ids=batch, labels=batch).loss.backward()
    norm = clip_grad_norm_(model.parameters(), float("inf"))
    model.zero_grad(set_to_none=True)
    return norm


def _count_shared_memory_collectives() -> list:
    """Record the size of every collective that went through shared memory (the real one runs)."""
    from raysweep.train.collectives import SharedMemoryExchange

    calls, run = [], SharedMemoryExchange.run

    def counted(self, nbytes, *args, **kwargs):
        calls.append(nbytes)
        return run(self, nbytes, *args, **kwargs)

    SharedMemoryExchange.run = counted
    return calls


def _rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (2,))
    batches = _batches()[:, rank * 2:(rank + 1) * 2]  # this rank's half of every global batch
    exchanges = _count_shared_memory_collectives()
    for name, (shard_blocks, cfg) in SETUPS.items():
        exchanges.clear()
        torch._dynamo.reset()
        model = _model()
        parallelize(model, mesh, use_gpu=False, cfg=cfg, shard_blocks=shard_blocks)
        norm = _first_grad_norm(model, batches[0])
        optimizer = build_optimizer(model, 1.0, cfg)
        attention_forwards = []  # the block's attention runs again when the backward recomputes it
        model.model.layers[0].self_attn.register_forward_pre_hook(lambda *_: attention_forwards.append(1))
        for batch, clip in zip(batches, CLIPS):
            train_step(model, optimizer, batch, cfg.lr, clip)
        params = {param_name: p.full_tensor() for param_name, p in model.named_parameters()}  # a collective
        if rank == 0:
            torch.save({"norm": norm, "params": params, "attention_forwards_per_step": len(attention_forwards) / STEPS,
                        "shared_memory_collectives": list(exchanges),
                        "compiled_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"]},
                       os.path.join(out_dir, f"{name}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("fsdp")
    mp.spawn(_rank, args=(_free_port(), str(out_dir)), nprocs=2)
    return {name: torch.load(out_dir / f"{name}.pt") for name in SETUPS}


@pytest.fixture(scope="module")
def one_process():
    batches = _batches()
    model = _model()
    norm = _first_grad_norm(model, batches[0])
    optimizer = build_optimizer(model, 1.0, CFG)
    for batch, clip in zip(batches, CLIPS):
        train_step(model, optimizer, batch, CFG.lr, clip)
    return {"norm": norm, "params": {name: p.detach() for name, p in model.named_parameters()}}


@pytest.mark.parametrize("setup", SETUPS)
def test_sharded_gradient_norm_is_the_global_norm(sharded_runs, one_process, setup):
    got, want = float(sharded_runs[setup]["norm"]), float(one_process["norm"])
    assert CLIPS[0] * 10 < want < CLIPS[1] / 10
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("setup", SETUPS)
def test_two_ranks_train_the_same_parameters_as_one_process(sharded_runs, one_process, setup):
    got, want = sharded_runs[setup]["params"], one_process["params"]
    assert got.keys() == want.keys()  # checkpointing and compile leave the names (decay groups, DCP keys)
    init = dict(_model().named_parameters())
    for name, param in want.items():
        # Adam's m / sqrt(v) magnifies reduction-order noise in near-zero gradients to ~5e-6; a
        # wrong norm or scale moves parameters by ~lr (1e-2).
        assert torch.allclose(got[name], param, rtol=0, atol=1e-4), name
    assert all(not torch.equal(want[name], p) for name, p in init.items())  # every tensor trained, so the comparison is not of two inits


def test_ranks_on_one_host_gather_and_reduce_through_shared_memory(sharded_runs):
    for name, run in sharded_runs.items():  # at least an all-gather and a reduce-scatter a step
        assert len(run["shared_memory_collectives"]) >= 2 * STEPS, name
        assert run["shared_memory_collectives"].count(4) >= STEPS, name  # the clip's float32 squared norm


def test_activation_checkpointing_recomputes_the_blocks_in_the_backward(sharded_runs):
    assert sharded_runs["unit-per-block"]["attention_forwards_per_step"] == 1
    assert sharded_runs["per-block-checkpointed"]["attention_forwards_per_step"] == 2


def test_compile_option_compiles_the_blocks(sharded_runs):
    assert sharded_runs["one-unit"]["compiled_graphs"] == 0
    assert sharded_runs["one-unit-compiled"]["compiled_graphs"] >= 1


def test_compile_on_cpu_without_a_cpp_compiler_names_the_option(monkeypatch):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "no-such-c++-compiler"))
    with pytest.raises(RuntimeError, match=r"^train\.compile: .*C\+\+ compiler"):
        parallelize(_model(), mesh=None, use_gpu=False, cfg=CFG.model_copy(update={"compile": True}))


def _flat_tensor(rank: int, numel: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(numel, generator=torch.Generator().manual_seed(1000 * seed + rank))


def _refuse(*args, **kwargs):
    raise AssertionError("the shared-memory comm fell back to the pairwise one")


def _collectives_rank(rank: int, port: int, world_size: int, kind: str, out_dir: str) -> None:
    """Rounds of growing sizes (the mailboxes grow, the slots alternate), each checked in the parent."""
    import torch.distributed as dist

    from raysweep.train import collectives

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    group = dist.group.WORLD
    if kind == "pairwise":
        all_gather, reduce_scatter = collectives.PairwiseAllGather(), collectives.PairwiseReduceScatter()
    else:
        exchange = collectives._exchange_for(group)  # what gloo_collectives makes, and all_reduce_sum_ finds
        assert exchange is not None
        all_gather = collectives.SharedMemoryAllGather(exchange, fallback=_refuse)
        reduce_scatter = collectives.SharedMemoryReduceScatter(exchange, fallback=_refuse)
    outputs = []
    for round_, chunk in enumerate((1001, 3000, 501, 7000)):
        out = {}
        for op in ("SUM", "AVG"):
            flat_gradients = _flat_tensor(rank, world_size * chunk, round_)
            out[op] = torch.empty(chunk)
            reduce_scatter(out[op], flat_gradients, group, getattr(dist.ReduceOp, op))
            assert torch.equal(flat_gradients, _flat_tensor(rank, world_size * chunk, round_))  # input unchanged
        out["gathered"] = torch.empty(world_size * chunk)
        all_gather(out["gathered"], _flat_tensor(rank, chunk, round_), group)
        out["all_reduced"] = _flat_tensor(rank, 3, round_)
        collectives.all_reduce_sum_(out["all_reduced"], group)
        for _ in range(2):  # float64 in both slots, after float32 parts of odd sizes sized the mailboxes
            scalar = torch.tensor([rank + 0.5], dtype=torch.float64)
            collectives.all_reduce_sum_(scalar, group)
            assert scalar.item() == sum(r + 0.5 for r in range(world_size))
        outputs.append(out)
    torch.save(outputs, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["pairwise", "shared-memory"])
def test_collectives_match_their_definitions(kind, tmp_path):
    world_size = 3  # every rank exchanges with more than one peer
    before = set(os.listdir("/dev/shm"))
    mp.spawn(_collectives_rank, args=(_free_port(), world_size, kind, str(tmp_path)), nprocs=world_size)
    assert set(os.listdir("/dev/shm")) <= before  # every mailbox and FIFO unlinked
    got = [torch.load(tmp_path / f"{rank}.pt") for rank in range(world_size)]
    for round_, chunk in enumerate((1001, 3000, 501, 7000)):
        total = sum(_flat_tensor(rank, world_size * chunk, round_) for rank in range(world_size))
        shards = torch.cat([_flat_tensor(rank, chunk, round_) for rank in range(world_size)])
        for rank in range(world_size):
            assert torch.allclose(got[rank][round_]["SUM"], total.view(world_size, -1)[rank], atol=1e-6)
            assert torch.allclose(got[rank][round_]["AVG"], total.view(world_size, -1)[rank] / world_size, atol=1e-6)
            assert torch.equal(got[rank][round_]["gathered"], shards)
            assert torch.allclose(got[rank][round_]["all_reduced"], sum(_flat_tensor(r, 3, round_) for r in range(world_size)))
            assert torch.equal(got[rank][round_]["all_reduced"], got[0][round_]["all_reduced"])  # the same bits everywhere


def _separate_shm_rank(rank: int, port: int, world_size: int, shm_root: str) -> None:
    import torch.distributed as dist

    from raysweep.train import collectives

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    collectives.SHM_DIR = os.path.join(shm_root, str(rank))  # as in two containers, each its own /dev/shm
    os.makedirs(collectives.SHM_DIR)
    all_gather, _ = collectives.gloo_collectives(dist.group.WORLD)
    assert isinstance(all_gather, collectives.PairwiseAllGather)
    assert os.listdir(collectives.SHM_DIR) == []
    dist.destroy_process_group()


def test_ranks_that_cannot_see_each_others_shared_memory_agree_on_pairwise(tmp_path):
    mp.spawn(_separate_shm_rank, args=(_free_port(), 2, str(tmp_path)), nprocs=2)
