"""Parquet shards of per-token evaluation rows, written atomically with a manifest as marker.

A shard's path is a pure function of (kind, split, trial, step, rank) (raysweep.store.layout), so a
retried eval overwrites instead of duplicating. The order of writes makes a half-written shard impossible
to mistake for a complete one: drop the old manifest, write the data under a temporary name,
rename it into place, then write the manifest (rows, sha256) the same way. On an object store
the data object appears whole when its upload completes, so no rename is needed
(raysweep.store.storage).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from raysweep.store.storage import (StoragePath, atomic_write_text, ensure_dir, location, remove_stale_temporaries,
                                    sha256_file, write_parquet)

TOKEN_SCHEMA = pa.schema([
    ("seq_id", pa.int32()),    # row of the eval set (same rows for every trial)
    ("pos", pa.int32()),       # position of the target token in its sequence (1 .. seq_len - 1)
    ("token_id", pa.int32()),  # the target token
    ("loss", pa.float32()),    # cross-entropy of the target, nats
    ("correct", pa.bool_()),   # argmax prediction == target
])

# The rollup of one eval: per token type, the sums that every per-type query starts from. Written beside the
# token shards (rank 0, after summing over ranks) so that a query over types reads one row per type, not one
# per occurrence (~13x fewer rows at the paper's eval size over a 32k vocabulary; bench/README.md).
TOKEN_TYPES_SCHEMA = pa.schema([
    ("token_id", pa.int32()),
    ("n_occurrences", pa.int64()),  # the type's occurrences in the split's eval set
    ("sum_loss", pa.float64()),     # their summed cross-entropy, nats
    ("n_correct", pa.int64()),      # how many of them the argmax predicted
])

EMBEDDING_SCHEMA = pa.schema([
    ("token_id", pa.int32()),
    ("input_norm", pa.float32()),   # L2 norm of the token's input-embedding row
    ("output_norm", pa.float32()),  # L2 norm of its output-embedding (unembedding) row
])

TRAIN_METRICS_SCHEMA = pa.schema([
    ("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
    ("tokens_per_s", pa.float64()),  # the global batch's tokens / this step's time on rank 0
    ("step_time_s", pa.float64()),
    ("mfu", pa.float64()),           # model FLOPs utilization (raysweep.train.throughput)
    ("time", pa.float64()),          # wall clock at the end of the step, unix seconds
])

# The hive keys of each kind's shard paths (`key=value` dirs, built in raysweep.store.layout), typed as
# the catalog's views read them: with a file's columns, all that a view over the shards shows.
TOKEN_PARTITIONS = pa.schema([("split", pa.string()), ("trial", pa.string()), ("step", pa.int64())])
EMBEDDING_PARTITIONS = pa.schema([("trial", pa.string()), ("step", pa.int64())])
TRAIN_METRICS_PARTITIONS = pa.schema([
    ("trial", pa.string()),
    ("upto", pa.int64()),  # the step of the report that wrote the chunk (a retry rewrites some steps)
])

MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(shard: StoragePath) -> StoragePath:
    """`_part-0.manifest.json` beside `part-0.parquet`: the leading underscore keeps pyarrow
    datasets and `*.parquet` globs from taking it for data."""
    return shard.with_name("_" + shard.stem + MANIFEST_SUFFIX)


def write_shard(table: pa.Table, path: StoragePath) -> None:
    """Write one shard and then its manifest; see the module docstring for the order."""
    ensure_dir(path.parent)
    manifest = manifest_path(path)
    manifest.unlink(missing_ok=True)
    # A writer of this shard killed mid-write (a dead worker of an earlier attempt; each shard has
    # exactly one writer) left its temporary files: they are garbage now.
    remove_stale_temporaries(path)
    remove_stale_temporaries(manifest)
    record = {"rows": table.num_rows, "sha256": write_parquet(table, path, compression="zstd")}
    atomic_write_text(manifest, json.dumps(record))


TOKEN_ROW_ORDER = [("token_id", "ascending"), ("seq_id", "ascending"), ("pos", "ascending")]


def write_token_shard(table: pa.Table, path: StoragePath) -> None:
    """A token shard with its rows clustered by token id: per-type GROUP BYs then meet each hash
    group in runs (about 2x faster in DuckDB at 100M rows, bench/sql_bench.py), and row-group
    statistics on token_id let a lookup of a few types skip most of the file."""
    write_shard(table.sort_by(TOKEN_ROW_ORDER), path)


def type_sums(table: pa.Table, vocab_size: int) -> np.ndarray:
    """[3, vocab_size] float64: per token id, the occurrences, summed loss and correct predictions of token-shard
    rows (TOKEN_SCHEMA). Sums of disjoint rows add, so ranks' sums add up to the eval's."""
    token_id = table["token_id"].to_numpy()
    return np.stack([np.bincount(token_id, minlength=vocab_size),
                     np.bincount(token_id, weights=table["loss"].to_numpy(), minlength=vocab_size),
                     np.bincount(token_id, weights=table["correct"].to_numpy(zero_copy_only=False),
                                 minlength=vocab_size)]).astype(np.float64)


def token_types_table(sums: np.ndarray) -> pa.Table:
    """The rollup rows (TOKEN_TYPES_SCHEMA) of `type_sums` output: one per type that occurred."""
    present = np.flatnonzero(sums[0])
    return pa.Table.from_arrays([pa.array(present, pa.int32()), pa.array(sums[0, present].astype(np.int64)),
                                 pa.array(sums[1, present]), pa.array(sums[2, present].astype(np.int64))],
                                schema=TOKEN_TYPES_SCHEMA)


def is_complete(path: StoragePath, verify_checksum: bool = False) -> bool:
    """True when the shard's manifest exists (and, if asked, its checksum matches the file)."""
    manifest = manifest_path(path)
    if not (manifest.exists() and path.exists()):
        return False
    if not verify_checksum:
        return True
    return json.loads(manifest.read_text())["sha256"] == sha256_file(path)


def complete_shards(root: StoragePath) -> list[StoragePath]:
    """Every shard under `root` whose manifest exists, sorted."""
    root = location(root)
    if not root.exists():
        return []
    found = {str(p) for p in root.rglob("*.parquet")}  # a listing, not an exists() request per shard
    shards = (m.with_name(m.name[1: -len(MANIFEST_SUFFIX)] + ".parquet")
              for m in root.rglob(f"_*{MANIFEST_SUFFIX}"))
    return sorted(shard for shard in shards if str(shard) in found)
