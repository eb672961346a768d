"""FSDP2 on 2 gloo ranks trains the same model as one process: parallelize's setups (one FSDP unit per
block plus the root; with activation checkpointing; with torch.compile of the blocks), torch's gradient
clip on the sharded gradients and AdamW, checked parameter by parameter (no Ray: the component here is
the sharding). Four transformers architectures, their blocks found from `_no_split_modules`, shard the
same way. A single CPU worker trains the plain module."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

import raysweep.models.init

from raysweep.models.build import build_config, build_model, decoder_blocks
from raysweep.models.init import materialize, meta_model
from raysweep.spec.schema import TrialTrainConfig
from raysweep.train.optim import build_optimizer
from raysweep.train.parallel import parallelize
from raysweep.train.step import train_step
from tests.conftest import free_port

VOCAB = 67  # odd: the embedding rows do not split evenly over 2 ranks
SMALL_ROW_BLOCK = 1024  # bytes: 8 rows of 32 floats a block, so the 34 / 33 row shards split a block
SCALE = "tiny"  # 2 decoder blocks: 2 FSDP units besides the root
CLIPS = (0.05, 1e3, 0.05)  # well under the gradient norm, then far over it: clipped, unclipped, clipped
STEPS = len(CLIPS)
CFG = TrialTrainConfig(lr=0.01, weight_decay=1.0)  # no schedule: the optimizer's lr stays at cfg.lr
# name -> the spec's train options for parallelize (apply_fsdp always shards each block, then the root)
SETUPS = {
    "per-block": CFG,
    "per-block-checkpointed": CFG.model_copy(update={"activation_checkpointing": 1}),
    "per-block-compiled": CFG.model_copy(update={"compile": True}),
}
CPU = torch.device("cpu")
# Architectures whose blocks live elsewhere than model.model.layers (gpt2: transformer.h, tied
# embeddings; gpt_neox: gpt_neox.layers, untied), at 2 blocks each; dropout off so ranks and one process agree.
SHAPE = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "use_cache": False}
BLOCKS_AT = {"llama": "model.layers", "qwen2": "model.layers", "gpt_neox": "gpt_neox.layers", "gpt2": "transformer.h"}
ARCHITECTURES = {
    "llama": LlamaConfig(**SHAPE, num_key_value_heads=2),
    "qwen2": Qwen2Config(**SHAPE, num_key_value_heads=2),
    "gpt_neox": GPTNeoXConfig(**SHAPE),
    "gpt2": GPT2Config(vocab_size=VOCAB, n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=64,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False),
}


def _batches() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, (STEPS, 4, 16)))


def _model() -> torch.nn.Module:
    return build_model(build_config(SCALE, vocab_size=VOCAB), seed=0)


def _sharded_model(config, cfg, world: int = 2) -> torch.nn.Module:
    """What a trial's workers build: the model on the meta device, sharded, then materialized shard by shard."""
    model = meta_model(config)
    template = copy.deepcopy(model)
    parallelize(model, CPU, world, cfg)
    materialize(model, template, 0, CPU)
    return model


def _first_grad_norm(model, batch) -> float:
    """The global gradient norm of one backward, as torch's clip measures it (max_norm inf: no clip)."""
    model(input_ids=batch, labels=batch).loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    model.zero_grad(set_to_none=True)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def _steps(model, cfg, batches) -> None:
    optimizer = build_optimizer(model, cfg)
    for batch, clip in zip(batches, CLIPS):
        train_step(model, optimizer, batch, clip)


def _train(model, cfg, batches) -> dict:
    """The first gradient norm, then STEPS train_steps; with how often block 0's attention ran a step."""
    norm = _first_grad_norm(model, batches[0])
    attention_forwards = []  # the block's attention runs again when the backward recomputes it
    model.model.layers[0].self_attn.register_forward_pre_hook(lambda *_: attention_forwards.append(1))
    _steps(model, cfg, batches)
    return {"norm": norm, "attention_forwards_per_step": len(attention_forwards) / STEPS}


