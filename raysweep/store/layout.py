"""Every path inside one sweep directory, in one place.

    spec.yaml  trials.parquet  catalog.duckdb  report.html  figures/  tables/  .writer.lock
    data/<data_key>/                 tokenizer.json train.bin eval-*.bin meta.json token_freq.parquet
    models/<name>/config.json        a `model.configs` entry's Hugging Face config, as the sweep first read it
    tune/                            Ray Tune's experiment (resume reads it)
    train/<trial_id>/                Ray Train's run: step-XXXXXXXX/ checkpoints, point.json,
                                     attempts.jsonl, decay_groups.json, complete.json
    shards/tokens/split=<split>/trial=<trial_id>/step=<step>/part-<rank>.parquet
    shards/token_types/split=<split>/trial=<trial_id>/step=<step>/part-0.parquet   per-type sums of the above
    shards/embeddings/trial=<trial_id>/step=<step>/part-0.parquet
    shards/train_metrics/trial=<trial_id>/upto=<step>/part-0.parquet
    tensorboard/<trial_id>/          TensorBoard event files, one per worker-group start (rank 0)

Every name is a pure function of its inputs (trial id, step, rank), so a retried writer finds, and
overwrites, what an earlier attempt wrote. Other modules take these paths from here; what they add is
inside a checkpoint (DCP's files, `_COMPLETE`) or a temporary sibling of a file being written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Union

from raysweep.store.storage import StoragePath, location

# Inside a data dir (in a sweep, or a node's local copy of one): meta.json is written last, the marker
# that the dir is complete; token_freq.parquet holds the training counts.
DATA_MARKER = "meta.json"
TOKEN_FREQ_FILE = "token_freq.parquet"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class SweepLayout:
    root: StoragePath

    @classmethod
    def at(cls, sweep_dir: Union[str, os.PathLike, "SweepLayout"]) -> "SweepLayout":
        """The layout of an existing sweep dir (a path, a storage URI, or a layout already)."""
        return sweep_dir if isinstance(sweep_dir, SweepLayout) else cls(location(sweep_dir))

    @classmethod
    def of(cls, storage: str, name: str) -> "SweepLayout":
        return cls(location(storage) / name)

    @property
    def name(self) -> str:
        return self.root.name

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        """A layout passes wherever a sweep dir's path does (its root's path or URI)."""
        return str(self.root)

    # The sweep's own files -------------------------------------------------------------------
    @property
    def spec_file(self) -> StoragePath:
        return self.root / "spec.yaml"

    @property
    def writer_lock_file(self) -> StoragePath:
        """Held by the one process writing the sweep (raysweep.store.writer_lock)."""
        return self.root / ".writer.lock"

    @property
    def trials_file(self) -> StoragePath:
        return self.root / "trials.parquet"

    @property
    def catalog_file(self) -> StoragePath:
        return self.root / "catalog.duckdb"

    @property
    def report_page(self) -> StoragePath:
        return self.root / "report.html"

    @property
    def figures_dir(self) -> StoragePath:
        return self.root / "figures"

    @property
    def tables_dir(self) -> StoragePath:
        return self.root / "tables"

    # Data ------------------------------------------------------------------------------------
    @property
    def data_root(self) -> StoragePath:
        return self.root / "data"

    def data_dir(self, data_key: str) -> StoragePath:
        return self.data_root / data_key

    def built_data_markers(self) -> list[StoragePath]:
        """meta.json of every complete data dir (written last; staging dirs start with a dot)."""
        return sorted(m for m in self.data_root.glob(f"*/{DATA_MARKER}") if not m.parent.name.startswith("."))

    # Ray Tune and Ray Train ------------------------------------------------------------------
    @property
    def tune_dir(self) -> StoragePath:
        return self.root / "tune"

    @property
    def train_root(self) -> StoragePath:
        """Ray Train's storage_path: each trial's run is `RunConfig(name=trial_id)` under it."""
        return self.root / "train"

    def trial_dir(self, trial_id: str) -> StoragePath:
        return self.train_root / trial_id

    def point_file(self, trial_id: str) -> StoragePath:
        """The trial point its driver ran, recorded before training."""
        return self.trial_dir(trial_id) / "point.json"

    def done_file(self, trial_id: str) -> StoragePath:
        """The trial's TorchTrainer finished (holds its final metrics)."""
        return self.trial_dir(trial_id) / "complete.json"

    def attempts_file(self, trial_id: str) -> StoragePath:
        return self.trial_dir(trial_id) / "attempts.jsonl"

    def decay_groups_file(self, trial_id: str) -> StoragePath:
        return self.trial_dir(trial_id) / "decay_groups.json"

    def model_config_file(self, name: str) -> StoragePath:
        """A `model.configs` entry's config.json as the sweep stored it: what every node and resume builds."""
        return self.root / "models" / name / "config.json"

    def tensorboard_dir(self, trial_id: str) -> StoragePath:
        """The trial's live curves, TensorBoard event files (`tensorboard --logdir <sweep dir>`)."""
        return self.root / "tensorboard" / trial_id

    def crash_marker(self, trial_id: str, step: int) -> StoragePath:
        return self.trial_dir(trial_id) / f".crash-injected-at-{step}"

    def checkpoint_dir(self, trial_id: str, step: int) -> StoragePath:
        return self.trial_dir(trial_id) / checkpoint_dir_name(step)

    def checkpoint_dirs(self, trial_id: str) -> list[StoragePath]:
        return checkpoint_dirs_in(self.trial_dir(trial_id))

    def tune_states(self) -> list[StoragePath]:
        """Tune's experiment state files, oldest first (Tune names them by the time it saved them)."""
        return sorted(self.tune_dir.glob("experiment_state-*.json"))

    def recorded_points(self) -> list[StoragePath]:
        return sorted(self.train_root.glob("*/point.json"))

    # Shards ----------------------------------------------------------------------------------
    def shards_root(self, kind: Optional[str] = None) -> StoragePath:
        return self.root / "shards" / kind if kind else self.root / "shards"

    def token_shard(self, split: str, trial_id: str, step: int, rank: int) -> StoragePath:
        return (self.shards_root("tokens") / f"split={split}" / f"trial={trial_id}" / f"step={step}"
                / f"part-{rank}.parquet")

    def token_types_shard(self, split: str, trial_id: str, step: int) -> StoragePath:
        """The per-type rollup of one eval (all ranks' token shards of the split and step summed)."""
        return (self.shards_root("token_types") / f"split={split}" / f"trial={trial_id}" / f"step={step}"
                / "part-0.parquet")

    def trial_token_dirs(self, trial_id: str) -> list[StoragePath]:
        """The token-shard dirs of one trial, one per split."""
        tokens = self.shards_root("tokens")
        return [split_dir / f"trial={trial_id}" for split_dir in tokens.glob("split=*")] if tokens.exists() else []

    def embedding_shard(self, trial_id: str, step: int) -> StoragePath:
        return self.shards_root("embeddings") / f"trial={trial_id}" / f"step={step}" / "part-0.parquet"

    def train_metrics_shard(self, trial_id: str, upto_step: int) -> StoragePath:
        """Per-step training metrics of the steps that ended at `upto_step` (one file per report)."""
        return self.shards_root("train_metrics") / f"trial={trial_id}" / f"upto={upto_step}" / "part-0.parquet"

    def trial_train_metrics_dir(self, trial_id: str) -> StoragePath:
        return self.shards_root("train_metrics") / f"trial={trial_id}"


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_dirs_in(run_dir: StoragePath) -> list[StoragePath]:
    """The `step-XXXXXXXX` checkpoint dirs of one Train run, complete or not."""
    return sorted(run_dir.glob("step-*"))


