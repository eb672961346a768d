"""`raysweep plan` (raysweep.ops.plan): the counts against torch's own, the table and JSON, where the MFU and
the bytes per row come from, and that planning starts no Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM

from raysweep.models.build import build_config, flops_per_token
from raysweep.ops.plan import DEFAULT_BYTES_PER_ROW, kept_elements_per_token, model_shape
from raysweep.spec import load_spec, parse_spec
from raysweep.store.layout import SweepLayout
from raysweep.train.devices import GPUS
from raysweep.trials.grid import grid_points
from tests.conftest import REPO, run_cli_in_process, tiny_spec_dict, write_spec
from tests.synthetic_sweep import write_synthetic_sweep

SEQ_LEN, BATCH, VOCAB = 32, 2, 512
CPU_PRESETS = ["nano", "tiny", "small"]


@pytest.mark.parametrize("scale", CPU_PRESETS, ids=CPU_PRESETS)
def test_params_and_flops_match_torch_on_a_real_step(scale):
    """a preset's forward + backward under FlopCounterMode → the plan's FLOPs within 5%, its parameters exact.
    Eager attention: torch counts no FLOPs for CPU SDPA's kernel, but does for eager's matmuls."""
    config = build_config(scale, VOCAB)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    ids = torch.randint(0, VOCAB, (BATCH, SEQ_LEN))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    ratio = flops_per_token(config, SEQ_LEN) * BATCH * SEQ_LEN / counter.get_total_flops()
    print(f"{scale}: plan / FlopCounterMode = {ratio:.4f}")
    assert ratio == pytest.approx(1, abs=0.05)
    assert model_shape(config).n_params == sum(p.numel() for p in model.parameters())


def _saved_bytes(model, ids) -> int:
    """Bytes of the tensors autograd keeps for the backward of one training forward (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, labels=ids)
    return sum(kept.values())


@pytest.mark.parametrize("checkpoint_every", [None, 1], ids=["all-kept", "checkpointed"])
@pytest.mark.parametrize("scale", CPU_PRESETS, ids=CPU_PRESETS)
def test_kept_activations_match_autograd(scale, checkpoint_every):
    """a preset's training forward (SDPA, float32) → what autograd keeps is the plan's activations plus the
    float32 log-softmax of the logits, within 5%; with activation checkpointing too."""
    config = build_config(scale, VOCAB)
    model = AutoModelForCausalLM.from_config(config)
    if checkpoint_every:
        model.activation_checkpointing_enable(every_n_layers=checkpoint_every)
    model.train()
    measured = _saved_bytes(model, torch.randint(0, VOCAB, (BATCH, SEQ_LEN)))
    planned = 4 * BATCH * SEQ_LEN * (kept_elements_per_token(model_shape(config), checkpoint_every) + VOCAB)
    assert planned / measured == pytest.approx(1, abs=0.05)


