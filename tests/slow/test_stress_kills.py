"""Stress run, outside CI (`make stress`, about 15 minutes here): 20 outside SIGKILLs of Train
workers at random moments over one 4-trial sweep, then every trial's shards compared with an
uninterrupted run of the same spec. Prints one line per kill and a summary; fails if any trial
that was hit differs or `raysweep verify` finds a problem.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_spec
from tests.integration.test_faults import (SEED, _rows, attempt_log, fault_spec, finish, start_sweep,
                                           train_workers)

pytestmark = [pytest.mark.ray, pytest.mark.stress]

WEIGHT_DECAYS = [0.0, 0.1, 0.3, 1.0]
KILLS_PER_TRIAL = 5  # each trial's first 5 worker groups die; the 6th finishes
KILLS = KILLS_PER_TRIAL * len(WEIGHT_DECAYS)


def stress_spec(storage: Path) -> dict:
    spec = fault_spec(storage)
    spec["grid"]["weight_decay"] = WEIGHT_DECAYS
    spec["failure"]["max_failures"] = KILLS_PER_TRIAL + 5
    spec["resources"]["max_concurrent_trials"] = 1
    return spec


def trial_ids() -> list[str]:
    return [f"nano-wd{wd!r}-s0" for wd in WEIGHT_DECAYS]


def test_twenty_random_worker_kills_over_one_sweep(tmp_path):
    rng = random.Random(SEED)
    reference_root = tmp_path / "uninterrupted"
    reference_root.mkdir()
    run_cli(["sweep", str(write_spec(reference_root / "spec.yaml", stress_spec(reference_root / "runs")))],
            reference_root, timeout=1200)
    reference = reference_root / "runs" / "faults"

    spec_path = write_spec(tmp_path / "spec.yaml", stress_spec(tmp_path / "runs"))
    sweep_dir = tmp_path / "runs" / "faults"
    process = start_sweep(spec_path, tmp_path)
    seen: dict[str, int] = {}
    kills: list[tuple[str, int, float]] = []
    while process.poll() is None and len(kills) < KILLS:
        for trial in trial_ids():
            n = len(attempt_log(sweep_dir, trial))
            if n > seen.get(trial, 0):
                seen[trial] = n
                if n <= KILLS_PER_TRIAL:
                    delay = rng.uniform(0.0, 1.5)
                    time.sleep(delay)
                    workers = train_workers(process.pid)
                    if workers:
                        rng.choice(workers).kill()
                        kills.append((trial, n, delay))
                        print(f"kill {len(kills):2d}: {trial} attempt {n}, {delay:.2f} s after it started", flush=True)
        time.sleep(0.1)
    finish(process, timeout=1800)

    identical, hit = [], sorted({trial for trial, *_ in kills})
    for trial in trial_ids():
        where = f"trial_id = '{trial}'"
        order = "split, step, seq_id, pos"
        got = _rows(sweep_dir, f"tokens WHERE {where}", order)
        want = _rows(reference, f"tokens WHERE {where}", order)
        if len(got) == len(want) > 0 and got.equals(want):
            identical.append(trial)
        restarts = [a["start_step"] for a in attempt_log(sweep_dir, trial)]
        print(f"{trial}: worker groups started at steps {restarts}; "
              f"{'identical' if trial in identical else 'DIFFERENT'}")
    verify = run_cli(["verify", str(sweep_dir)], tmp_path, check=False)
    kills_in_identical = sum(1 for trial, *_ in kills if trial in identical)
    print(f"seed {SEED}: {len(kills)} kills over {len(hit)} trials; {kills_in_identical}/{len(kills)} kills "
          f"resumed to identical shards; verify: {verify.stdout.strip().splitlines()[-1]}")
    assert len(kills) == KILLS, f"the sweep finished after {len(kills)} kills"
    assert identical == trial_ids()
    assert verify.returncode == 0, verify.stdout
