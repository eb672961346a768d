"""AdamW with decoupled weight decay split by an explicit policy, and the lr schedule.

Weight decay is the variable under study, so which tensors decay is a pure, tested function
whose summary is saved with every trial.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from raysweep.data.frequency import frequency_row_scale
from raysweep.spec.schema import TrialTrainConfig


def embedding_param_names(model: torch.nn.Module) -> set[str]:
    """Names of the input and output embedding matrices (one name when they are tied)."""
    embeddings = {id(model.get_input_embeddings().weight)}
    output = model.get_output_embeddings()
    if output is not None:
        embeddings.add(id(output.weight))
    return {name for name, p in model.named_parameters() if id(p) in embeddings}


def decay_mask(model: torch.nn.Module, policy: str) -> dict[str, bool]:
    """Parameter name -> decays? Norm weights and biases (1-D) never decay.

    all_matrices: every matrix incl. embeddings (the paper's AdamW); no_embeddings: matrices
    except input/output embeddings; embeddings_only: only input/output embeddings.
    """
    embeddings = embedding_param_names(model)
    mask = {}
    for name, param in model.named_parameters():
        is_matrix, is_embedding = param.ndim >= 2, name in embeddings
        mask[name] = {"all_matrices": is_matrix,
                      "no_embeddings": is_matrix and not is_embedding,
                      "embeddings_only": is_embedding}[policy]
    return mask


def summarize_mask(model: torch.nn.Module, mask: dict[str, bool]) -> dict:
    """Tensor and parameter counts per group, plus the decayed names, for the trial record."""
    params = dict(model.named_parameters())
    summary = {}
    for group, decays in (("decay", True), ("no_decay", False)):
        names = [n for n, d in mask.items() if d == decays]
        summary[group] = {"n_tensors": len(names), "n_params": sum(params[n].numel() for n in names)}
    summary["decayed"] = sorted(n for n, d in mask.items() if d)
    return summary


def build_optimizer(model: torch.nn.Module, cfg: TrialTrainConfig,
                    token_counts: Optional[np.ndarray] = None) -> torch.optim.AdamW:
    """AdamW over the decay policy's groups, with the trial's lambda. With frequency-aware decay
    (`cfg.uses_row_decay`), the embedding rows leave AdamW's decay and a step pre-hook decays each
    row by its own strength (decoupled, before the update, exactly as AdamW applies its own decay)."""
    mask = decay_mask(model, cfg.decay_policy)
    params = dict(model.named_parameters())
    per_row = set()
    if cfg.uses_row_decay:
        if token_counts is None:
            raise ValueError("train.freq_decay_alpha needs the training token counts")
        per_row = {n for n in embedding_param_names(model) if mask[n]}
    groups = [
        {"params": [params[n] for n, d in mask.items() if d and n not in per_row], "weight_decay": cfg.weight_decay},
        {"params": [params[n] for n, d in mask.items() if not d], "weight_decay": 0.0},
        {"params": [params[n] for n in sorted(per_row)], "weight_decay": 0.0, "row_decay": cfg.weight_decay},
    ]
    # fused: one kernel for all tensors, on CPU and GPU; torch's CPU default, the per-tensor loop,
    # pays a dispatch per tensor and op, the more so on FSDP2's DTensors.
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)
    if per_row:
        scale = torch.from_numpy(frequency_row_scale(token_counts, cfg.freq_decay_alpha))
        optimizer.register_step_pre_hook(_RowDecay(optimizer, scale))
    return optimizer


def build_lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrialTrainConfig, start_step: int = 0):
    """transformers' linear warmup then cosine to `lr * min_lr_ratio` at the last step, as a torch
    LambdaLR positioned at `start_step` (a resumed trial continues the schedule where it stopped)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr  # LambdaLR scales this; a resumed group's `lr` is mid-schedule
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps,
        min_lr_rate=cfg.min_lr_ratio, last_epoch=start_step - 1)


class _RowDecay:
    """Step pre-hook: p <- p * (1 - lr * lambda * scale_row) for the groups carrying `row_decay`."""

    def __init__(self, optimizer: torch.optim.Optimizer, scale: torch.Tensor):
        self.scales = {}
        for group in optimizer.param_groups:
            for p in group["params"] if "row_decay" in group else []:
                column = scale.to(p.dtype).unsqueeze(1)
                if column.shape[0] != p.shape[0]:
                    raise ValueError(f"token counts cover {column.shape[0]} types, the embedding has "
                                     f"{p.shape[0]} rows")
                if isinstance(p, DTensor):  # sharded like the rows it scales (FSDP2: dim 0)
                    column = distribute_tensor(column.to(p.to_local().device), p.device_mesh, p.placements)
                self.scales[p] = column

    @torch.no_grad()
    def __call__(self, optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            for p in group["params"] if "row_decay" in group else []:
                p.mul_(1 - group["lr"] * group["row_decay"] * self.scales[p])
