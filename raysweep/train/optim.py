"""AdamW with decoupled weight decay split by an explicit policy, and the lr schedule.

Weight decay is the variable under study, so which tensors decay is a pure, tested function
whose summary is saved with every trial.
"""

from __future__ import annotations

import math

import torch

from raysweep.config import TrainConfig


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


def build_optimizer(model: torch.nn.Module, weight_decay: float, cfg: TrainConfig) -> torch.optim.AdamW:
    mask = decay_mask(model, cfg.decay_policy)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n, d in mask.items() if d], "weight_decay": weight_decay},
        {"params": [params[n] for n, d in mask.items() if not d], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based optimizer step `step`: linear warmup, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)
