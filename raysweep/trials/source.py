"""Where a sweep's trials come from: one interface over the grid, the Optuna search and checkpoints made elsewhere.

The run layer (Tuner, driver, trials table, verify) asks a source for Tune's param_space and search
options, for the point a Tune config stands for, and for what a trial reports to Tune; it never asks
which kind of source it holds. `trial_source(spec)` picks the source named by `spec.search`.
"""

from __future__ import annotations

import json
from typing import Callable

from raysweep.spec.schema import SweepSpec
from raysweep.store.storage import atomic_write_text, ensure_dir
from raysweep.trials.point import TrialPoint

# Spec fields that change how a step runs, not what it computes (the same losses up to float
# rounding: tests/unit/test_fsdp.py), so a grid may continue under other values; and `cost`, which
# only `raysweep plan` reads.
EXECUTION_ONLY = ("train.compile", "train.activation_checkpointing", "train.keep_checkpoints", "cost.")


class TrialSource:
    """The trials of one sweep. Subclasses: raysweep.trials.grid.GridSource, raysweep.trials.optuna.OptunaSource,
    raysweep.trials.checkpoints.CheckpointSource."""

    # Spec field prefixes that may change between runs of one sweep dir (the rest must stay equal).
    extensible_prefixes: tuple[str, ...] = ()
    # Its trials train (a model per trial, checkpointed); False: they score checkpoints made elsewhere.
    trains = True
    # Its trials report their `trial_objectives` (a search's): the driver then builds the scorer
    # (raysweep.run.driver.TrialObjectives) that train_callbacks and final_report receive.
    reports_objectives = False

    def __init__(self, spec: SweepSpec):
        self.spec = spec

    def param_space(self) -> dict:
        """Ray Tune's param_space."""
        raise NotImplementedError

    def tune_options(self) -> dict:
        """Extra `tune.TuneConfig` arguments (a search algorithm, a sample count)."""
        return {}

    def point_of(self, config: dict) -> TrialPoint:
        """The trial a Tune trial config stands for."""
        raise NotImplementedError

    def points(self) -> list[TrialPoint]:
        """Every trial of the sweep known so far (verify and the exit status check these)."""
        raise NotImplementedError

    def bounding_points(self) -> list[TrialPoint]:
        """Points at which every spec check that needs the data must hold: the grid, or a search box's corners."""
        raise NotImplementedError

    def data_configs(self) -> dict:
        """The data settings of each data dir the trials read, by the `data_slot` of their points."""
        from raysweep.trials.point import data_config, vocab_axis

        return {v: data_config(self.spec, v) for v in vocab_axis(self.spec)}

    def eval_steps(self, point) -> list[int]:
        """Steps at which the point's trial writes token shards."""
        return self.spec.eval_steps()

    def report_steps(self, point) -> list[int]:
        """Steps at which it reports (and writes a train-metrics chunk): evals and checkpoints after the
        first update (step 0's eval has no training metrics to report)."""
        return sorted((set(self.spec.eval_steps()) | set(self.spec.checkpoint_steps())) - {0})

    def final_checkpoint_step(self, point) -> int | None:
        """The step of the checkpoint a finished trial leaves (None: it leaves none)."""
        return self.spec.train.steps

    def train_callbacks(self, objectives: Callable[[int | None], dict] | None) -> list:
        """Ray Train callbacks of each trial's TorchTrainer: Tune sees every eval's report."""
        from ray.tune.integration.ray_train import TuneReportCallback

        return [TuneReportCallback()]

    def final_report(self, trial: TrialPoint, objectives: Callable[[int | None], dict] | None,
                     final: dict) -> dict | None:
        """What a finished trial's driver reports to Tune itself (None: Tune saw its reports already).
        `objectives()` runs the `trial_objectives` query on the trial's final shards."""
        return None

    def pruned(self, last_result: dict | None) -> bool:
        """Whether Tune's scheduler stopped the trial whose last result this is, before its end."""
        return False

    def mutable_prefixes(self) -> tuple[str, ...]:
        return (*self.extensible_prefixes, *EXECUTION_ONLY)

    def extension_problems(self, old: dict) -> list[str]:
        """Why this spec cannot continue the sweep dir's earlier one (`old`: its dump), beyond the fields
        `mutable_prefixes` leaves free: each a `field: old -> new` line."""
        return []

    def record(self, trial: TrialPoint, point_file) -> None:
        """The point a driver runs, written before training: a search's trials are the points recorded."""
        ensure_dir(point_file.parent)
        atomic_write_text(point_file, trial.model_dump_json())


def read_point(point_file) -> TrialPoint:
    return TrialPoint.model_validate(json.loads(point_file.read_text()))


def trial_source(spec: SweepSpec) -> TrialSource:
    from raysweep.trials.checkpoints import CheckpointSource
    from raysweep.trials.grid import GridSource
    from raysweep.trials.optuna import OptunaSource

    return {"grid": GridSource, "optuna": OptunaSource, "checkpoints": CheckpointSource}[spec.search](spec)
