"""Shared fixtures: a tiny spec on a small slice of the real bundled corpus, and a CLI runner
that gives every Ray run its own storage and temp dir."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_spec_dict(storage: Path, name: str = "t", **sections) -> dict:
    """A spec that trains in seconds, one worker per trial (the CPU default): 120 real reviews,
    32-token sequences."""
    spec = {
        "name": name,
        "storage": str(storage),
        "data": {"corpus": "rotten-tomatoes", "max_train_docs": 120, "seq_len": 32,
                 "tokenizer": {"kind": "bpe", "vocab_size": 512, "min_frequency": 2}},
        "train": {"steps": 40, "batch_size": 4, "warmup_steps": 5, "checkpoint_every": 20},
        "eval": {"every": 20, "n_train_sequences": 12, "n_heldout_sequences": 10, "batch_size": 4},
        "grid": {"weight_decay": [0.0, 1.0], "scale": ["nano"], "seed": [0]},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
        "failure": {"max_failures": 2, "trial_max_failures": 1},
    }
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def cli_env(tmp_root: Path) -> dict:
    """Own TMPDIR per run (Ray's sockets and lock files live there; keep the path short)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    return {**os.environ, "TMPDIR": str(ray_tmp), "RAY_DEDUP_LOGS": "0",
            "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            # ray.train.report returns when Train's controller next polls (every 2 s by default): the
            # tests' trials report every few steps, so that wait was most of their wall time.
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def _belongs_to(proc: Path, tmpdir: str) -> bool:
    """Started with this TMPDIR, or holding a file under it (Ray's helpers wipe their environ
    when they set their process title, but keep their logs open in the session dir)."""
    if f"TMPDIR={tmpdir}".encode() in (proc / "environ").read_bytes().split(b"\0"):
        return True
    return any(os.readlink(fd).startswith(tmpdir + "/") for fd in (proc / "fd").iterdir())


def kill_ray_started_with(env: dict) -> None:
    """SIGKILL every process of a test's own Ray (all of them name its TMPDIR), and nothing else."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if _belongs_to(proc, env["TMPDIR"]):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:  # gone already, or not ours to read
            pass


def kill_session_and_its_ray(process: subprocess.Popen, env: dict) -> None:
    """SIGKILL a `raysweep` process started with start_new_session, its whole session, then any
    Ray process that escaped the session."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    kill_ray_started_with(env)


def run_cli(args: list[str], tmp_root: Path, timeout: float = 600, check: bool = True,
            env: dict | None = None):
    """`raysweep ARGS` in a subprocess with its own TMPDIR; `env` adds variables."""
    result = subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=tmp_root,
                            env={**cli_env(tmp_root), **(env or {})}, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"raysweep {' '.join(args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return result


def run_cli_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """`raysweep ARGV` in this process: (exit code, stdout, stderr)."""
    from raysweep import cli

    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_cli(args: list[str], env: dict) -> None:
    """`ray ARGS` from this venv, failing the test with Ray's own output."""
    ray = Path(sys.executable).parent / "ray"
    result = subprocess.run([str(ray), *args], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"ray {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def ray_head(tmp_root: Path, extra_env: dict | None = None):
    """A one-node Ray cluster (`ray start --head`, the whole machine, token auth, room for trial drivers)
    whose processes see `extra_env`: yields the env that points `raysweep` at it (RAY_ADDRESS, token)."""
    env = cli_env(tmp_root) | (extra_env or {}) | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = free_port()
    try:
        # Its own agent port: the default one would be held when a test starts another cluster with a Jobs
        # API, whose head agent then never comes up ("No available agent to submit job").
        ray_cli(["start", "--head", f"--port={port}", f"--num-cpus={os.cpu_count()}",
                 '--resources={"trial_driver": 64}', "--include-dashboard=false", "--disable-usage-stats",
                 f"--dashboard-agent-listen-port={free_port()}"], env)
        yield {key: env[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")} | {"RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        # Not `ray stop`: it stops every Ray on the machine, a developer's running sweep included.
        kill_ray_started_with(env)


@pytest.fixture(scope="session")
def shared_ray(tmp_path_factory) -> dict:
    """The Ray that the sweeps with nothing special to ask of Ray share, as a user's sweeps share a
    cluster. Starting Ray is seconds of CPU per sweep on 2 cores; the tests that kill or stop Ray, or
    need Ray's workers to see their own environment, start their own."""
    yield from ray_head(tmp_path_factory.getbasetemp())


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


def readme_python_snippet() -> str:
    """The README's ```python block, as a reader would paste it."""
    text = (REPO / "README.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, shared_ray) -> tuple[Path, subprocess.CompletedProcess]:
    """The uninterrupted yardstick sweep (2 trials of the tiny spec, named `ref`), run by the README's
    Python snippet as written on the shared Ray, with examples/demo.yaml standing for the tiny spec:
    (its dir, the run). Built once per test run: the first pytest-xdist worker to ask builds it, under a lock in
    the run's shared base dir, and the other reuses it (the tests read it; they change a copy), which saves a
    minute of both cores."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, record = shared / "reference", shared / "reference.json"
    with FileLock(str(shared / "reference.lock")):
        if not record.exists():
            shutil.rmtree(root, ignore_errors=True)
            (root / "examples").mkdir(parents=True)
            write_spec(root / "examples" / "demo.yaml", tiny_spec_dict("runs", name="ref"))
            result = subprocess.run([sys.executable, "-c", readme_python_snippet()], cwd=root,
                                    env=cli_env(root) | shared_ray, capture_output=True, text=True, timeout=600)
            record.write_text(json.dumps([result.args, result.returncode, result.stdout, result.stderr]))
    result = subprocess.CompletedProcess(*json.loads(record.read_text()))
    assert result.returncode == 0, result.stderr[-4000:]
    return root / "runs" / "ref", result


@pytest.fixture(scope="session")
def reference(reference_run) -> Path:
    return reference_run[0]
