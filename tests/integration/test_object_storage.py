"""A sweep whose storage is `s3://`, end to end, against a real S3 API: moto's server on 127.0.0.1
(what Ray's own tests use), started by the test as its own process. Configured the way a user
configures S3 (AWS_ENDPOINT_URL and credentials in the environment), so Ray's pyarrow filesystem,
s3fs and boto3 all reach the same server.

The S3 sweep crashes one worker group mid-trial (restart from a checkpoint read back from S3) and
must still write the same token and embedding shards, byte for byte, as the same spec run on local
disk; the catalog built over S3 must answer the same SQL as the local one."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port, ray_head, run_cli, run_cli_in_process, tiny_spec_dict, write_spec

pytestmark = pytest.mark.ray

BUCKET = "raysweep-test"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """Environment variables that point AWS clients at a fresh moto server with one bucket."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        client = _client(env)
        for _ in range(150):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # the server is still starting
                time.sleep(0.2)
        else:
            raise AssertionError(f"moto server did not start:\n{log.read_text()[-3000:]}")
        yield env
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_ray(s3_env, tmp_path_factory) -> dict:
    """A Ray head whose workers, like the driver, reach S3 through the environment: env for `raysweep`."""
    for ray_env in ray_head(tmp_path_factory.mktemp("s3ray"), s3_env):
        yield s3_env | ray_env


def _client(env: dict):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _keys(env: dict, prefix: str) -> list[str]:
    pages = _client(env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", []))


def _read(env: dict, key: str) -> bytes:
    return _client(env).get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _manifests(files: dict[str, bytes]) -> dict[str, dict]:
    """relative shard manifest path -> {rows, sha256}, token, rollup and embedding shards only (training
    metrics carry wall-clock times)."""
    return {name: json.loads(data) for name, data in files.items()
            if name.startswith(("shards/tokens/", "shards/token_types/", "shards/embeddings/"))
            and name.endswith(".manifest.json")}


def test_sweep_on_s3_matches_the_same_sweep_on_local_disk(s3_ray, reference, tmp_path, capsys):
    """The local twin is the reference sweep (the same tiny spec; its nano-wd1.0-s0 trial is this one).
    The injected crash: rank 0 dies at step 30, Train restarts the group from the step-20 checkpoint,
    and the shards still equal the uninterrupted run's, byte for byte."""
    s3_env = s3_ray
    one_trial = {"weight_decay": [1.0], "scale": ["nano"], "seed": [0]}
    trial_only = "WHERE trial_id = 'nano-wd1.0-s0'"

    s3_spec = tiny_spec_dict(f"s3://{BUCKET}/sweeps", name="objstore", grid=one_trial,
                             failure={"inject_crash_at_step": 30})  # restart from the S3 checkpoint at 20
    write_spec(tmp_path / "s3.yaml", s3_spec)
    swept = run_cli(["sweep", str(tmp_path / "s3.yaml")], tmp_path, env=s3_env)
    sweep_uri = f"s3://{BUCKET}/sweeps/objstore"
    assert f"sweep dir: {sweep_uri}" in swept.stdout
    assert not (tmp_path / "s3:").exists()  # nothing went to a local dir named after the scheme

    prefix = "sweeps/objstore/"
    keys = _keys(s3_env, prefix)
    for expected in ("spec.yaml", "trials.parquet", "catalog.duckdb"):
        assert expected in keys
    assert ".writer.lock" not in keys  # taken by a conditional PUT, deleted when the sweep ended
    assert any(k.startswith("data/") and k.endswith("/meta.json") for k in keys)
    assert any(k.startswith("tune/experiment_state-") for k in keys)
    # (pyarrow, under Ray, also writes empty "dir/" marker objects: "train/" has no trial name)
    trial_ids = sorted({k.split("/")[1] for k in keys if k.startswith("train/") and k.split("/")[1]})
    assert trial_ids == ["nano-wd1.0-s0"]
    for trial_id in trial_ids:
        assert f"train/{trial_id}/step-00000040/_COMPLETE" in keys
        assert f"train/{trial_id}/complete.json" in keys
        attempts = [json.loads(line) for line in
                    _read(s3_env, f"{prefix}train/{trial_id}/attempts.jsonl").decode().splitlines()]
        assert [a["start_step"] for a in attempts] == [0, 20], attempts  # crashed at 30, resumed from 20
        assert f"train/{trial_id}/.crash-injected-at-30" in keys

    stored = {k: _read(s3_env, prefix + k) for k in keys if k.endswith(".manifest.json")}
    local = {str(p.relative_to(reference)): p.read_bytes() for p in reference.rglob("_*.manifest.json")
             if "trial=nano-wd1.0-s0" in str(p)}
    s3_manifests, local_manifests = _manifests(stored), _manifests(local)
    assert len(s3_manifests) == 2 * 2 * (1 + 1) + 2  # steps x splits x (ranks + the rollup) + embeddings
    assert s3_manifests == local_manifests

    verify = run_cli(["verify", sweep_uri], tmp_path, env=s3_env, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    query = ("SELECT split, trial_id, step, count(*) AS n, sum(loss) AS loss, sum(correct::INT) AS correct "
             f"FROM tokens {trial_only} GROUP BY ALL ORDER BY ALL")
    on_s3 = run_cli(["sql", sweep_uri, query], tmp_path, env=s3_env).stdout
    on_disk = run_cli_in_process(["sql", str(reference), query], capsys)[1]
    assert on_s3 == on_disk
    rows = sum(m["rows"] for name, m in s3_manifests.items() if name.startswith("shards/tokens/"))
    assert f"{rows}" in run_cli(["sql", sweep_uri, "SELECT count(*) AS n FROM tokens"], tmp_path,
                                env=s3_env).stdout
    report = run_cli(["report", sweep_uri], tmp_path, env=s3_env).stdout
    def wd1_rows(text: str) -> list[list[str]]:  # cells, not lines: column widths depend on the other rows
        return [line.split() for line in text.splitlines() if line.split()[2:3] == ["1.0000"]]

    assert len(wd1_rows(report)) == 2
    assert wd1_rows(report) == wd1_rows(run_cli_in_process(["report", str(reference)], capsys)[1])
    header, row, sweep_line = run_cli(["status", sweep_uri], tmp_path, env=s3_env).stdout.splitlines()
    row = dict(zip(header.split(), row.split()))
    assert (row["trial_id"], row["status"], row["last_step"]) == ("nano-wd1.0-s0", "TERMINATED", "40"), row
    assert (row["worker_restarts"], row["trial_retries"]) == ("1", "0"), row
    assert sweep_line == "sweep: 1 of 1 trials done, 0 running, 0 pending, 0 failed"
    # Tune restores the finished experiment from the bucket; nothing reruns, the report is the same.
    resumed = run_cli(["resume", sweep_uri], tmp_path, env=s3_env)
    assert report.strip() in resumed.stdout
    assert _keys(s3_env, prefix + "shards/") == [k[len("shards/"):] for k in keys if k.startswith("shards/")]


def test_missing_bucket_is_one_line_before_any_work(s3_env, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict("s3://no-such-bucket/sweeps", name="nb"))
    result = run_cli(["sweep", str(spec)], tmp_path, env=s3_env, check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("raysweep sweep: error: storage: cannot write to s3://no-such-bucket/sweeps/nb")
    assert "Traceback" not in result.stderr
    buckets = [b["Name"] for b in _client(s3_env).list_buckets()["Buckets"]]
    assert buckets == [BUCKET]  # no bucket was created by mistake