def _rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    batches = _batches()[:, rank * 2:(rank + 1) * 2]  # this rank's half of every global batch
    for name, cfg in SETUPS.items():
        torch._dynamo.reset()
        model = meta_model(build_config(SCALE, vocab_size=VOCAB))
        template = copy.deepcopy(model)
        applied = parallelize(model, CPU, 2, cfg)
        materialize(model, template, 0, CPU)
        sharded = {"fsdp_units": sum(isinstance(m, FSDPModule) for m in model.modules()),
                   "all_dtensors": all(isinstance(p, DTensor) for p in model.parameters())}
        result = _train(model, cfg, batches)
        params = {param_name: p.full_tensor() for param_name, p in model.named_parameters()}  # a collective
        if rank == 0:
            torch.save({**result, **applied, **sharded, "params": params,
                        "compiled_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"]},
                       os.path.join(out_dir, f"{name}.pt"))
    raysweep.models.init.ROW_BLOCK_BYTES = SMALL_ROW_BLOCK  # the embeddings (and untied heads) in row blocks
    for name, config in ARCHITECTURES.items():
        model = _sharded_model(config, CFG)
        fsdp_units = sum(isinstance(m, FSDPModule) for m in model.modules())
        init = {param_name: p.full_tensor() for param_name, p in model.named_parameters()}
        _steps(model, CFG, batches)
        params = {param_name: p.full_tensor() for param_name, p in model.named_parameters()}
        if rank == 0:
            torch.save({"fsdp_units": fsdp_units, "init": init, "params": params},
                       os.path.join(out_dir, f"arch-{name}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("fsdp")
    mp.spawn(_rank, args=(free_port(), str(out_dir)), nprocs=2)
    return {name: torch.load(out_dir / f"{name}.pt") for name in SETUPS} | \
        {f"arch-{name}": torch.load(out_dir / f"arch-{name}.pt") for name in ARCHITECTURES}


@pytest.fixture(scope="module")
def one_process():
    """What a single CPU worker trains: parallelize with world_size 1 leaves the module plain."""
    model = _model()
    parallelize(model, CPU, 1, CFG)
    result = _train(model, CFG, _batches())
    return {**result, "params": {name: p.detach() for name, p in model.named_parameters()}}


def test_one_cpu_worker_trains_the_plain_module():
    model = _model()
    params = list(model.parameters())
    applied = parallelize(model, CPU, 1, CFG)
    assert not isinstance(model, FSDPModule)
    assert not any(isinstance(m, FSDPModule) for m in model.modules())
    assert all(type(p) is torch.nn.Parameter and not isinstance(p, DTensor) for p in model.parameters())
    assert all(a is b for a, b in zip(params, model.parameters()))  # the same tensors, untouched
    assert applied == {"checkpointed_blocks": 0, "compiled_blocks": 0}


def test_two_ranks_shard_each_block_and_the_root(sharded_runs):
    n_blocks = build_config(SCALE, vocab_size=VOCAB).num_hidden_layers
    for name in SETUPS:
        run = sharded_runs[name]
        assert run["fsdp_units"] == n_blocks + 1, name
        assert run["all_dtensors"], name


@pytest.mark.parametrize("setup", SETUPS)
def test_sharded_gradient_norm_is_the_global_norm(sharded_runs, one_process, setup):
    got, want = sharded_runs[setup]["norm"], one_process["norm"]
    assert CLIPS[0] * 10 < want < CLIPS[1] / 10  # so the clips below do clip, then do not
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


def test_activation_checkpointing_recomputes_the_blocks_in_the_backward(sharded_runs, one_process):
    n_blocks = build_config(SCALE, vocab_size=VOCAB).num_hidden_layers
    assert one_process["attention_forwards_per_step"] == 1
    assert sharded_runs["per-block"]["attention_forwards_per_step"] == 1
    assert sharded_runs["per-block"]["checkpointed_blocks"] == 0
    assert sharded_runs["per-block-checkpointed"]["attention_forwards_per_step"] == 2
    assert sharded_runs["per-block-checkpointed"]["checkpointed_blocks"] == n_blocks


def test_compile_option_compiles_the_blocks(sharded_runs):
    n_blocks = build_config(SCALE, vocab_size=VOCAB).num_hidden_layers
    assert sharded_runs["per-block"]["compiled_graphs"] == 0
    assert sharded_runs["per-block"]["compiled_blocks"] == 0
    assert sharded_runs["per-block-compiled"]["compiled_graphs"] >= 1
    assert sharded_runs["per-block-compiled"]["compiled_blocks"] == n_blocks


def test_compile_on_cpu_without_a_cpp_compiler_names_the_option(monkeypatch):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "no-such-c++-compiler"))
    with pytest.raises(RuntimeError, match=r"^train\.compile: .*C\+\+ compiler"):
        parallelize(_model(), CPU, 1, CFG.model_copy(update={"compile": True}))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_rank_initializes_its_shards_as_one_process_builds_the_model(sharded_runs, architecture, monkeypatch):
    """Built on the meta device, sharded over 2 ranks, then materialized unit by unit (the embedding and an
    untied head in row blocks, one block split between the ranks): exactly the parameters of a one-process
    build with the same seed, and not those of another seed."""
    monkeypatch.setattr(raysweep.models.init, "ROW_BLOCK_BYTES", SMALL_ROW_BLOCK)
    config = ARCHITECTURES[architecture]
    want = dict(build_model(config, seed=0).named_parameters())
    got = sharded_runs[f"arch-{architecture}"]["init"]
    assert got.keys() == want.keys()
    for name, param in want.items():
        assert torch.equal(got[name], param.detach()), name
    other = dict(build_model(config, seed=1).named_parameters())
    assert not any(torch.equal(other[name], p.detach()) for name, p in want.items() if p.std() > 0)


