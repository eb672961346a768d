"""The CLI's error path beyond docs/errors.md (tests/unit/test_bad_input.py): sweep dirs."""

import subprocess
import sys

import pytest
import yaml

from raysweep.run.preflight import check_existing_sweep
from raysweep.spec import SweepDirError, parse_spec, spec_to_yaml


def raysweep(*args, cwd):
    return subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_report_on_a_directory_that_is_not_a_sweep(tmp_path):
    result = raysweep("report", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a finished sweep directory" in result.stderr


def test_resume_without_a_sweep(tmp_path):
    result = raysweep("resume", str(tmp_path / "nothing"), cwd=tmp_path)
    assert result.returncode == 2 and "not a sweep directory" in result.stderr


def test_status_of_a_directory_that_never_ran(tmp_path):
    result = raysweep("status", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no Tune experiment state" in result.stderr


def test_existing_sweep_dir_resumes_extends_or_refuses(tmp_path):
    """same spec → resume; only the grid or execution options differ → continue; anything else → refused,
    naming fields."""
    spec = parse_spec({"name": "s", "storage": str(tmp_path)})
    assert check_existing_sweep(spec) is False  # nothing there yet
    spec.layout.root.mkdir(parents=True)
    spec.layout.spec_file.write_text(spec_to_yaml(spec))
    assert check_existing_sweep(spec) is True
    wider = parse_spec(yaml.safe_load(spec_to_yaml(spec)), ("grid.weight_decay=[0.0, 0.1, 1.0]",))
    assert check_existing_sweep(wider) is False
    compiled = parse_spec(yaml.safe_load(spec_to_yaml(spec)), ("train.compile=true", "train.activation_checkpointing=1"))
    assert check_existing_sweep(compiled) is False  # how steps run, not what they compute: continues
    other = parse_spec(yaml.safe_load(spec_to_yaml(spec)), ("train.lr=0.01", "data.seq_len=64"))
    with pytest.raises(SweepDirError, match=r"data.seq_len: 128 -> 64; train.lr: 0.003 -> 0.01"):
        check_existing_sweep(other)
    moved = tmp_path / "elsewhere" / "renamed"  # a sweep dir moved and renamed is the same sweep
    moved.parent.mkdir()
    spec.layout.root.rename(moved)
    assert check_existing_sweep(parse_spec({"name": "renamed", "storage": str(moved.parent)})) is True