def checkpoint_complete_marker(checkpoint: StoragePath) -> StoragePath:
    """Written last, by rank 0, once every rank's part of the checkpoint is stored."""
    return checkpoint / "_COMPLETE"


def step_of_checkpoint(directory: StoragePath) -> int:
    """The step a `step-XXXXXXXX` dir holds; -1 for any other name."""
    match = _STEP_DIR.match(directory.name)
    return int(match.group(1)) if match else -1


def partition_keys(shard: StoragePath) -> dict[str, str]:
    """The hive keys in a shard's path: {'split': ..., 'trial': ..., 'step': ...}."""
    return dict(part.split("=", 1) for part in str(shard).split("/") if "=" in part)


def shard_rank(shard: StoragePath) -> int:
    """The rank that wrote a shard (`part-<rank>.parquet`)."""
    return int(shard.name.removeprefix("part-").removesuffix(".parquet"))


def data_marker(data_dir: StoragePath) -> StoragePath:
    return data_dir / DATA_MARKER


def token_freq_file(data_dir: StoragePath) -> StoragePath:
    return data_dir / TOKEN_FREQ_FILE


def tokenizer_file(data_dir: StoragePath) -> StoragePath:
    return data_dir / "tokenizer.json"


def array_file(data_dir: StoragePath, array: str) -> StoragePath:
    """A packed token array (`train`, `eval-train`, `eval-heldout`): raw uint16/uint32, shape in meta.json."""
    return data_dir / f"{array}.bin"
