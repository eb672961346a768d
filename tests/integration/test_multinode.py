"""A real multi-node Ray cluster on this machine: a head (`ray start --head`, drivers only) and two
worker raylets (`ray start --address`, 2 CPUs each), all separate processes with token auth on.
`raysweep submit` sends a 2-trial sweep through the Jobs API; each trial's workers must land on a
different worker node (as recorded in the trial's attempts.jsonl), and the results be complete."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import cli_env, free_port, kill_ray_started_with, ray_cli, run_cli, tiny_spec_dict, write_spec

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(tmp_path):
    """(env with the token, Jobs API address, GCS address) of a head + 2 worker raylets."""
    env = cli_env(tmp_path)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAYSWEEP_TRACEBACK="1",
               PATH=f"{BIN}:{env.get('PATH', '')}")  # nodes have raysweep on PATH, as on a cluster
    gcs, dashboard = free_port(), free_port()
    try:
        # Every node its own agent port: the Jobs API needs the head's agent, which never comes up when another
        # Ray on this machine (a parallel test's, a developer's sweep) holds the default port.
        ray_cli(["start", "--head", f"--port={gcs}", "--num-cpus=0", "--resources={\"trial_driver\": 8}",
              "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
              f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"], env)
        for _ in range(2):
            ray_cli(["start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                     f"--dashboard-agent-listen-port={free_port()}"], env)
        yield env, f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}"
    finally:
        # Not `ray stop`: it stops every Ray on the machine, a developer's running sweep included.
        kill_ray_started_with(env)


def _worker_node_ids(env: dict, gcs: str) -> set[str]:
    probe = ("import json, ray; ray.init(address='%s', logging_level='ERROR'); "
             "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')]))" % gcs)
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_submitted_sweep_spreads_trials_over_worker_nodes(cluster, tmp_path):
    env, address, gcs = cluster
    workers = _worker_node_ids(env, gcs)
    assert len(workers) == 2
    # one worker of 2 CPUs per trial, on 2-CPU nodes: each trial fills a node
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(tmp_path / "shared", name="multi",
                                                             resources={"cpus_per_worker": 2}))

    submitted = subprocess.run([sys.executable, "-m", "raysweep.cli", "submit", str(spec), "--address", address],
                               env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.strip()
    assert job_id.startswith("raysweep-multi-")

    deadline, state = time.time() + 600, ""
    while time.time() < deadline:
        status = subprocess.run([sys.executable, "-m", "raysweep.cli", "status", job_id, "--address", address],
                                env=env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr[-2000:]
        state = status.stdout.split(":", 1)[1].split()[0]
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = subprocess.run([sys.executable, "-m", "raysweep.cli", "logs", job_id, "--address", address],
                          env=env, capture_output=True, text=True, timeout=120).stdout
    assert state == "SUCCEEDED", logs[-5000:]
    assert "balanced_loss" in logs  # the driver printed the report table

    sweep_dir = tmp_path / "shared" / "multi"
    trials = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert sorted(t["status"] for t in trials) == ["TERMINATED", "TERMINATED"]
    nodes_by_trial = {}
    for trial in trials:
        log = sweep_dir / "train" / trial["trial_id"] / "attempts.jsonl"
        nodes_by_trial[trial["trial_id"]] = {json.loads(l)["node_id"] for l in log.read_text().splitlines()}
    assert all(len(nodes) == 1 for nodes in nodes_by_trial.values()), nodes_by_trial
    assert set().union(*nodes_by_trial.values()) == workers, nodes_by_trial  # one trial per worker node
    verify = run_cli(["verify", str(sweep_dir)], tmp_path, check=False)
    assert verify.returncode == 0, verify.stdout
