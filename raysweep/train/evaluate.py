"""Per-token evaluation: score a rank's slice of a fixed eval set, one row per target token.

Every rank runs the same number of forward passes (FSDP2 all-gathers parameters inside each
forward, so a rank that stopped early would hang the others); ranks whose slice ran out
score a padding batch and drop it.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from torch.distributed.tensor import DTensor

from raysweep.store.shards import EMBEDDING_SCHEMA, TOKEN_SCHEMA


def rank_slice(n_sequences: int, rank: int, world_size: int) -> np.ndarray:
    """Contiguous, disjoint slice of eval rows for one rank; the slices cover every row."""
    return np.array_split(np.arange(n_sequences), world_size)[rank]


def _per_token(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (nats, float32) and correctness of every next-token target, both [batch, seq_len - 1]."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return loss, logits.argmax(dim=-1) == targets


@torch.no_grad()
def score(model: torch.nn.Module, sequences: np.ndarray, rows: np.ndarray, batch_size: int,
          n_batches: int, device: torch.device) -> pa.Table:
    """Score `rows` of `sequences` in exactly `n_batches` forward passes; returns TOKEN_SCHEMA rows."""
    was_training = model.training
    model.eval()
    seq_len = sequences.shape[1]
    columns = {name: [] for name in TOKEN_SCHEMA.names}
    for b in range(n_batches):
        batch_rows = rows[b * batch_size:(b + 1) * batch_size]
        padding = len(batch_rows) == 0
        take = np.array([0]) if padding else batch_rows
        input_ids = torch.from_numpy(sequences[take].astype(np.int64)).to(device)
        loss, correct = _per_token(model, input_ids)
        if padding:
            continue
        columns["seq_id"].append(np.repeat(batch_rows, seq_len - 1))
        columns["pos"].append(np.tile(np.arange(1, seq_len), len(batch_rows)))
        columns["token_id"].append(input_ids[:, 1:].reshape(-1).cpu().numpy())
        columns["loss"].append(loss.reshape(-1).cpu().numpy())
        columns["correct"].append(correct.reshape(-1).cpu().numpy())
    model.train(was_training)
    arrays = [pa.array(np.concatenate(columns[f.name]) if columns[f.name] else [], f.type)
              for f in TOKEN_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=TOKEN_SCHEMA)


def n_batches_for(n_sequences: int, world_size: int, batch_size: int) -> int:
    """Forward passes every rank makes: enough for the largest slice."""
    return math.ceil(math.ceil(n_sequences / world_size) / batch_size)


@torch.no_grad()
def embedding_norms(model: torch.nn.Module) -> pa.Table:
    """Row norms of the input and output embeddings for every vocabulary id.

    Under FSDP2 the rows are sharded DTensors: `full_tensor()` all-gathers them, so every rank
    must call this, though only one writes the result.
    """
    def full(weight: torch.Tensor) -> torch.Tensor:
        return (weight.full_tensor() if isinstance(weight, DTensor) else weight).float()

    input_rows = full(model.get_input_embeddings().weight)
    output = model.get_output_embeddings()
    output_rows = full(output.weight) if output is not None else input_rows
    return pa.Table.from_arrays([
        pa.array(np.arange(input_rows.shape[0]), pa.int32()),
        pa.array(input_rows.norm(dim=1).cpu().numpy(), pa.float32()),
        pa.array(output_rows.norm(dim=1).cpu().numpy(), pa.float32()),
    ], schema=EMBEDDING_SCHEMA)
