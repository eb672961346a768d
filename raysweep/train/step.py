"""One optimizer step: the training loop's unit of work, without Ray, so the benches and tests that
time or check a step run it exactly as a trial does."""

from __future__ import annotations

import torch


def train_step(model, optimizer, input_ids: torch.Tensor, grad_clip: float,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """One optimizer step on a batch of sequences (next-token loss) at the optimizer's current lr;
    returns this rank's loss. Under FSDP2 the gradients are DTensors and torch's clip takes their
    global norm."""
    if label_smoothing:
        logits = model(input_ids=input_ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                 input_ids[:, 1:].reshape(-1), label_smoothing=label_smoothing)
    else:
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
