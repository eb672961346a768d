"""Model presets (every one builds, counts are right), the weight-decay split and the regularizers."""

import json
import math

import numpy as np
import pytest
import torch

from raysweep.data.frequency import max_row_decay_factor
from raysweep.models.build import build_config, build_model, count_params, flops_per_token
from raysweep.models.presets import PRESETS, get_preset
from raysweep.spec.errors import SpecError
from raysweep.spec.schema import ModelConfig, TrialTrainConfig
from raysweep.store.layout import SweepLayout
from raysweep.train.optim import build_lr_schedule, build_optimizer, decay_mask, summarize_mask
from raysweep.train.step import train_step

CPU_PRESETS = [name for name, p in PRESETS.items() if p.family is None]


@pytest.mark.parametrize("scale", list(PRESETS), ids=list(PRESETS))
def test_every_preset_builds_a_config_with_consistent_counts(scale):
    """preset → config; 6N-style FLOPs exceed 6x the matmul params by exactly the attention term, whose
    width is heads x head_dim (OpenELM's is not hidden_size)."""
    config = build_config(scale, vocab_size=4096)
    n = count_params(config)
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * 128
    embedding = 4096 * config.hidden_size
    matmul = n - (0 if config.tie_word_embeddings else embedding)
    assert flops_per_token(config, 128) == 6 * matmul + attention


@pytest.mark.parametrize("scale", CPU_PRESETS, ids=CPU_PRESETS)
def test_cpu_presets_stay_small(scale):
    assert count_params(build_config(scale, vocab_size=4096)) < 5_000_000


def test_qwen2_05b_shape_matches_published_size():
    """qwen2-0.5b at Qwen2's 151,936 vocab → ~494M parameters (the released model's count)."""
    n = count_params(build_config("qwen2-0.5b", vocab_size=151_936))
    assert abs(n - 494_032_768) / 494_032_768 < 0.01, n


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: nano, tiny"):
        get_preset("giant")


def test_same_seed_same_weights_different_seed_different():
    config = build_config("nano", vocab_size=300)
    a, b, c = build_model(config, 1), build_model(config, 1), build_model(config, 2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


EMBEDDINGS = {"model.embed_tokens.weight", "lm_head.weight"}


@pytest.mark.parametrize("policy", ["all_matrices", "no_embeddings", "embeddings_only"])
def test_decay_mask_exact_membership(policy):
    """policy → exactly the hand-listed tensors decay; norms never do."""
    model = build_model(build_config("tiny", vocab_size=300), 0)
    names = [n for n, _ in model.named_parameters()]
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2}
    expected = {"all_matrices": matrices, "no_embeddings": matrices - EMBEDDINGS,
                "embeddings_only": EMBEDDINGS}[policy]
    mask = decay_mask(model, policy)
    assert {n for n in names if mask[n]} == expected
    assert not any(mask[n] for n in names if "norm" in n)
    summary = summarize_mask(model, mask)
    assert summary["decay"]["n_params"] + summary["no_decay"]["n_params"] == sum(
        p.numel() for p in model.parameters())


def test_optimizer_groups_carry_the_weight_decay():
    model = build_model(build_config("nano", vocab_size=300), 0)
    optimizer = build_optimizer(model, TrialTrainConfig(weight_decay=0.3, decay_policy="no_embeddings"))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.3 for p in g["params"]}
    assert id(model.model.embed_tokens.weight) not in decayed
    assert id(model.model.layers[0].self_attn.q_proj.weight) in decayed


