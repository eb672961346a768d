"""Fault injection with real processes: SIGKILLed workers, a preempted (drained) node and a removed one, a
Ctrl-C'd driver (a SIGKILLed driver: tests/integration/test_sweep.py::test_killed_sweep_finishes_with_resume).

Each run must end with per-token shards identical (same rows, same float32 losses) to an
uninterrupted run of the same spec, and `raysweep verify` must pass. Kills land at random
moments of training, so at random steps: mid-step, mid-eval (shard writes) or mid-checkpoint.
The random seed is printed with every failure; set RAYSWEEP_FAULT_SEED to replay it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from raysweep.catalog.connect import connect
from tests.conftest import (cli_env, kill_ray_started_with, kill_session_and_its_ray, ray_cli, run_cli,
                            tiny_spec_dict, write_spec)

pytestmark = pytest.mark.ray

TRIAL = "nano-wd1.0-s0"
SEED = int(os.environ.get("RAYSWEEP_FAULT_SEED", time.time_ns() % 2**31))


WORKERS = 1  # the CPU default: a trial is one worker, Train restarts it alone


def fault_spec(storage: Path) -> dict:
    """One trial, long enough to be killed several times, checkpointing often."""
    return tiny_spec_dict(storage, name="faults", grid={"weight_decay": [1.0]},
                          train={"steps": 400, "checkpoint_every": 10},
                          eval={"every": 100},
                          failure={"max_failures": 10, "trial_max_failures": 2},
                          resources={"workers_per_trial": WORKERS})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_ray) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    run_cli(["sweep", str(write_spec(root / "spec.yaml", fault_spec(root / "runs")))], root, env=shared_ray)
    return root / "runs" / "faults"


def _rows(sweep_dir: Path, view: str, order: str):
    with connect([sweep_dir]) as con:
        return con.execute(f"SELECT * FROM {view} ORDER BY {order}").df()


def assert_same_results(got: Path, want: Path, tmp_path: Path) -> None:
    """Identical token and embedding-norm shards, and a clean `raysweep verify`."""
    tokens_order = "split, trial_id, step, seq_id, pos"
    got_tokens, want_tokens = _rows(got, "tokens", tokens_order), _rows(want, "tokens", tokens_order)
    assert len(got_tokens) == len(want_tokens) > 0
    assert got_tokens.equals(want_tokens), f"token shards differ (seed {SEED})"
    assert _rows(got, "embeddings", "step, token_id").equals(_rows(want, "embeddings", "step, token_id"))
    verify = run_cli(["verify", str(got)], tmp_path, check=False)
    assert verify.returncode == 0, f"verify failed (seed {SEED}):\n{verify.stdout}"


def start_sweep(spec_path: Path, tmp_path: Path, env: dict | None = None, log_name: str = "sweep.log") -> subprocess.Popen:
    """`raysweep sweep` in its own session, so the test can kill it with everything it started.
    Output goes to a file: a pipe nobody reads fills up and blocks the driver's prints, and with
    them Tune's loop."""
    log = open(tmp_path / log_name, "w")
    process = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "sweep", str(spec_path)],
                               cwd=tmp_path, env=env or cli_env(tmp_path), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = Path(log.name)
    log.close()  # the child holds its own copy
    return process


def output(process: subprocess.Popen) -> str:
    return process.log_path.read_text()[-6000:]


def attempt_log(sweep_dir: Path, trial: str = TRIAL) -> list[dict]:
    """Each worker group so far: rank 0 logs its start step and node once training is about to start."""
    log = sweep_dir / "train" / trial / "attempts.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def attempts(sweep_dir: Path) -> list[int]:
    return [a["start_step"] for a in attempt_log(sweep_dir)]


def wait_for_attempt(sweep_dir: Path, n: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while len(attempts(sweep_dir)) < n:
        assert process.poll() is None, f"sweep exited early (seed {SEED}):\n{output(process)}"
        assert not (sweep_dir / "train" / TRIAL / "complete.json").exists(), \
            f"trial finished before attempt {n} could be interrupted (seed {SEED})"
        assert time.time() < deadline, f"worker group {n} did not start (seed {SEED})"
        time.sleep(0.1)


def status_row(sweep_dir: Path, tmp_path: Path) -> dict:
    """`raysweep status`'s row of the one trial, as column -> value."""
    header, row = run_cli(["status", str(sweep_dir)], tmp_path).stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split()))


def train_workers(root_pid: int) -> list[psutil.Process]:
    """The live Ray Train worker processes under a process (Ray titles them ray::RayTrainWorker...)."""
    found = []
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def finish(process: subprocess.Popen, timeout: float = 400) -> None:
    process.wait(timeout=timeout)
    assert process.returncode == 0, f"sweep exited {process.returncode} (seed {SEED}):\n{output(process)}"


