"""One optimizer step: the training loop's unit of work, without Ray, so the benches and tests that
time or check a step run it exactly as a trial does."""

from __future__ import annotations

import torch

from raysweep.train.parallel import clip_grad_norm_


def train_step(model, optimizer, input_ids: torch.Tensor, lr: float, grad_clip: float,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """One optimizer step on a batch of sequences (next-token loss); returns this rank's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    if label_smoothing:
        logits = model(input_ids=input_ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                 input_ids[:, 1:].reshape(-1), label_smoothing=label_smoothing)
    else:
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