def _schedule_lrs(cfg: TrialTrainConfig, start_step: int = 0) -> list[float]:
    """The lr a schedule built at `start_step` sets for each step from there to the last, read before
    the step as the training loop does, and last the lr it ends at after the last step; on an
    optimizer over one throwaway tensor. A resumed optimizer comes with the lr its checkpoint saved
    mid-schedule (here an arbitrary one), which the schedule must not build on."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr if start_step == 0 else 0.123)
    schedule = build_lr_schedule(optimizer, cfg, start_step)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(start_step, cfg.steps):
        assert schedule.get_last_lr() == [lrs[-1]]
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_lr_schedule_warmup_then_cosine_to_floor():
    """transformers' schedule: lr * step / warmup, then cosine from lr at the end of the warmup down
    to lr * min_lr_ratio, which it reaches when the last step is done."""
    cfg = TrialTrainConfig(steps=110, lr=2.0, warmup_steps=10, min_lr_ratio=0.1)

    def expected(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * step / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / (cfg.steps - cfg.warmup_steps)
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    lrs = _schedule_lrs(cfg)
    assert lrs == pytest.approx([expected(step) for step in range(cfg.steps + 1)], rel=1e-12, abs=1e-12)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0)  # a linear warmup from 0
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert lrs[10] == pytest.approx(cfg.lr) and max(lrs) == pytest.approx(cfg.lr)  # the peak, at the warmup's end
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # then down all the way
    assert lrs[60] == pytest.approx(cfg.lr * (0.1 + 0.9 * 0.5))  # halfway through the cosine
    assert lrs[cfg.steps] == pytest.approx(cfg.lr * cfg.min_lr_ratio)  # the floor, after the last step


@pytest.mark.parametrize("start_step", [1, 4, 10, 37, 109, 110])
def test_lr_schedule_resumed_at_a_step_continues_the_uninterrupted_one(start_step):
    """A trial restarted from its checkpoint at step k builds its schedule with start_step=k: from
    there on the lrs are those of the uninterrupted run (not a fresh warmup)."""
    cfg = TrialTrainConfig(steps=110, lr=2.0, warmup_steps=10, min_lr_ratio=0.1)
    assert _schedule_lrs(cfg, start_step) == pytest.approx(_schedule_lrs(cfg)[start_step:], rel=1e-12, abs=1e-15)


def test_cpu_peak_is_a_measured_matmul():
    from raysweep.train.throughput import measured_matmul_flops, peak_flops

    peak, source = peak_flops(torch.device("cpu"))
    assert "measured" in source and 1e8 < peak < 1e14  # a CPU: between 0.1 GFLOP/s and 100 TFLOP/s
    again = measured_matmul_flops(torch.device("cpu"), torch.float32, 768, 8)
    assert 0.2 < again / peak < 5  # the same measurement twice agrees to within noise


def _tiny_model(vocab: int = 64):
    return build_model(build_config("nano", vocab_size=vocab), seed=0)


def test_frequency_aware_decay_scales_each_embedding_row():
    """With zero gradients Adam moves nothing, so one step is pure decoupled decay: embedding rows
    shrink by 1 - lr * lambda * (count / median) ** alpha, other matrices by 1 - lr * lambda."""
    model = _tiny_model()
    counts = np.arange(64) * 3  # token 0 unseen (counts as 1), median of the seen = 96
    cfg = TrialTrainConfig(lr=0.01, weight_decay=2.0, freq_decay_alpha=0.5)
    assert cfg.uses_row_decay
    optimizer = build_optimizer(model, cfg, token_counts=counts)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    row_scale = (np.maximum(counts, 1) / np.median(counts[counts > 0])) ** 0.5
    expected_rows = torch.tensor(1 - 0.01 * 2.0 * row_scale, dtype=torch.float32).unsqueeze(1)
    params = dict(model.named_parameters())
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.allclose(params[name], before[name] * expected_rows, rtol=0, atol=1e-7), name
    attention = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(params[attention], before[attention] * (1 - 0.01 * 2.0), rtol=0, atol=1e-7)
    norm = "model.norm.weight"
    assert torch.equal(params[norm], before[norm])


def test_frequency_aware_decay_with_flat_counts_is_adamw():
    """Every type at the median count: per-row decay is AdamW's own decay, over real steps."""
    torch.manual_seed(0)
    batch = torch.randint(0, 64, (4, 16))
    models = [_tiny_model(), _tiny_model()]
    optimizers = [build_optimizer(models[0], TrialTrainConfig(lr=0.01, weight_decay=1.0)),
                  build_optimizer(models[1], TrialTrainConfig(lr=0.01, weight_decay=1.0, freq_decay_alpha=1.0),
                                  token_counts=np.full(64, 7))]
    for _ in range(3):
        for model, optimizer in zip(models, optimizers):
            train_step(model, optimizer, batch, grad_clip=1.0)
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_label_smoothing_changes_the_training_loss_only():
    """train_step's loss is the smoothed cross-entropy of the next token; 0 gives the model's own loss."""
    batch = torch.randint(0, 64, (2, 12))
    model = _tiny_model()
    logits = model(input_ids=batch).logits[:, :-1].reshape(-1, 64)
    smoothed = torch.nn.functional.cross_entropy(logits, batch[:, 1:].reshape(-1), label_smoothing=0.2)
    plain = torch.nn.functional.cross_entropy(logits, batch[:, 1:].reshape(-1))
    got = train_step(model, build_optimizer(model, TrialTrainConfig()), batch, 0.0, label_smoothing=0.2)
    assert got.item() == pytest.approx(smoothed.item(), rel=1e-5) and smoothed.item() > plain.item()
    model = _tiny_model()
    got = train_step(model, build_optimizer(model, TrialTrainConfig()), batch, 0.0)
    assert got.item() == pytest.approx(plain.item(), rel=1e-5)


def test_row_decay_that_would_flip_rows_is_refused():
    """lr x lambda x the largest row multiplier >= 1 would flip a row's sign every step."""
    counts = np.array([1, 1, 1, 10_000])
    assert max_row_decay_factor(counts, alpha=1.0, lr=1e-3, weight_decay=1.0) == pytest.approx(10.0)
    assert max_row_decay_factor(counts, alpha=0.5, lr=1e-3, weight_decay=1.0) == pytest.approx(0.1)


def _config_dir(directory, fields: dict) -> str:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(fields))
    return str(directory)


