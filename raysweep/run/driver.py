"""[2] The trial driver: the Tune function trainable that runs one trial's Ray Train TorchTrainer.

Three layers, as in Ray's Train/Tune interop guide:
  [1] `train_loop_per_worker` (raysweep.train.loop): one worker of a trial.
  [2] `run_trial` (here): builds a TorchTrainer named after the trial id and fits it.
  [3] `run_sweep` / `resume_sweep` (raysweep.run.tuner): the Tuner over the trial source's points.
"""

from __future__ import annotations

import json
import time

from ray import tune
from ray.train import CheckpointConfig
from ray.train import FailureConfig as TrainFailureConfig
from ray.train import RunConfig as TrainRunConfig
from ray.train import ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from raysweep.data.prepare import PreparedData
from raysweep.spec.schema import SweepSpec
from raysweep.store.storage import atomic_write_text, location
from raysweep.trials.point import TrialPoint
from raysweep.trials.source import trial_source


def data_slot(slot) -> str:
    """The key of a point's data dir (its `data_slot`) in `data_dirs` (Tune's config keys are strings)."""
    return "" if slot is None else str(slot)


def train_loop_per_worker(config: dict) -> None:
    """[1] One worker of the trial (raysweep.train.loop), imported where it runs: the trial driver and
    Train's controller then never import the model code, transformers and torch's distributed stack
    (seconds of CPU each, on a head node that only schedules)."""
    from raysweep.train.loop import train_loop_per_worker as run_worker

    run_worker(config)


def score_loop_per_worker(config: dict) -> None:
    """[1] One worker scoring a checkpoint made elsewhere (raysweep.train.score), imported where it runs."""
    from raysweep.train.score import score_loop_per_worker as run_worker

    run_worker(config)


def run_trial(config: dict, spec_dict: dict, data_dirs: dict[str, str]) -> None:
    """Run (or resume) one trial's TorchTrainer to completion.

    `config` holds only the trial's point; the spec and the data dirs (one per data slot of the trial
    source, keyed by `data_slot`) come from `tune.with_parameters`.
    """
    spec = SweepSpec.model_validate(spec_dict)
    source = trial_source(spec)
    trial = source.point_of(config)
    layout = spec.layout
    done = layout.done_file(trial.trial_id)
    if done.exists():  # finished in an earlier run of this sweep dir: nothing to redo
        tune.report(json.loads(done.read_text()))
        return
    data_dir = data_dirs[data_slot(trial.data_slot)]
    source.record(trial, layout.point_file(trial.trial_id))
    loop = train_loop_per_worker if source.trains else score_loop_per_worker
    objectives = TrialObjectives(spec, trial, data_dir) if source.reports_objectives else None
    result = _trainer(spec, trial, data_dir, source.train_callbacks(objectives), loop).fit()
    final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float, str))}
    report = source.final_report(trial, objectives, final)
    atomic_write_text(done, json.dumps(report if report is not None else final))
    if report is not None:
        tune.report(report)


def _trainer(spec: SweepSpec, trial: TrialPoint, data_dir: str, callbacks: list, loop) -> TorchTrainer:
    use_gpu = spec.resources.use_gpu
    resources = {"CPU": spec.resources.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    return TorchTrainer(
        loop,
        train_loop_config={"spec": spec.model_dump(mode="json"), "trial": trial.model_dump(),
                           "data_dir": data_dir, "driver_started_at": time.time()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.resources.workers_per_trial, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=TrainRunConfig(
            # The name is the trial id, never a timestamp: a retried or restored trial finds
            # its own checkpoints under the same name.
            name=trial.trial_id,
            storage_path=str(spec.layout.train_root),
            failure_config=TrainFailureConfig(
                max_failures=spec.failure.max_failures,
                max_preemption_failures=spec.failure.max_preemption_failures,
                controller_failure_limit=spec.failure.controller_failure_limit),
            checkpoint_config=CheckpointConfig(
                num_to_keep=None if spec.train.keep_checkpoints == "all" else spec.train.keep_checkpoints),
            callbacks=callbacks,
        ),
    )


class TrialObjectives:
    """One trial's `trial_objectives` ({`<split>_<metric>`: value}) on its own shards of a step (None: the
    last). Built in the trial driver, where its trials-table row is made once (that imports transformers);
    Ray Train pickles it to the run's controller, where an eval report's callback calls it."""

    def __init__(self, spec: SweepSpec, trial: TrialPoint, data_dir: str):
        from raysweep.run.trials_table import trial_row

        data = PreparedData.load(location(data_dir))
        self.sweep_dir, self.data_dir = str(spec.layout.root), data_dir  # strings: an s3:// path pickles as one
        self.row = trial_row(spec, trial, data, "TERMINATED", None)

    def __call__(self, step: int | None = None) -> dict:
        from raysweep.catalog.build import trial_objectives
        from raysweep.store.layout import SweepLayout

        return trial_objectives(SweepLayout.at(self.sweep_dir), self.row, location(self.data_dir), step)
