"""A trial's `attempts.jsonl`: one line per worker-group start (from which step, on which node, how long Ray took
to start it), and on an attempt's line the preemption notice it received, if any.

Read and rewritten whole, not appended: object stores cannot append, and only rank 0 of the one live worker group
of a trial ever writes it."""

from __future__ import annotations

import json
import time

import ray

from raysweep.store.layout import SweepLayout
from raysweep.store.storage import atomic_write_text, ensure_dir


def log_attempt(layout: SweepLayout, trial_id: str, start_step: int, **facts) -> None:
    log = layout.attempts_file(trial_id)
    ensure_dir(log.parent)
    record = {"start_step": start_step, "time": time.time(),
              "node_id": ray.get_runtime_context().get_node_id(), **facts}
    earlier = log.read_text() if log.exists() else ""
    atomic_write_text(log, earlier + json.dumps(record) + "\n")


def note_preemption(layout: SweepLayout, trial_id: str, step: int, nodes: list[str], deadline_ms) -> None:
    """On this attempt's line (the last): Ray said these nodes will be preempted; the report at `step` checkpointed."""
    log = layout.attempts_file(trial_id)
    lines = log.read_text().splitlines()
    current = json.loads(lines[-1]) | {"preemption_notice": {"step": step, "nodes": nodes, "deadline_ms": deadline_ms,
                                                             "time": time.time()}}
    atomic_write_text(log, "\n".join(lines[:-1] + [json.dumps(current)]) + "\n")