def _plan_json(capsys, *argv) -> dict:
    code, out, err = run_cli_in_process(["plan", *argv, "--format", "json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_demo_plan_lists_the_grid_trials_and_totals(tmp_path, capsys):
    """examples/demo.yaml on an empty storage root → a row per grid trial, the default MFU and bytes per row,
    no GPU-hours (a CPU sweep), and a total that adds the rows up; the table shows the same trials."""
    storage = f"--set=storage={tmp_path / 'runs'}"
    plan = _plan_json(capsys, str(REPO / "examples" / "demo.yaml"), storage)
    spec = load_spec(REPO / "examples" / "demo.yaml", (f"storage={tmp_path / 'runs'}",))
    assert [t["trial"] for t in plan["trials"]] == [p.trial_id for p in grid_points(spec)]
    nano = plan["trials"][0]
    assert nano["train_tokens"] == spec.train.steps * spec.train.batch_size * spec.data.seq_len
    # 2 evals (steps 250 and 500) x 128 sequences x 63 targets: the shards runs/demo holds after `make demo`
    assert nano["eval_rows"] == 2 * 128 * 63
    assert nano["parquet_bytes"] == pytest.approx(nano["eval_rows"] * DEFAULT_BYTES_PER_ROW)
    assert nano["gpu_hours"] is None and nano["cost_usd"] is None and nano["fits"] is None
    assert plan["total"]["train_flops"] == pytest.approx(sum(t["train_flops"] for t in plan["trials"]))
    assert plan["assumptions"]["mfu"]["nano"] == {"mfu": 0.35, "source": "default (cost.default_mfu)"}

    code, table, _ = run_cli_in_process(["plan", str(REPO / "examples" / "demo.yaml"), storage], capsys)
    lines = table.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["trial", "params", "train"]
    assert [line.split()[0] for line in lines[1:5]] == [t["trial"] for t in plan["trials"]]
    assert lines[6].startswith("total (4 trials)") and "n/a (CPU)" in lines[6]


def _gpu_spec(tmp_path: Path, **sections) -> str:
    return str(write_spec(tmp_path / "gpu.yaml", tiny_spec_dict(
        tmp_path / "runs", name="gpu", resources={"use_gpu": True, "workers_per_trial": 2},
        cost={"gpu": "H100-80GB", "usd_per_gpu_hour": 2.5}, **sections)))


def test_gpu_plan_prices_the_flops_at_the_mfu_and_checks_the_memory(tmp_path, capsys):
    """a GPU spec with a cost section → GPU-hours = FLOPs / (MFU x the GPU's peak), cost = hours x price, and
    a batch whose logits outgrow the GPU does not fit."""
    plan = _plan_json(capsys, _gpu_spec(tmp_path, train={"batch_size": 4}))
    trial, peak = plan["trials"][0], GPUS["H100-80GB"].bf16_peak_flops
    hours = (trial["train_flops"] + trial["eval_flops"]) / (0.35 * peak) / 3600
    assert trial["gpu_hours"] == pytest.approx(hours) and trial["cost_usd"] == pytest.approx(hours * 2.5)
    assert trial["fits"] is True and plan["total"]["fits"] is True
    assert plan["total"]["cost_usd"] == pytest.approx(2 * hours * 2.5)
    assert plan["assumptions"]["price"] == {"usd_per_gpu_hour": 2.5, "source": "cost.usd_per_gpu_hour"}

    # 2**20 sequences a step: each worker's 2**19 x 32 tokens x 512 logits at 14 bytes alone are 112 GiB
    huge = _plan_json(capsys, _gpu_spec(tmp_path, train={"batch_size": 2**20}))
    assert huge["trials"][0]["fits"] is False and huge["total"]["fits"] is False
    code, table, _ = run_cli_in_process(["plan", _gpu_spec(tmp_path, train={"batch_size": 2**20})], capsys)
    assert code == 0 and " NO " in table.splitlines()[1]


def _measured_trial(sweep: Path, trial_id: str, scale: str, device: str) -> None:
    """What a trial's driver and rank 0 leave besides its shards: its point and its attempts log."""
    layout = SweepLayout.at(sweep)
    layout.point_file(trial_id).write_text(json.dumps({"scale": scale, "weight_decay": 0.0, "seed": 0}))
    layout.attempts_file(trial_id).write_text(json.dumps({"start_step": 0, "peak_source": device}) + "\n")


def test_mfu_and_bytes_per_row_come_from_earlier_sweeps_under_the_storage_root(tmp_path, capsys):
    """a finished sweep under the same root with a measured CPU trial of `nano` → a CPU plan of nano uses that
    trial's MFU (0.01 in the synthetic chunks) and the bytes per row of its shards; a GPU plan does not take
    a CPU measurement, and keeps the default."""
    earlier = write_synthetic_sweep(tmp_path / "runs" / "earlier", scales=("nano",))
    for trial_id in ("nano-wd0.0-s0", "nano-wd0.5-s0"):
        (earlier / "train" / trial_id).mkdir(parents=True)
        _measured_trial(earlier, trial_id, "nano", "measured fp32 matmul (CPU)")
    spec = write_spec(tmp_path / "cpu.yaml", tiny_spec_dict(tmp_path / "runs", name="new"))
    plan = _plan_json(capsys, str(spec))
    measured = plan["assumptions"]["mfu"]["nano"]
    assert measured["mfu"] == pytest.approx(0.01) and measured["source"].startswith("measured: earlier/nano-wd")
    row = plan["assumptions"]["parquet_bytes_per_row"]
    assert row["source"].startswith("measured on") and row["bytes"] != DEFAULT_BYTES_PER_ROW

    gpu = _plan_json(capsys, _gpu_spec(tmp_path))
    assert gpu["assumptions"]["mfu"]["nano"]["source"] == "default (cost.default_mfu)"


def test_search_and_checkpoint_plans(tmp_path, capsys):
    """search: optuna → one row standing for num_samples trials of the fixed model; search: checkpoints →
    a row per checkpoint that scores once and trains nothing."""
    search = _plan_json(capsys, str(write_spec(tmp_path / "s.yaml", tiny_spec_dict(
        tmp_path / "runs", name="s", search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"], "seed": [0]},
        optuna={"num_samples": 5, "space": {"weight_decay": {"low": 0.0, "high": 1.0}}}))))
    assert [t["n_trials"] for t in search["trials"]] == [5] and search["total"]["n_trials"] == 5
    assert search["total"]["train_tokens"] == 5 * search["trials"][0]["train_tokens"]

    model_dir = tmp_path / "mine" / "step10"
    transformers.GPTNeoXConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2).save_pretrained(model_dir)
    spec = write_spec(tmp_path / "c.yaml", {
        "name": "c", "storage": str(tmp_path / "runs"), "search": "checkpoints", "data": {"seq_len": 32},
        "checkpoints": {"models": {"mine": {"hf": str(tmp_path / "mine"), "revisions": ["step10"]}}},
        "eval": {"n_train_sequences": 4, "n_heldout_sequences": 4}})
    scored = _plan_json(capsys, str(spec))
    assert [t["trial"] for t in scored["trials"]] == ["mine@step10"]
    assert scored["trials"][0]["train_flops"] == 0 and scored["trials"][0]["eval_rows"] == 8 * 31


def test_a_bad_spec_gets_the_error_sweep_gives(tmp_path, capsys):
    """an unknown field → `plan` prints sweep's one line (its own command name), exit 2 both."""
    spec = str(write_spec(tmp_path / "bad.yaml", tiny_spec_dict(tmp_path / "runs", train={"stepz": 3})))
    errors = []
    for command in (["plan", spec], ["sweep", spec], ["sweep", spec, "--dry-run"]):
        code, _, err = run_cli_in_process(command, capsys)
        assert code == 2
        errors.append(err.strip().split(": error: ", 1)[1])
    assert errors[0] == errors[1] == errors[2] and "train.stepz: unknown field" in errors[0]


def test_sweep_dry_run_prints_the_plan_and_imports_no_ray(tmp_path):
    """`raysweep sweep SPEC --dry-run` → exit 0, the plan's table, and Ray never imported (so never started)."""
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(tmp_path / "runs", name="dry"))
    probe = ("import sys; from raysweep.cli import main; code = main(['sweep', sys.argv[1], '--dry-run']); "
             "print('RAY_IMPORTED' if 'ray' in sys.modules else 'NO_RAY'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, str(spec)], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "NO_RAY" and lines[0].startswith("trial") and lines[1].startswith("nano-wd0.0-s0")
    assert not (tmp_path / "runs").exists()  # nothing written


def test_cost_fields_are_checked_with_the_spec():
    """cost.gpu must be a known GPU on a GPU sweep; a price needs the GPU it is for."""
    base = tiny_spec_dict(Path("runs"))
    with pytest.raises(ValueError, match="cost.gpu: unknown GPU; valid: H100-80GB"):
        parse_spec(base | {"cost": {"gpu": "H1000"}, "resources": {"use_gpu": True}})
    with pytest.raises(ValueError, match="cost.gpu: names a GPU .* but resources.use_gpu is false"):
        parse_spec(base | {"cost": {"gpu": "A100-80GB"}})
    with pytest.raises(ValueError, match="cost.usd_per_gpu_hour: a price per hour of cost.gpu, which is not set"):
        parse_spec(base | {"cost": {"usd_per_gpu_hour": 2.0}})