def test_five_worker_sigkills_at_random_steps_resume_identically(uninterrupted, tmp_path):
    """5 times: once a worker group is training, wait a random moment, SIGKILL one of its
    workers from outside. Train restarts the group from the newest complete checkpoint."""
    rng = random.Random(SEED)
    spec_path = write_spec(tmp_path / "spec.yaml", fault_spec(tmp_path / "runs"))
    sweep_dir = tmp_path / "runs" / "faults"
    process = start_sweep(spec_path, tmp_path)
    kills = []
    for attempt in range(1, 6):
        wait_for_attempt(sweep_dir, attempt, process)
        time.sleep(rng.uniform(0.0, 1.5))
        workers = train_workers(process.pid)
        assert len(workers) == WORKERS, f"expected {WORKERS} train worker(s), found {len(workers)} (seed {SEED})"
        victim = rng.choice(workers)
        victim.send_signal(signal.SIGKILL)
        kills.append(victim.pid)
    finish(process)
    started_from = attempts(sweep_dir)
    assert len(started_from) == 6, started_from  # the first group and one restart per kill
    assert started_from == sorted(started_from) and all(s % 10 == 0 for s in started_from)
    row = status_row(sweep_dir, tmp_path)
    assert row["status"] == "TERMINATED" and row["worker_restarts"] == "5", row
    assert_same_results(sweep_dir, uninterrupted, tmp_path)


def test_two_writers_ctrl_c_and_a_torn_checkpoint_then_resume(uninterrupted, tmp_path, shared_ray):
    """Two `raysweep sweep` of one spec started together: one fails at once (exit 2), naming the other as
    the writer, and touches nothing. SIGINT to the other once two checkpoints are marked: Tune stops, the
    command exits 1 naming the trial INTERRUPTED (trials.parquet too, never TERMINATED). Then the newest
    checkpoint's .distcp is truncated (its data lost after its marker was written): `raysweep resume` restarts
    from the checkpoint before it, and the shards equal the uninterrupted run's."""
    spec_path = write_spec(tmp_path / "spec.yaml", fault_spec(tmp_path / "runs"))
    sweep_dir = tmp_path / "runs" / "faults"
    envs = [cli_env(tmp_path), cli_env(tmp_path)]
    processes = [start_sweep(spec_path, tmp_path, env, f"sweep-{i}.log") for i, env in enumerate(envs)]
    try:
        deadline = time.time() + 120
        while all(p.poll() is None for p in processes):
            assert time.time() < deadline, "neither sweep was refused: " + output(processes[0])
            time.sleep(0.1)
        loser = next(i for i, p in enumerate(processes) if p.poll() is not None)
        writer = processes[1 - loser]
        refusal = output(processes[loser]).strip().splitlines()[-1]
        assert processes[loser].returncode == 2, output(processes[loser])
        assert refusal.startswith(f"raysweep sweep: error: {sweep_dir / '.writer.lock'}: the sweep dir is being "
                                  f"written by raysweep sweep (host {socket.gethostname()}, pid {writer.pid},")
        kill_ray_started_with(envs[loser])

        wait_for_attempt(sweep_dir, 1, writer)
        second = sweep_dir / "train" / TRIAL / "step-00000020" / "_COMPLETE"
        while not second.exists():
            assert writer.poll() is None, output(writer)
            assert time.time() < deadline + 180, "no second checkpoint"
            time.sleep(0.05)
        writer.send_signal(signal.SIGINT)
        writer.wait(timeout=180)
    finally:
        for process, env in zip(processes, envs):
            if process.poll() is None:
                kill_session_and_its_ray(process, env)
            kill_ray_started_with(env)  # the embedded Ray a stopped sweep leaves behind
    assert writer.returncode == 1, output(writer)
    assert f"1 of 1 trials did not finish (first: {TRIAL}: INTERRUPTED)" in output(writer).strip().splitlines()[-1]
    trials = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert [(t["trial_id"], t["status"]) for t in trials] == [(TRIAL, "INTERRUPTED")]
    assert status_row(sweep_dir, tmp_path)["status"] == "INTERRUPTED"  # Tune's own state says RUNNING
    assert not (sweep_dir / ".writer.lock").exists()  # released on the way out

    marked = sorted(c.parent for c in (sweep_dir / "train" / TRIAL).glob("step-*/_COMPLETE"))
    assert len(marked) >= 2, marked
    distcp = sorted(marked[-1].glob("*.distcp"))[0]
    distcp.write_bytes(distcp.read_bytes()[:-100])
    before = len(attempts(sweep_dir))
    run_cli(["resume", str(sweep_dir)], tmp_path, env=shared_ray)  # the cluster need not be the one it ran on
    # the resume's first group starts from the checkpoint before the torn one (a later restart may follow)
    assert attempts(sweep_dir)[before] == int(marked[-2].name.removeprefix("step-"))
    assert [t["status"] for t in pq.read_table(sweep_dir / "trials.parquet").to_pylist()] == ["TERMINATED"]
    assert status_row(sweep_dir, tmp_path)["status"] == "TERMINATED"
    assert_same_results(sweep_dir, uninterrupted, tmp_path)


