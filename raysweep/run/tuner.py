"""[3] The sweep: a Ray Tune Tuner over the trial source's points, each trial a driver
(raysweep.run.driver) that runs one Ray Train TorchTrainer.

`run_sweep(spec)`: preflight (raysweep.run.preflight), Ray, the Tuner, the trials table, the catalog.
`resume_sweep(sweep_dir)`: Tuner.restore of an interrupted sweep, errored trials included.
Both hold the sweep dir's writer lock (raysweep.store.writer_lock) from their first write to their last.
"""

from __future__ import annotations

import logging
import os

import ray
from ray import tune

from raysweep.ops.cluster import DRIVER_RESOURCE
from raysweep.run.driver import data_slot, run_trial
from raysweep.errors import first_line
from raysweep.run.migrations import check_trained_by_this_version
from raysweep.catalog.build import build_catalog
from raysweep.run.preflight import (check_capacity, check_data_unchanged, check_storage, load_sweep_spec, preflight,
                                    prepare)
from raysweep.run.progress import ProgressLines
from raysweep.run.trials_table import error_summary, trial_status, write_trials_table
from raysweep.spec.errors import SweepDirError
from raysweep.spec.schema import SweepSpec
from raysweep.spec.load import spec_to_yaml
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import atomic_write_text, first_missing_dir, remove_empty_dirs
from raysweep.store.writer_lock import SweepLockedError, writer_lock
from raysweep.trials.source import trial_source

log = logging.getLogger("raysweep")


def init_ray(verbose: bool = False) -> None:
    """Connect to RAY_ADDRESS if set, else start an embedded local Ray. Quiet unless `verbose`: Ray's INFO
    lines and the workers' and trial drivers' output (tracebacks of planned restarts included) stay in Ray's
    session logs, where `raysweep -v` shows them instead."""
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": verbose}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
        if DRIVER_RESOURCE not in ray.cluster_resources():
            raise SweepDirError(f"the Ray cluster at {os.environ['RAY_ADDRESS']} has no "
                                f"'{DRIVER_RESOURCE}' resource; start its head with "
                                f"--resources='{{\"{DRIVER_RESOURCE}\": 64}}'")
        return
    ray.init(resources={DRIVER_RESOURCE: 1024}, include_dashboard=True, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}, **quiet)


def max_concurrent_trials(spec: SweepSpec) -> int:
    """How many trials fit at once on the cluster's scarcest resource (the spec may cap it)."""
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    cluster = ray.cluster_resources()
    workers = spec.resources.workers_per_trial
    fits = int(cluster.get("CPU", 0) // (workers * spec.resources.cpus_per_worker))
    if spec.resources.use_gpu:
        fits = min(fits, int(cluster.get("GPU", 0) // workers))
    return max(1, fits)


def _trainable(spec: SweepSpec, datas: dict):
    trainable = tune.with_parameters(run_trial, spec_dict=spec.model_dump(mode="json"),
                                     data_dirs={data_slot(slot): str(d.data_dir) for slot, d in datas.items()})
    return tune.with_resources(trainable, {"CPU": 0, DRIVER_RESOURCE: 1})


class TrialName:
    """Tune's trial name and dir: the trial id of the point. A top-level class, not a closure, since
    Tune pickles it into the experiment's state: a restore finds it by this module's name."""

    def __init__(self, spec: SweepSpec):
        self.spec_dict = spec.model_dump(mode="json")

    def __call__(self, trial) -> str:
        return trial_source(SweepSpec.model_validate(self.spec_dict)).point_of(trial.config).trial_id


def _tune_config(spec: SweepSpec) -> tune.TuneConfig:
    return tune.TuneConfig(max_concurrent_trials=max_concurrent_trials(spec), trial_name_creator=TrialName(spec),
                           trial_dirname_creator=TrialName(spec), **trial_source(spec).tune_options())


def run_sweep(spec: SweepSpec, verbose: bool = False) -> SweepLayout:
    """Prepare data, run every trial of the spec's source, write the trials table and the catalog, holding
    the sweep dir's writer lock throughout."""
    layout = spec.layout
    created = first_missing_dir(layout.root)
    checked = False
    try:
        check_storage(layout)
        with writer_lock(layout, "raysweep sweep"):
            same_spec, datas = preflight(spec)
            checked = True
            atomic_write_text(layout.spec_file, spec_to_yaml(spec))
            init_ray(verbose)
            check_capacity(spec, ray.cluster_resources())
            if same_spec and tune.Tuner.can_restore(str(layout.tune_dir)):
                log.warning("resuming the sweep in %s", layout.root)
                _restore_and_finish(spec, verbose)
            else:
                tuner = tune.Tuner(
                    _trainable(spec, datas),
                    param_space=trial_source(spec).param_space(),
                    tune_config=_tune_config(spec),
                    run_config=tune.RunConfig(
                        name=layout.tune_dir.name, storage_path=str(layout.root),
                        failure_config=tune.FailureConfig(max_failures=spec.failure.trial_max_failures),
                        callbacks=[ProgressLines(spec)], verbose=1 if verbose else 0),
                )
                _finish(spec, tuner.fit(), datas)
    except SweepLockedError:
        raise  # the dir is another writer's: touch nothing in it
    except BaseException:
        if created is not None and not checked:  # bad input leaves storage as it was: no empty sweep dir either
            remove_empty_dirs(created)
        raise
    return layout


def resume_sweep(sweep_dir, verbose: bool = False) -> SweepLayout:
    """Restore an interrupted sweep from its Tune state and finish it (errored trials included), holding
    the sweep dir's writer lock."""
    spec = load_sweep_spec(sweep_dir)
    with writer_lock(spec.layout, "raysweep resume"):
        _restore_and_finish(spec, verbose)
    return spec.layout


def _restore_and_finish(spec: SweepSpec, verbose: bool) -> None:
    layout = spec.layout
    check_trained_by_this_version(layout)
    check_data_unchanged(spec)
    if not tune.Tuner.can_restore(str(layout.tune_dir)):
        raise SweepDirError(f"{layout.root}: no Tune experiment state to resume under {layout.tune_dir}; "
                            "start it with `raysweep sweep`")
    datas = prepare(spec)
    init_ray(verbose)
    check_capacity(spec, ray.cluster_resources())
    try:
        tuner = tune.Tuner.restore(str(layout.tune_dir), trainable=_trainable(spec, datas), resume_errored=True)
    except Exception as exc:  # Tune unpickles its saved state: any error there is a state it cannot use
        raise SweepDirError(f"{layout.tune_dir}: Ray Tune cannot restore this experiment ({first_line(exc)}); "
                            "run the spec under another `name`") from None
    _finish(spec, tuner.fit(), datas)


def _finish(spec: SweepSpec, results: tune.ResultGrid, datas: dict) -> None:
    """trials.parquet from the trials Tune ran: each one's point, its status and why it failed."""
    source, layout = trial_source(spec), spec.layout
    ran = []
    for result in results:
        point = source.point_of(result.config)
        error = error_summary(result.error) if result.error else None
        started = layout.point_file(point.trial_id).exists()
        status = trial_status(layout.done_file(point.trial_id).exists(), error, started, source.pruned(result.metrics))
        ran.append((point, status, error))
    write_trials_table(spec, datas, ran)
    build_catalog(layout)
