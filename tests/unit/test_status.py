"""`raysweep status`'s sweep line and durations (raysweep.ops.status), on a hand-made frame: the per-trial
figures come from a real sweep in tests/integration/test_sweep.py."""

from __future__ import annotations

import pandas as pd

from raysweep.ops.status import COLUMNS, format_duration, format_status, sweep_line

NAN = float("nan")


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = {"weight_decay": 0.1, "scale": "nano", "seed": 0, "loss": 3.0, "tokens_per_s": 1000.0,
            "trial_retries": 0, "worker_restarts": 0, "preempted": 0, "error": ""}
    return pd.DataFrame([base | row for row in rows], columns=COLUMNS)


def test_the_sweep_eta_spreads_the_work_left_over_the_trials_running_now():
    frame = _frame([
        {"trial_id": "a", "status": "TERMINATED", "last_step": 100, "steps": 100, "eta_s": NAN},
        {"trial_id": "b", "status": "RUNNING", "last_step": 50, "steps": 100, "eta_s": 50.0},   # 1 s a step
        {"trial_id": "c", "status": "RUNNING", "last_step": 80, "steps": 100, "eta_s": 40.0},   # 2 s a step
        {"trial_id": "d", "status": "PENDING", "last_step": NAN, "steps": 100, "eta_s": NAN},  # 1.5 s a step
    ])
    # (50 + 40 + 100 x 1.5) s of work over 2 running trials
    assert sweep_line(frame) == "sweep: 1 of 4 trials done, 2 running, 1 pending, 0 failed; ETA 2m00s"
    table, line = format_status(frame).rsplit("\n", 1)
    header, *rows = table.splitlines()
    assert "eta" in header.split() and "eta_s" not in header.split()  # seconds shown as a duration
    assert [row.split()[header.split().index("eta")] for row in rows] == ["-", "50s", "40s", "-"]
    assert line == sweep_line(frame)


def test_a_finished_sweep_has_no_eta():
    frame = _frame([{"trial_id": "a", "status": "TERMINATED", "last_step": 10, "steps": 10, "eta_s": NAN},
                    {"trial_id": "b", "status": "ERROR", "last_step": 4, "steps": 10, "eta_s": NAN}])
    assert sweep_line(frame) == "sweep: 1 of 2 trials done, 0 running, 0 pending, 1 failed"


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (NAN, 0, 59.4, 61, 3599, 3725)] == ["-", "0s", "59s", "1m01s", "59m59s",
                                                                             "1h02m"]
