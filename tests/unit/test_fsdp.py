"""FSDP2 on 2 gloo ranks trains the same model as one process: apply_fsdp's wrappings, the sharded
gradient clip and AdamW, checked parameter by parameter (no Ray: the component here is the sharding)."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from raysweep.config import TrainConfig
from raysweep.model import build_config, build_model
from raysweep.train.loop import train_step
from raysweep.train.optim import build_optimizer
from raysweep.train.parallel import apply_fsdp, clip_grad_norm_

VOCAB = 67  # odd: the embedding rows do not split evenly over 2 ranks
CLIPS = (0.05, 1e3, 0.05)  # well under the gradient norm, then far over it: clipped, unclipped, clipped
STEPS = len(CLIPS)
CFG = TrainConfig(lr=0.01)


def _batches() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, (STEPS, 4, 16)))


def _model() -> torch.nn.Module:
    return build_model(build_config("nano", vocab_size=VOCAB), seed=0)


def _first_grad_norm(model, batch) -> torch.Tensor:
    model(input_ids=batch, labels=batch).loss.backward()
    norm = clip_grad_norm_(model.parameters(), float("inf"))
    model.zero_grad(set_to_none=True)
    return norm


def _rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (2,))
    batches = _batches()[:, rank * 2:(rank + 1) * 2]  # this rank's half of every global batch
    for shard_blocks in (False, True):
        model = _model()
        apply_fsdp(model, mesh, use_gpu=False, shard_blocks=shard_blocks)
        norm = _first_grad_norm(model, batches[0])
        optimizer = build_optimizer(model, 1.0, CFG)
        for batch, clip in zip(batches, CLIPS):
            train_step(model, optimizer, batch, CFG.lr, clip)
        params = {name: p.full_tensor() for name, p in model.named_parameters()}  # a collective
        if rank == 0:
            torch.save({"norm": norm, "params": params}, os.path.join(out_dir, f"blocks-{shard_blocks}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("fsdp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, str(out_dir)), nprocs=2)
    return {blocks: torch.load(out_dir / f"blocks-{blocks}.pt") for blocks in (False, True)}


@pytest.fixture(scope="module")
def one_process():
    batches = _batches()
    model = _model()
    norm = _first_grad_norm(model, batches[0])
    optimizer = build_optimizer(model, 1.0, CFG)
    for batch, clip in zip(batches, CLIPS):
        train_step(model, optimizer, batch, CFG.lr, clip)
    return {"norm": norm, "params": {name: p.detach() for name, p in model.named_parameters()}}


@pytest.mark.parametrize("shard_blocks", [False, True], ids=["one-unit", "unit-per-block"])
def test_sharded_gradient_norm_is_the_global_norm(sharded_runs, one_process, shard_blocks):
    got, want = float(sharded_runs[shard_blocks]["norm"]), float(one_process["norm"])
    assert CLIPS[0] * 10 < want < CLIPS[1] / 10
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("shard_blocks", [False, True], ids=["one-unit", "unit-per-block"])
def test_two_ranks_train_the_same_parameters_as_one_process(sharded_runs, one_process, shard_blocks):
    got, want = sharded_runs[shard_blocks]["params"], one_process["params"]
    assert got.keys() == want.keys()
    init = dict(_model().named_parameters())
    for name, param in want.items():
        # Adam's m / sqrt(v) magnifies reduction-order noise in near-zero gradients to ~5e-6; a
        # wrong norm or scale moves parameters by ~lr (1e-2).
        assert torch.allclose(got[name], param, rtol=0, atol=1e-4), name
    assert all(not torch.equal(want[name], p) for name, p in init.items())  # every tensor trained, so the comparison is not of two inits
