"""Distributed checkpoints with torch.distributed.checkpoint (DCP).

Each rank saves its shards into its own local directory; Ray Train merges the directories of
all ranks into one checkpoint in storage (rank 0 holds DCP's `.metadata`, written last, which
is what makes a DCP directory loadable). `train_state.json` records the step.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

STATE_FILE = "train_state.json"


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    directory: Path, rank: int) -> None:
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))
    if rank == 0:
        (Path(directory) / STATE_FILE).write_text(json.dumps({"step": step}))


def load_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> int:
    """Restore model and optimizer in place; returns the number of steps already taken."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return json.loads((Path(directory) / STATE_FILE).read_text())["step"]


def load_model_weights(model: torch.nn.Module, directory: Path) -> int:
    """Load a checkpoint's weights into a plain single-process model (analysis, tests)."""
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(directory))
    model.load_state_dict(state["model"])
    return json.loads((Path(directory) / STATE_FILE).read_text())["step"]
