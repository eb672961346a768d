"""Sweeps as Ray Jobs on a running cluster: `raysweep submit`, `raysweep logs`, and the job
half of `raysweep status`, all through Ray's Jobs API (the dashboard's HTTP address).

The job runs `raysweep sweep spec.yaml` on the head (it asks for the head-only `trial_driver`
resource, so a lost spot node never takes the sweep driver with it). The spec travels as the
job's working_dir; raysweep itself must be installed on the nodes (the cluster configs do it).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

import yaml
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from raysweep.ops.cluster import DRIVER_RESOURCE
from raysweep.errors import first_line
from raysweep.spec.errors import SpecError
from raysweep.spec.load import apply_override, parse_spec, read_spec_file
from raysweep.data.corpus import is_local_file
from raysweep.store.storage import is_remote
from raysweep.store.writer_lock import check_not_locked

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
JOB_ENV = "RAYSWEEP_JOB"  # set in a submitted sweep's driver: its job id
AGENT_WAIT_S = 60
SPEC_NAME = "spec.yaml"


class JobError(ValueError):
    """The Jobs API cannot be reached or does not know the job; the message says what to do."""


def jobs_address(address: str | None) -> str:
    """As Ray's own `ray job` CLI: --address, else RAY_API_SERVER_ADDRESS, else the local dashboard."""
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    url = jobs_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # ConnectionError, or a RuntimeError wrapping it
        raise JobError(f"--address: cannot reach Ray's Jobs API at {url} ({first_line(exc)}); "
                       "start the cluster, or forward its dashboard with `ray dashboard CLUSTER.yaml`") from None


def _spec_for_cluster(spec_path: Path, overrides: tuple[str, ...]) -> dict:
    """The spec with overrides applied, validated here; `storage` must mean the same on the cluster."""
    raw = read_spec_file(spec_path)
    spec = parse_spec(raw, overrides, source=str(spec_path))  # every spec error now, not in the job
    if raw.get("storage") and (is_remote(spec.layout.root) or spec.layout.root.exists()):
        check_not_locked(spec.layout)  # a sweep running there now: fail here, not in the job (which takes the lock)
    for assignment in overrides:
        apply_override(raw, assignment)
    data = raw.get("data") or {}
    paths = {"storage": raw.get("storage"), "data.corpus": data.get("corpus"),
             "data.tokenizer.path": (data.get("tokenizer") or {}).get("path")}
    for field, value in paths.items():
        if value is None or not is_local_file(str(value)) or (field == "storage" and "://" in str(value)):
            continue  # named corpora, hub datasets and buckets mean the same on every node
        if not Path(str(value)).is_absolute():
            raise SpecError([f"{field}: {value!r} is relative, which means nothing on the cluster (the job "
                             "carries only the spec); use an absolute path every node mounts"
                             + (", or leave it out to use the cluster's RAYSWEEP_STORAGE" if field == "storage"
                                else "")], str(spec_path))
    return raw


def submit(spec_path: Path, overrides: tuple[str, ...], address: str | None) -> str:
    """Submit the sweep as a Ray Job; returns the job id."""
    raw = _spec_for_cluster(Path(spec_path), overrides)
    client = _client(address)
    job_id = f"raysweep-{raw['name']}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="raysweep-job-") as working_dir:
        (Path(working_dir) / SPEC_NAME).write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            _submit_when_agent_is_up(client, job_id, working_dir, str(raw["name"]))
        except RuntimeError as exc:
            raise JobError(f"--address: the Jobs API at {jobs_address(address)} refused the sweep "
                           f"({first_line(exc)})") from None
    return job_id


def _agent_not_up(exc: BaseException) -> bool:
    """A cluster that has just started answers before its job agent is up."""
    return isinstance(exc, RuntimeError) and "No available agent" in str(exc)


@retry(retry=retry_if_exception(_agent_not_up), wait=wait_fixed(2), stop=stop_after_delay(AGENT_WAIT_S), reraise=True)
def _submit_when_agent_is_up(client, job_id: str, working_dir: str, sweep_name: str) -> None:
    client.submit_job(
        entrypoint=f"raysweep sweep {SPEC_NAME}",
        submission_id=job_id,
        runtime_env={"working_dir": working_dir, "env_vars": {
            "TOKENIZERS_PARALLELISM": "false", JOB_ENV: job_id,
            **{k: v for k, v in os.environ.items() if k == "RAYSWEEP_TRACEBACK"}}},
        entrypoint_resources={DRIVER_RESOURCE: 1},
        metadata={"raysweep_sweep": sweep_name},
    )


def job_status(job_id: str, address: str | None) -> str:
    client = _client(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as exc:
        raise JobError(f"{job_id}: no such job at {jobs_address(address)} ({first_line(exc)}); "
                       "`ray job list` shows the cluster's jobs") from None
    message = f" ({info.message})" if info.message else ""
    return f"{job_id}: {info.status}{message}"


def job_logs(job_id: str, address: str | None, follow: bool) -> None:
    client = _client(address)
    job_status(job_id, address)  # an unknown id: a clear error, not the HTTP client's

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        if follow:
            asyncio.run(tail())
        else:
            print(client.get_job_logs(job_id), end="")
    except Exception as exc:  # the Jobs API went away mid-stream
        raise JobError(f"{job_id}: reading the log from {jobs_address(address)} failed "
                       f"({first_line(exc)})") from None