def _node_holding_the_workers(nodes: list) -> object:
    holding = [node for node in nodes if train_workers(node.all_processes["raylet"][0].process.pid)]
    assert len(holding) == 1, f"the trial's workers should be on one node (seed {SEED})"
    return holding[0]


def test_a_preempted_node_then_a_lost_node_mid_training(uninterrupted, tmp_path, monkeypatch):
    """A head (trial drivers only) and three 2-CPU worker nodes. The node running the trial's workers is
    preempted as a spot reclaim does it: drained through Ray's drain API with the preemption reason and a
    deadline, then removed. The group checkpoints at its next report and notes the notice in attempts.jsonl;
    Ray Train restarts it on another node from that checkpoint, charged to max_preemption_failures. Then that
    node is killed without warning: a restart charged to max_failures. One of each is allowed (and no Tune
    retry), so the trial finishes only if the two are counted apart."""
    from ray.cluster_utils import Cluster

    rng = random.Random(SEED + 2)
    env = cli_env(tmp_path)
    # Cluster writes its address to $RAY_TMPDIR/ray/ray_current_cluster (default /tmp/ray, which a
    # fresh machine lacks, and which would point other Ray clients on the machine at this cluster).
    monkeypatch.setenv("RAY_TMPDIR", env["TMPDIR"])
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"])
    os.makedirs(os.path.join(env["TMPDIR"], "ray"), exist_ok=True)
    cluster = Cluster(initialize_head=False)
    try:
        cluster.add_node(num_cpus=0, resources={"trial_driver": 4}, include_dashboard=True, temp_dir=env["TMPDIR"])
        worker_nodes = [cluster.add_node(num_cpus=2) for _ in range(3)]
        cluster.wait_for_nodes()
        spec = fault_spec(tmp_path / "runs")
        spec["failure"] = {"max_failures": 1, "max_preemption_failures": 1, "trial_max_failures": 0}
        spec_path = write_spec(tmp_path / "spec.yaml", spec)
        sweep_dir = tmp_path / "runs" / "faults"
        process = start_sweep(spec_path, tmp_path, {**env, "RAY_ADDRESS": cluster.address})

        wait_for_attempt(sweep_dir, 1, process)
        time.sleep(rng.uniform(0.5, 1.5))
        preempted = _node_holding_the_workers(worker_nodes)
        ray_cli(["drain-node", f"--address={cluster.address}", f"--node-id={preempted.node_id}",
                 "--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=spot instance reclaimed",
                 "--deadline-remaining-seconds=60"], env)
        deadline = time.time() + 60
        while "preemption_notice" not in attempt_log(sweep_dir)[0]:
            assert process.poll() is None, output(process)
            assert time.time() < deadline, f"no preemption notice reached the workers (seed {SEED})"
            time.sleep(0.1)
        cluster.remove_node(preempted, allow_graceful=False)  # the provider reclaims the instance

        wait_for_attempt(sweep_dir, 2, process)
        time.sleep(rng.uniform(0.5, 1.5))
        lost = _node_holding_the_workers([node for node in worker_nodes if node is not preempted])
        cluster.remove_node(lost, allow_graceful=False)
        finish(process)

        log = attempt_log(sweep_dir)
        (survivor,) = [node for node in worker_nodes if node not in (preempted, lost)]
        assert [a["node_id"] for a in log] == [preempted.node_id, lost.node_id, survivor.node_id]
        notice = log[0]["preemption_notice"]
        assert notice["nodes"] == [preempted.node_id]
        # the notice is written once its report's checkpoint is marked; the group trained on until the node went
        # (keep_checkpoints may have dropped that one since), and restarted no earlier
        assert log[1]["start_step"] >= notice["step"]
        assert [("preemption_notice" in a) for a in log] == [True, False, False]
        row = status_row(sweep_dir, tmp_path)
        assert (row["status"], row["worker_restarts"], row["preempted"], row["trial_retries"]) == (
            "TERMINATED", "2", "1", "0"), row
        assert_same_results(sweep_dir, uninterrupted, tmp_path)
    finally:
        cluster.shutdown()