@pytest.mark.parametrize("config", [
    build_config(SCALE, vocab_size=VOCAB),  # a tied head
    # an embedding subclass with a buffer of its own (embed_scale), under the row-block size: built whole
    Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8)], ids=["tiny", "gemma3"])
def test_materialized_model_is_tied_and_initialized_as_transformers_does(config, monkeypatch):
    """A head tied to its embedding stays one tensor, and every parameter and buffer has the mean and spread
    of transformers' own init of that architecture (norms at 1, biases at 0, rotary frequencies and an
    embedding's scale computed)."""
    monkeypatch.setattr(raysweep.models.init, "ROW_BLOCK_BYTES", SMALL_ROW_BLOCK)
    model = build_model(config, seed=0)
    assert config.tie_word_embeddings == (model.lm_head.weight is model.model.embed_tokens.weight)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config).float()
    ours, theirs = dict(model.named_buffers()) | model.state_dict(), dict(reference.named_buffers()) | reference.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        if value.numel() > 100:
            assert ours[name].std().item() == pytest.approx(value.std().item(), rel=0.2), name
        assert ours[name].mean().item() == pytest.approx(value.mean().item(), abs=0.01), name


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_shards_its_blocks_and_trains_as_one_process(sharded_runs, architecture, monkeypatch):
    monkeypatch.setattr(raysweep.models.init, "ROW_BLOCK_BYTES", SMALL_ROW_BLOCK)
    config = ARCHITECTURES[architecture]
    model = build_model(config, seed=0)
    blocks = decoder_blocks(model)
    assert len(blocks) == config.num_hidden_layers
    assert blocks == list(model.get_submodule(BLOCKS_AT[architecture]))  # wherever the architecture keeps them
    init = {name: p.detach().clone() for name, p in model.named_parameters()}
    _steps(model, CFG, _batches())  # one process, the whole batch
    got = sharded_runs[f"arch-{architecture}"]
    assert got["fsdp_units"] == config.num_hidden_layers + 1
    assert got["params"].keys() == init.keys()
    for name, param in model.named_parameters():
        assert torch.allclose(got["params"][name], param.detach(), rtol=0, atol=1e-4), name
        assert not torch.equal(init[name], param.detach()), name  # trained: not two inits compared


def test_a_model_without_decoder_blocks_is_named():
    with pytest.raises(ValueError, match=r"^model: Linear names no decoder blocks"):
        decoder_blocks(torch.nn.Linear(2, 2))