def test_a_config_dirs_fields_take_overrides_by_either_name_and_the_sweeps_dropout(tmp_path):
    """gpt2 spells num_hidden_layers n_layer: an override wins whichever name config.json or the override
    uses; model.dropout sets every dropout field the overrides leave alone; the vocabulary and eos are
    the tokenizer's."""
    source = _config_dir(tmp_path / "gpt2", {"model_type": "gpt2", "num_hidden_layers": 3, "n_embd": 32,
                                             "n_head": 2, "resid_pdrop": 0.1, "embd_pdrop": 0.1})
    model = ModelConfig(configs={"g": {"hf": source, "overrides": {"n_layer": 1, "embd_pdrop": 0.2}}})
    config = build_config("g", 300, model, dropout=0.0, eos_token_id=7)
    assert (config.model_type, config.n_layer, config.n_embd, config.vocab_size, config.eos_token_id) == \
        ("gpt2", 1, 32, 300, 7)
    assert (config.resid_pdrop, config.attn_pdrop, config.embd_pdrop) == (0.0, 0.0, 0.2)
    twice = ModelConfig(configs={"g": {"hf": source, "overrides": {"n_layer": 1, "num_hidden_layers": 2}}})
    with pytest.raises(SpecError, match=r"model\.configs\.g\.overrides\.num_hidden_layers: names the same field"):
        build_config("g", 300, twice)


def test_a_started_sweep_builds_its_stored_config_not_the_source(tmp_path):
    source = _config_dir(tmp_path / "neox", {"model_type": "gpt_neox", "num_hidden_layers": 2, "hidden_size": 32,
                                             "num_attention_heads": 2, "intermediate_size": 64})
    layout = SweepLayout.at(tmp_path / "runs" / "s")
    stored = layout.model_config_file("n")
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({**json.loads((tmp_path / "neox" / "config.json").read_text()),
                                  "num_hidden_layers": 3}))
    model = ModelConfig(configs={"n": {"hf": source}})
    assert build_config("n", 300, model).num_hidden_layers == 2
    assert build_config("n", 300, model, layout=layout).num_hidden_layers == 3


def test_a_checkpoint_whose_metadata_names_code_is_refused_unrun(tmp_path):
    """A checkpoint from elsewhere: DCP's .metadata is a pickle, and load_model_weights unpickles only
    DCP's metadata classes, so a crafted one raises instead of running its payload."""
    import pickle

    import torch.distributed.checkpoint as dcp

    from raysweep.train.checkpoint import load_model_weights

    model = build_model(build_config("nano", vocab_size=300), seed=0)
    good, bad = tmp_path / "good", tmp_path / "bad"
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(good))
    (good / "train_state.json").write_text(json.dumps({"step": 3}))
    fresh = build_model(build_config("nano", vocab_size=300), seed=1)
    assert load_model_weights(fresh, good) == 3
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    import shutil
    shutil.copytree(good, bad)
    (bad / ".metadata").write_bytes(pickle.dumps(Payload()))
    from torch.distributed.checkpoint.api import CheckpointException

    with pytest.raises(CheckpointException, match="is not part of a checkpoint's metadata"):
        load_model_weights(fresh, bad)
    assert not (tmp_path / "ran").exists()


def test_a_torn_newest_checkpoint_is_skipped_for_the_one_before(tmp_path):
    """Two marked checkpoints (steps 10 and 20); the newest's .distcp file truncated (a crash or a full disk
    after the marker): a restart takes step 10 and loads it, the one before takes step 20 again once the
    file is whole, and a marker of before sizes were recorded is still taken as whole."""
    import shutil

    from raysweep.store.layout import checkpoint_complete_marker, checkpoint_dir_name
    from raysweep.train.checkpoint import is_whole, latest_checkpoint, load_checkpoint, mark_complete, save_checkpoint

    model = build_model(build_config("nano", vocab_size=300), seed=0)
    optimizer = build_optimizer(model, TrialTrainConfig())
    run_dir = tmp_path / "run"
    for step in (10, 20):
        save_checkpoint(model, optimizer, step, run_dir / checkpoint_dir_name(step), rank=0)
        mark_complete(run_dir / checkpoint_dir_name(step), step)
    newest = run_dir / checkpoint_dir_name(20)
    assert latest_checkpoint(None, run_dir) == newest
    shard = next(newest.glob("*.distcp"))
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    assert not is_whole(newest)
    chosen = latest_checkpoint(None, run_dir)
    assert chosen == run_dir / checkpoint_dir_name(10)
    assert latest_checkpoint(str(newest), run_dir) == chosen  # Ray registered the torn one: still skipped
    assert load_checkpoint(model, optimizer, chosen) == 10
    shard.write_bytes(whole)
    assert latest_checkpoint(None, run_dir) == newest
    legacy = tmp_path / "legacy" / checkpoint_dir_name(30)
    shutil.copytree(newest, legacy)
    checkpoint_complete_marker(legacy).write_text(json.dumps({"step": 30}))
    assert is_whole(legacy)
