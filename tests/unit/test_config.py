"""The sweep spec: every error names its field; overrides reach any field."""

import re
from pathlib import Path

import pytest
import yaml

from raysweep.models.presets import PRESETS
from raysweep.spec import SpecError, load_spec, parse_spec
from raysweep.trials.grid import grid_points
from raysweep.trials.source import trial_source
from raysweep.trials.point import data_config, vocab_axis

REPO = Path(__file__).resolve().parents[2]


def problems_of(raw: dict, *overrides: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, overrides)
    return info.value.problems


BASE = {"name": "x"}


@pytest.mark.parametrize("raw, overrides, expected", [
    ({**BASE, "grid": {"weight_decay": [0.0, 0.1, -0.1]}}, (), "grid.weight_decay[2]: must be a finite number >= 0, got -0.1"),
    (BASE, ("grid.weight_decay=[0.0, .nan]",), "grid.weight_decay[1]: must be a finite number"),
    (BASE, ("grid.weight_decay=[.inf]",), "grid.weight_decay[0]: must be a finite number"),
    (BASE, ("grid.weight_decay=[]",), "grid.weight_decay: must not be empty"),
    (BASE, ("grid.scale=[tiny, huge]",), "grid.scale[1]: unknown preset 'huge'; valid: nano"),
    (BASE, ("train.stpes=10",), "train.stpes: unknown field"),
    (BASE, ("bogus=1",), "bogus: unknown field"),
    (BASE, ("train.steps=many",), "train.steps: input should be a valid integer"),
    (BASE, ("train.batch_size=7", "resources.workers_per_trial=2"),
     "train.batch_size: 7 is not divisible by resources.workers_per_trial=2"),
    (BASE, ("data.seq_len=4096",), "data.seq_len: 4096 exceeds the context of grid.scale[0]='tiny'"),
    (BASE, ("data.heldout_fraction=1.5",), "data.heldout_fraction: must be < 1.0, got 1.5"),
    (BASE, ("data.tokenizer.kind=wordpiece",), "data.tokenizer.kind: must be one of 'bpe', 'file' or 'hf'"),
    (BASE, ("data.tokenizer.kind=file",), "data.tokenizer.path: required"),
    (BASE, ("train.decay_policy=biases",), "train.decay_policy: must be one of"),
    (BASE, ("train.warmup_steps=500",), "train.warmup_steps: 500 must be < train.steps=300"),
    (BASE, ("resources.workers_per_trial=0",), "resources.workers_per_trial: must be >= 1, got 0"),
    (BASE, ("grid.seed=[1, 1]",), "grid.seed: duplicate values"),
    ({"storage": "runs"}, (), "name: required field is missing"),
    (BASE, ("name=has space",), "name: string should match pattern"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_spec_error_names_field(raw, overrides, expected):
    """bad field → a problem line that starts with its dotted path and says what is wrong."""
    problems = problems_of(raw, *overrides)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_reported_at_once():
    """two independent mistakes → both named in one error."""
    problems = problems_of(BASE, "train.steps=0", "eval.every=0")
    assert any(p.startswith("train.steps:") for p in problems)
    assert any(p.startswith("eval.every:") for p in problems)


@pytest.mark.parametrize("assignment, message", [
    ("train.steps", "expected key.path=value"),
    ("train..steps=3", "empty name"),
    ("train.steps.x=3", "train.steps: input should be a valid integer"),
    ("name.x=3", "name is not a section"),
    ("grid.weight_decay=[0.1", "not valid YAML"),
])
def test_bad_set_override(assignment, message):
    """malformed --set → SpecError naming the override."""
    with pytest.raises(SpecError) as info:
        parse_spec(BASE, (assignment,))
    assert message in str(info.value)


def test_override_reaches_nested_fields():
    """--set parses YAML values and sets nested fields; the caller's dict is untouched."""
    raw = {**BASE, "grid": {"weight_decay": [0.0]}}
    spec = parse_spec(raw, ("grid.weight_decay=[0.0, 0.1, 1.0]", "data.tokenizer.vocab_size=1000"))
    assert spec.grid.weight_decay == [0.0, 0.1, 1.0]
    assert spec.data.tokenizer.vocab_size == 1000
    assert raw["grid"]["weight_decay"] == [0.0]


def test_demo_spec_is_valid_and_expands_to_a_grid():
    """examples/demo.yaml → at least 2 weight decays x 2 scales, unique trial ids."""
    spec = load_spec(REPO / "examples" / "demo.yaml")
    points = grid_points(spec)
    assert len(spec.grid.weight_decay) >= 2 and len(spec.grid.scale) >= 2
    assert len({p.trial_id for p in points}) == len(points) == (
        len(spec.grid.weight_decay) * len(spec.grid.scale) * len(spec.grid.seed))
    assert all(s in PRESETS for s in spec.grid.scale)


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
def test_every_example_spec_is_valid(example):
    """Each shipped spec validates and expands to trials with unique ids (a search's: its space's corners)."""
    source = trial_source(load_spec(REPO / "examples" / example))
    points = source.points() or source.bounding_points()
    assert points and len({p.trial_id for p in points}) == len(points)


def test_documented_pythia_spec_validates_offline(monkeypatch):
    """docs/checkpoints.md's spec is examples/pythia.yaml, and validates with no network: 3 models x 10 hub
    revisions, each revision's step read from its name, one data dir per model in its own tokenizer at its
    first revision."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = (REPO / "docs" / "checkpoints.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:] if "search: checkpoints" in b.split("```", 1)[0]]
    assert len(blocks) == 1
    assert yaml.safe_load(blocks[0]) == yaml.safe_load((REPO / "examples" / "pythia.yaml").read_text())
    spec = parse_spec(yaml.safe_load(blocks[0]))
    source = trial_source(spec)
    points = source.points()
    assert len(points) == 30 and {p.table_id for p in points} == {"pythia-70m", "pythia-160m", "pythia-410m"}
    assert sorted({p.step for p in points}) == [0, 1, 8, 64, 512, 1000, 4000, 16000, 64000, 143000]
    assert all(p.trial_id == f"{p.model}@step{p.step}" for p in points)
    tokenizers = {slot: data.tokenizer for slot, data in source.data_configs().items()}
    assert tokenizers["pythia-70m"].name == "EleutherAI/pythia-70m-deduped" and tokenizers["pythia-70m"].revision == "step0"


def test_a_checkpoint_sweep_continues_only_by_adding(tmp_path):
    """More models, or revisions appended, continue a checkpoint sweep; another source under a scored model's
    name, revisions reordered (the first gives the tokenizer), or a scored revision's step changed are refused."""
    from raysweep.run.preflight import check_existing_sweep
    from raysweep.spec import SweepDirError, spec_to_yaml

    def spec(**model):
        entry = {"hf": "org/m", "revisions": ["step0", "step10"]} | model
        return parse_spec({"name": "c", "storage": str(tmp_path), "search": "checkpoints",
                           "checkpoints": {"models": {"m": entry}}})

    first = spec()
    first.layout.root.mkdir(parents=True)
    first.layout.spec_file.write_text(spec_to_yaml(first))
    assert check_existing_sweep(first) is True
    assert check_existing_sweep(spec(revisions=["step0", "step10", "step20"])) is False  # continues, not the same
    for changed, field in ((dict(hf="org/other"), "checkpoints.models.m.hf"),
                           (dict(revisions=["step10", "step0"]), "checkpoints.models.m.revisions"),
                           (dict(steps={"step10": 11}), "checkpoints.models.m.steps.step10: 10 -> 11")):
        with pytest.raises(SweepDirError, match=re.escape(field)):
            check_existing_sweep(spec(**changed))


def test_checkpoint_steps_come_from_names_or_are_given():
    """The step is the number a revision's name ends in after step / checkpoint / ckpt / iter, or `steps:`; a
    name without one (a commit hash's digits are not a step), or two revisions at one step, are refused naming
    the revision."""
    base = {"name": "c", "search": "checkpoints"}
    spec = parse_spec(base | {"checkpoints": {"models": {"m": {
        "hf": "org/m", "revisions": ["global_step300", "checkpoint-20", "iter_0000040", "main"],
        "steps": {"main": 1000}}}}})
    assert [p.step for p in trial_source(spec).points()] == [300, 20, 40, 1000]
    with pytest.raises(SpecError, match=r"checkpoints.models.m.revisions\[0\]: '3f2a1b9c' names no step"):
        parse_spec(base | {"checkpoints": {"models": {"m": {"hf": "org/m", "revisions": ["3f2a1b9c"]}}}})
    with pytest.raises(SpecError, match=r"checkpoints.models.m.revisions\[1\]: 'v2-step300' is step 300, as "
                                        r"'step300' is"):
        parse_spec(base | {"checkpoints": {"models": {"m": {"hf": "org/m", "revisions": ["step300", "v2-step300"]}}}})
    with pytest.raises(SpecError, match=r"revisions\[0\]: .* does not match|revisions.0"):
        parse_spec(base | {"checkpoints": {"models": {"m": {"hf": "/models/m", "revisions": ["../other"]}}}})


def test_regularizer_axes_multiply_the_grid_and_name_their_trials():
    """Each regularizer axis multiplies the grid; plain AdamW keeps the short id, every other
    setting shows in the id and in the regularizer that pairs a trial with its lambda = 0 baseline."""
    spec = parse_spec({"name": "r", "grid": {
        "weight_decay": [0.0, 1.0], "seed": [0, 1], "decay_policy": ["all_matrices", "embeddings_only"],
        "freq_decay_alpha": [0.0, 0.5], "label_smoothing": [0.1], "dropout": [0.0, 0.2]}})
    points = grid_points(spec)
    assert len(points) == 2 * 2 * 2 * 2 * 1 * 2
    assert len({p.trial_id for p in points}) == len(points)
    by_id = {p.trial_id: p for p in points}
    point = by_id["tiny-wd1.0-s1-embeddings_only-fa0.5-ls0.1-do0.2"]
    assert (point.decay_policy, point.freq_decay_alpha, point.label_smoothing, point.dropout) == \
        ("embeddings_only", 0.5, 0.1, 0.2)
    assert point.regularizer == "adamw embeddings_only freq_decay_alpha=0.5 label_smoothing=0.1 dropout=0.2"
    assert by_id["tiny-wd0.0-s0-ls0.1"].regularizer == "adamw label_smoothing=0.1"
    plain = grid_points(parse_spec({"name": "p", "train": {"label_smoothing": 0.0}}))
    assert [p.trial_id for p in plain] == ["tiny-wd0.0-s0", "tiny-wd1.0-s0"]
    assert {p.regularizer for p in plain} == {"adamw"}
    single = grid_points(parse_spec({"name": "s", "model": {"dropout": 0.1}}))
    assert all(p.dropout == 0.1 and p.trial_id.endswith("-do0.1") for p in single)


def test_vocab_axis_crosses_the_grid_with_one_data_config_per_size():
    spec = parse_spec({"name": "v", "grid": {"vocab_size": [300, 1000], "freq_decay_alpha": [0.0, 0.5]}})
    points = grid_points(spec)
    assert len(points) == 2 * 2 * 2 and len({p.trial_id for p in points}) == 8
    assert {p.trial_id for p in points if p.weight_decay == 1.0 and p.freq_decay_alpha == 0.5} == \
        {"tiny-wd1.0-s0-v300-fa0.5", "tiny-wd1.0-s0-v1000-fa0.5"}
    assert [data_config(spec, v).tokenizer.vocab_size for v in vocab_axis(spec)] == [300, 1000]
    assert data_config(spec, None) == spec.data
    with pytest.raises(SpecError, match="grid.vocab_size: needs data.tokenizer.kind 'bpe'"):
        parse_spec({"name": "v", "grid": {"vocab_size": [300]},
                    "data": {"tokenizer": {"kind": "file", "path": "/x/tokenizer.json"}}})


def test_missing_spec_file_names_the_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_non_mapping_yaml(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "top level must be a mapping" in str(info.value)


def test_relative_storage_resolves_against_the_working_dir(tmp_path, monkeypatch):
    """storage: runs → an absolute path, so Ray workers (other cwd) write where the user looks."""
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({**BASE, "storage": "runs"})
    assert spec.layout.root == tmp_path.resolve() / "runs" / "x"


def test_model_configs_name_models_for_the_scale_axis(tmp_path, monkeypatch):
    """A `model.configs` name is a grid.scale value beside the presets and names its trials; a local
    config dir (a path: ./, ../, / or ~) is stored absolute (workers and `resume` run elsewhere); anything
    else is a hub id, even where a dir of that name happens to exist."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "neox").mkdir()
    spec = parse_spec({**BASE, "model": {"configs": {"mine": {"hf": "./neox", "overrides": {"num_hidden_layers": 2}},
                                                     "pythia": {"hf": "EleutherAI/pythia-14m"},
                                                     "local-name": {"hf": "neox"}}},
                       "grid": {"weight_decay": [0.0], "scale": ["mine", "nano"], "seed": [0]}})
    assert spec.model.configs["mine"].hf == str(tmp_path / "neox")
    assert spec.model.configs["pythia"].hf == "EleutherAI/pythia-14m"
    assert spec.model.configs["local-name"].hf == "neox"
    assert sorted(p.trial_id for p in grid_points(spec)) == ["mine-wd0.0-s0", "nano-wd0.0-s0"]


@pytest.mark.parametrize("model, grid, message", [
    ({"configs": {"nano": {"hf": "x/y"}}}, {"scale": ["nano"]}, "model.configs: 'nano' is a preset's name"),
    ({"configs": {"a b": {"hf": "x/y"}}}, {"scale": ["nano"]}, "model.configs: 'a b': a config's name goes into trial ids"),
    ({"configs": {".t": {"hf": "x/y"}}}, {"scale": ["nano"]}, "model.configs: '.t': a config's name goes into trial ids"),
    ({"configs": {"é": {"hf": "x/y"}}}, {"scale": ["nano"]}, "model.configs: 'é': a config's name goes into trial ids"),
    ({"configs": {"mine": {"hf": "x/y"}}}, {"scale": ["yours"]}, "grid.scale[0]: unknown preset 'yours'; valid: nano"),
])
def test_model_configs_errors_name_the_field(model, grid, message):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "model": model, "grid": {"weight_decay": [0.0], "seed": [0], **grid}})
    assert message in str(err.value)


@pytest.mark.parametrize("evaluation, expected", [
    ({"every": 25}, [25, 50, 75, 100]),
    ({"every": 40, "at": [0, 5]}, [0, 5, 40, 80, 100]),  # the last step always evaluates
    ({"every": None, "at": [0, 10]}, [0, 10, 100]),
    ({"every": None, "log_spaced": 3}, [0, 1, 10, 100]),  # 100 ** (0, 1/2, 1), and the initialization
])
def test_eval_steps_join_the_cadence_explicit_steps_and_log_spacing(evaluation, expected):
    spec = parse_spec({**BASE, "train": {"steps": 100, "warmup_steps": 5}, "eval": evaluation})
    assert spec.eval_steps() == expected


def test_eval_step_past_the_end_and_keep_checkpoints_name_their_fields():
    with pytest.raises(SpecError, match=r"eval\.at\[1\]: 200 is past train\.steps=100"):
        parse_spec({**BASE, "train": {"steps": 100, "warmup_steps": 5}, "eval": {"at": [0, 200]}})
    with pytest.raises(SpecError, match=r"train\.keep_checkpoints"):
        parse_spec({**BASE, "train": {"keep_checkpoints": 0}})
    assert parse_spec({**BASE, "train": {"keep_checkpoints": "all"}}).train.keep_checkpoints == "all"
