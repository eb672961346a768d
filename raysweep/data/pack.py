"""Tokenize documents and pack them into fixed-length sequences in flat memory-mapped arrays.

Each array is a raw little-endian file of shape [n_sequences, seq_len]; meta.json records
shape and dtype. uint16 is safe while every id < 65536 (the vocab is checked), else uint32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from tokenizers import Tokenizer

from raysweep.store.layout import data_marker


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def encode_stream(tokenizer: Tokenizer, docs: list[str], eos: Optional[int],
                  batch_docs: int = 4096) -> np.ndarray:
    """All documents as one int64 token stream, each followed by the EOS id when there is one."""
    suffix = [] if eos is None else [eos]
    pieces = []
    for start in range(0, len(docs), batch_docs):
        # encode_batch_fast skips the character offsets, which packing never reads. One array per
        # batch: a Python list of ints costs ~36 bytes a token, so the list stays one batch long.
        ids = []
        for encoding in tokenizer.encode_batch_fast(docs[start:start + batch_docs], add_special_tokens=False):
            ids += encoding.ids
            ids += suffix
        pieces.append(np.array(ids, dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


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
    info = meta["arrays"][name]
    if info["shape"][0] == 0:
        return np.zeros(info["shape"], dtype=info["dtype"])
    return np.memmap(Path(data_dir) / info["file"], dtype=info["dtype"], mode="r",
                     shape=tuple(info["shape"]))
