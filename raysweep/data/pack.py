"""Tokenize documents and pack them into fixed-length sequences in flat memory-mapped arrays.

Each array is a raw little-endian file of shape [n_sequences, seq_len]; meta.json records
shape and dtype. uint16 is safe while every id < 65536 (the vocab is checked), else uint32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
from tokenizers import Tokenizer

from raysweep.store.layout import data_marker


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def encode_batches(tokenizer: Tokenizer, batches: Iterable[list[str]], eos: Optional[int]) -> Iterator[np.ndarray]:
    """Each batch of documents as one int64 token array, each document followed by the EOS id when there is
    one. `tokenizers` encodes a batch on all cores (its own thread pool)."""
    suffix = [] if eos is None else [eos]
    for docs in batches:
        # encode_batch_fast skips the character offsets, which packing never reads. One array per
        # batch: a Python list of ints costs ~36 bytes a token, so the list stays one batch long.
        ids = []
        for encoding in tokenizer.encode_batch_fast(docs, add_special_tokens=False):
            ids += encoding.ids
            ids += suffix
        yield np.array(ids, dtype=np.int64)


def encode_stream(tokenizer: Tokenizer, docs: list[str], eos: Optional[int],
                  batch_docs: int = 4096) -> np.ndarray:
    """All documents as one int64 token stream (`encode_batches`, joined)."""
    pieces = list(encode_batches(tokenizer, (docs[i:i + batch_docs] for i in range(0, len(docs), batch_docs)), eos))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


class PackedArrayWriter:
    """Token arrays streamed into an array file, of which the whole sequences of seq_len are kept (the tail
    shorter than one is cut off when it closes, as `pack` drops it): one piece is in memory at a time.
    `entry`, once closed: the array's meta.json entry."""

    def __init__(self, path: Path, seq_len: int, vocab_size: int):
        self.path, self.seq_len, self.vocab_size = Path(path), seq_len, vocab_size
        self.dtype = token_dtype(vocab_size)
        self.n_tokens, self.entry = 0, None

    def __enter__(self) -> "PackedArrayWriter":
        self.file = open(self.path, "wb")
        return self

    def write(self, piece: np.ndarray) -> None:
        if piece.size and int(piece.max()) >= self.vocab_size:
            raise ValueError(f"{self.path.name}: token id {int(piece.max())} >= vocab size {self.vocab_size}")
        piece.astype(self.dtype).tofile(self.file)
        self.n_tokens += piece.size

    def __exit__(self, *exc) -> None:
        self.file.close()
        n_sequences = self.n_tokens // self.seq_len
        os.truncate(self.path, n_sequences * self.seq_len * self.dtype.itemsize)
        self.entry = {"file": self.path.name, "shape": [n_sequences, self.seq_len], "dtype": self.dtype.name}


def count_tokens(pieces: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """How often each id occurs in a stream of token arrays (int64, one entry per id)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for piece in pieces:
        counts += np.bincount(piece.reshape(-1), minlength=vocab_size)[:vocab_size]
    return counts


def array_chunks(array: np.ndarray, tokens: int = 1 << 22) -> Iterator[np.ndarray]:
    """A (memory-mapped) array of sequences in chunks of about `tokens` tokens, as int64 (32 MiB by
    default): reading a large array never loads it whole."""
    rows = max(1, tokens // max(1, array.shape[1] if array.ndim > 1 else 1))
    for start in range(0, len(array), rows):
        yield np.asarray(array[start:start + rows]).astype(np.int64)


def pack(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows of seq_len tokens; the tail shorter than one window is dropped."""
    n_sequences = len(stream) // seq_len
    return stream[: n_sequences * seq_len].reshape(n_sequences, seq_len)


def write_array(path: Path, sequences: np.ndarray, vocab_size: int) -> dict:
    dtype = token_dtype(vocab_size)
    if sequences.size and int(sequences.max()) >= vocab_size:
        raise ValueError(f"{path.name}: token id {int(sequences.max())} >= vocab size {vocab_size}")
    sequences.astype(dtype).tofile(path)
    return {"file": path.name, "shape": list(sequences.shape), "dtype": dtype.name}


def open_array(data_dir: Path, name: str) -> np.ndarray:
    """Read-only memmap of one packed array named in meta.json."""
    meta = json.loads(data_marker(Path(data_dir)).read_text())
    return open_packed(data_dir, meta["arrays"][name])


def open_packed(data_dir: Path, info: dict) -> np.ndarray:
    """Read-only memmap of a packed array from its meta.json entry (an empty one as an empty array)."""
    if info["shape"][0] == 0:
        return np.zeros(info["shape"], dtype=info["dtype"])
    return np.memmap(Path(data_dir) / info["file"], dtype=info["dtype"], mode="r",
                     shape=tuple(info["shape"]))
