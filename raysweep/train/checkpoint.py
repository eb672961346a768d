"""Distributed checkpoints with torch.distributed.checkpoint (DCP).

Each rank saves its shards into its own local directory; Ray Train merges the directories of
all ranks into one checkpoint in storage (rank 0 holds DCP's `.metadata`, written last, which
is what makes a DCP directory loadable). `train_state.json` records the step.

Ray registers a checkpoint only when its controller polls the report (every ~2 s); a group
that dies in between restarts from an older one. So once every rank has returned from the
report (each after its own upload), rank 0 writes `_COMPLETE` into the stored checkpoint, and
a restart takes the newest complete checkpoint: Ray's own or a newer marked one.

Stored checkpoints may live on an object store; DCP reads them there directly (its fsspec
reader), so a restart never stages a copy.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path, PurePosixPath
from typing import Optional

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from raysweep.store.layout import checkpoint_complete_marker, checkpoint_dirs_in, step_of_checkpoint
from raysweep.store.storage import StoragePath, atomic_write_text, fsync_tree, is_remote, location

STATE_FILE = "train_state.json"


def _file_sizes(checkpoint: StoragePath) -> dict[str, int]:
    marker = checkpoint_complete_marker(checkpoint).name
    return {str(PurePosixPath(*f.relative_to(checkpoint).parts)): f.stat().st_size
            for f in checkpoint.rglob("*") if f.is_file() and f.name != marker}


def mark_complete(stored_checkpoint: StoragePath, step: int) -> None:
    """Write `_COMPLETE` once the checkpoint's files are on disk (locally: flushed first), recording each
    file's size, so a restart can tell a checkpoint a crash or a full disk left short (`is_whole`)."""
    if not is_remote(stored_checkpoint):
        fsync_tree(Path(stored_checkpoint))
    atomic_write_text(checkpoint_complete_marker(stored_checkpoint),
                      json.dumps({"step": step, "files": _file_sizes(stored_checkpoint)}))


def is_whole(checkpoint: StoragePath) -> bool:
    """Marked complete, and every file the marker lists still has its recorded size (markers of before
    sizes were recorded list none)."""
    marker = checkpoint_complete_marker(checkpoint)
    if not marker.exists():
        return False
    recorded = json.loads(marker.read_text()).get("files", {})
    sizes = _file_sizes(checkpoint) if recorded else {}
    return all(sizes.get(name) == size for name, size in recorded.items())


def latest_checkpoint(ray_checkpoint_path: Optional[str], run_dir: StoragePath) -> Optional[StoragePath]:
    """Newest of Ray's registered checkpoint and the whole marked ones under `run_dir`: a marked checkpoint
    whose files no longer match its marker is skipped, and the one before it taken.

    Ray's checkpoint is named by its dir name under `run_dir`: its own path has no scheme on an
    object store (the filesystem travels beside it). Unmarked (its group died before rank 0 could mark
    it), Ray's word that every rank uploaded is taken."""
    listed = checkpoint_dirs_in(run_dir)
    candidates = [d for d in listed if is_whole(d)]
    if ray_checkpoint_path:
        registered = run_dir / PurePosixPath(ray_checkpoint_path).name
        if not checkpoint_complete_marker(registered).exists():
            candidates.append(registered)
        elif str(registered) not in {str(d) for d in listed} and is_whole(registered):
            candidates.append(registered)  # marked but not listed yet; a listed one was judged above
    return max(candidates, key=step_of_checkpoint, default=None)


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    directory: Path, rank: int) -> None:
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))
    if rank == 0:
        (Path(directory) / STATE_FILE).write_text(json.dumps({"step": step}))


def load_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: StoragePath) -> int:
    """Restore model and optimizer in place; returns the number of steps already taken."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return json.loads((directory / STATE_FILE).read_text())["step"]


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's `.metadata` is a pickle; this one builds only DCP's metadata classes, torch sizes and dtypes."""

    ALLOWED = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
               ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}

    def find_class(self, module: str, name: str):
        if (module == "torch.distributed.checkpoint.metadata" or (module, name) in self.ALLOWED
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


class UntrustedCheckpointReader(dcp.FileSystemReader):
    """DCP's local reader for a checkpoint from elsewhere (a sweep dir someone sent): its metadata cannot
    name code to run. The tensors themselves DCP reads as raw bytes or with torch.load(weights_only=True);
    a model-only state dict has no pickled objects besides."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        rank = kwargs.get("rank")
        name = ".metadata" if rank is None else f"__{rank}.metadata"
        with open(Path(self.path) / name, "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def load_model_weights(model: torch.nn.Module, directory: StoragePath) -> int:
    """Load a checkpoint's weights into a plain single-process model (analysis, tests, export); a local
    checkpoint is read as untrusted (UntrustedCheckpointReader)."""
    state = {"model": model.state_dict()}
    if is_remote(directory):
        dcp.load(state, checkpoint_id=str(directory))
    else:
        dcp.load(state, storage_reader=UntrustedCheckpointReader(str(directory)))
    model.load_state_dict(state["model"])
    return json.loads((location(directory) / STATE_FILE).read_text())["step"]
