"""token_freq: how often each vocabulary id occurs in the training split (zero counts included)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from raysweep.store.layout import token_freq_file
from raysweep.store.storage import StoragePath, read_parquet_table


def token_frequencies(counts: np.ndarray, tokenizer: Tokenizer) -> pa.Table:
    """token_freq from each id's count (raysweep.data.pack.count_tokens). Columns: token_id, count, rank
    (1 = most frequent, ties by id), share, piece, n_chars."""
    vocab_size = len(counts)
    order = np.lexsort((np.arange(vocab_size), -counts))  # count descending, then id ascending
    rank = np.empty(vocab_size, dtype=np.int64)
    rank[order] = np.arange(1, vocab_size + 1)
    total = max(int(counts.sum()), 1)
    pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in range(vocab_size)]
    return pa.table({
        "token_id": pa.array(np.arange(vocab_size), pa.int32()),
        "count": pa.array(counts, pa.int64()),
        "rank": pa.array(rank, pa.int64()),
        "share": pa.array(counts / total, pa.float64()),
        "piece": pa.array(pieces, pa.string()),
        "n_chars": pa.array([len(p) for p in pieces], pa.int32()),
    })


def read_token_counts(data_dir: StoragePath, vocab_size: int) -> np.ndarray:
    """Training count of every token id (0 for types never seen), from a data dir's token_freq."""
    freq = read_parquet_table(token_freq_file(data_dir)).select(["token_id", "count"])
    counts = np.zeros(vocab_size, dtype=np.int64)
    counts[freq["token_id"].to_numpy()] = freq["count"].to_numpy()
    return counts


def frequency_row_scale(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Per-row decay multiplier (count_i / median count) ** alpha: counts clipped to >= 1 (a type
    never seen in training decays like a type seen once), median over the types seen."""
    counts = np.asarray(counts, dtype=np.float64)
    median = np.median(counts[counts > 0]) if (counts > 0).any() else 1.0
    return (np.maximum(counts, 1.0) / median) ** alpha


def max_row_decay_factor(counts: np.ndarray, alpha: float, lr: float, weight_decay: float) -> float:
    """The largest lr * lambda * row multiplier of a trial: at >= 1 the decay step would flip the
    sign of that embedding row (and grow it) instead of shrinking it."""
    return float(lr * weight_decay * frequency_row_scale(counts, alpha).max())
