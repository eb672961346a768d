"""`raysweep verify`: is every shard and checkpoint a finished trial should have there, whole?

Derives the expected files from the spec (eval and checkpoint cadence, workers, splits) and the
trials that finished, then checks each against its manifest (rows, sha256). Reports missing,
partial (no manifest, wrong checksum or row count, leftover temporary files) and unexpected
shards (a name outside the schedule, e.g. a rank from another worker count), and checkpoints
without their `_COMPLETE` marker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from raysweep.data.prepare import EVAL_SPLITS, PreparedData
from raysweep.spec.schema import SweepSpec
from raysweep.store.layout import checkpoint_complete_marker, partition_keys
from raysweep.store.shards import is_complete, manifest_path
from raysweep.store.storage import StoragePath, read_parquet_metadata, temporaries_under
from raysweep.trials.source import trial_source


@dataclass
class VerifyReport:
    missing: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    n_checked: int = 0
    n_unfinished: int = 0  # trials skipped: what they wrote so far is not yet expected whole

    @property
    def ok(self) -> bool:
        return not (self.missing or self.partial or self.unexpected)

    def lines(self) -> list[str]:
        out = [f"missing: {p}" for p in self.missing] + [f"partial: {p}" for p in self.partial]
        out += [f"unexpected: {p}" for p in self.unexpected]
        verdict = "ok" if self.ok else f"{len(out)} problem(s)"
        skipped = (f" ({self.n_unfinished} unfinished trial(s) not checked; `raysweep status` lists them)"
                   if self.n_unfinished else "")
        return out + [f"{self.n_checked} files checked{skipped}: {verdict}"]


def expected_shards(spec: SweepSpec, data: PreparedData, point) -> list[StoragePath]:
    """Every shard a finished trial wrote: token shards per (step, split, rank), and a rollup per (step, split) if
    the trial writes rollups (a trial trained before them has none, and its queries sum its token shards)."""
    source, trial_id = trial_source(spec), point.table_id
    splits = [s for s in EVAL_SPLITS if data.n_eval_sequences[s] > 0]
    workers, layout = spec.resources.workers_per_trial, spec.layout
    eval_steps = source.eval_steps(point)
    paths = [layout.token_shard(split, trial_id, step, rank)
             for step in eval_steps for split in splits for rank in range(workers)]
    rollups = [layout.token_types_shard(split, trial_id, step) for step in eval_steps for split in splits]
    if any(manifest_path(rollup).exists() for rollup in rollups):
        paths += rollups
    paths += [layout.embedding_shard(trial_id, step) for step in eval_steps]
    paths += [layout.train_metrics_shard(trial_id, step) for step in source.report_steps(point)]
    return paths


def _check_shard(path: StoragePath, report: VerifyReport) -> None:
    report.n_checked += 1
    if not path.exists():
        report.missing.append(str(path))
    elif not manifest_path(path).exists():
        report.partial.append(f"{path} (no manifest)")
    elif not is_complete(path, verify_checksum=True):
        report.partial.append(f"{path} (checksum differs from its manifest)")
    elif read_parquet_metadata(path).num_rows != json.loads(manifest_path(path).read_text())["rows"]:
        report.partial.append(f"{path} (row count differs from its manifest)")


def verify_sweep(spec: SweepSpec, datas: dict) -> VerifyReport:
    """`datas`: the sweep's PreparedData per data slot (raysweep.run.preflight.load_prepared)."""
    from raysweep.train.checkpoint import is_whole  # torch: only when a sweep is verified
    report = VerifyReport()
    layout = spec.layout
    source = trial_source(spec)
    expected: set[str] = set()
    # A catalog trial is finished when all its points are (a model scored elsewhere: all its revisions).
    done: dict[str, bool] = {}
    for trial in source.points():
        finished = layout.done_file(trial.trial_id).exists()
        done[trial.table_id] = done.get(trial.table_id, True) and finished
        if not finished:
            report.n_unfinished += 1  # unfinished trials are `raysweep status`'s business, not corruption
            continue
        shards = expected_shards(spec, datas[trial.data_slot], trial)
        expected |= {str(p) for p in shards}
        for path in shards:
            _check_shard(path, report)
        final_step = source.final_checkpoint_step(trial)
        if final_step is None:
            continue
        final = layout.checkpoint_dir(trial.trial_id, final_step)
        report.n_checked += 1
        if not checkpoint_complete_marker(final).exists():
            report.missing.append(f"{checkpoint_complete_marker(final)} (final checkpoint)")
        for checkpoint in layout.checkpoint_dirs(trial.trial_id):  # one listing, each marker read once
            marker = checkpoint_complete_marker(checkpoint)
            if not marker.exists():
                if str(checkpoint) != str(final):
                    report.partial.append(f"{checkpoint} (checkpoint without {marker.name})")
            elif not is_whole(checkpoint):
                report.partial.append(f"{checkpoint} (a file's size differs from its {marker.name} record)")
    def finished(path) -> bool:
        trial = partition_keys(path).get("trial", "")
        if trial not in done:  # not a point of this spec (an earlier grid's): finished if it says so
            done[trial] = layout.done_file(trial).exists()
        return done[trial]

    shards_dir = layout.shards_root()
    report.unexpected += [str(p) for p in sorted(shards_dir.rglob("*.parquet")) if finished(p) and str(p) not in expected]
    # An unfinished trial's write may have been cut short (a pruned or interrupted trial is killed mid-step).
    report.partial += [f"{p} (temporary file left by an interrupted write)"
                       for p in temporaries_under(shards_dir) if finished(p)]
    return report
