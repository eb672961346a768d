"""A synthetic sweep in the real on-disk layout: real Parquet shards with manifests, a real
token_freq and trials table, for testing the catalog and the SQL library against pandas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.run.trials_table import TRIALS_SCHEMA
from raysweep.store.layout import SweepLayout
from raysweep.store.shards import EMBEDDING_SCHEMA, TOKEN_SCHEMA, TRAIN_METRICS_SCHEMA, write_shard

# Counts with zeros (unseen types), ties (two 3s, two 9s) and exact powers of three.
COUNTS = [0, 0, 1, 1, 2, 3, 3, 4, 8, 9, 9, 10, 26, 27, 28, 80, 81, 200, 243, 500]
VOCAB = len(COUNTS)
STEPS = (10, 20, 30)
MISSING = ("s1-wd0.5-s1", 20)  # this trial has no shards at step 20 (a failed eval)
# Byte-level BPE pieces as decoded: a leading space starts a word; lengths 1 to 8 characters.
PIECES = [(" " if i % 3 == 0 else "") + "abcdefgh"[: 1 + i * 5 % 8] for i in range(VOCAB)]


def write_synthetic_sweep(root: Path, data_key: str = "k1", seeds=(0, 1), weight_decays=(0.0, 0.5, 1.0),
                          scales=("s1",), rng_seed: int = 0) -> Path:
    rng = np.random.default_rng(rng_seed)
    layout = SweepLayout.at(root)
    data_dir = layout.data_dir(data_key)
    data_dir.mkdir(parents=True)
    counts = np.array(COUNTS)
    order = np.lexsort((np.arange(VOCAB), -counts))
    rank = np.empty(VOCAB, dtype=np.int64)
    rank[order] = np.arange(1, VOCAB + 1)
    pq.write_table(pa.table({"token_id": pa.array(range(VOCAB), pa.int32()), "count": counts,
                             "rank": rank, "share": counts / counts.sum(),
                             "piece": PIECES, "n_chars": pa.array([len(p) for p in PIECES], pa.int32())}),
                   data_dir / "token_freq.parquet")
    (data_dir / "meta.json").write_text(json.dumps({"data_key": data_key}))  # the data dir's completeness marker
    trials = []
    for scale in scales:
        for wd in weight_decays:
            for seed in seeds:
                trial_id = f"{scale}-wd{wd!r}-s{seed}"
                trials.append({"trial_id": trial_id, "weight_decay": wd, "scale": scale, "seed": seed,
                               "decay_policy": "all_matrices", "freq_decay_alpha": 0.0, "label_smoothing": 0.0,
                               "dropout": 0.0, "regularizer": "adamw", "n_params": 100, "flops_per_token": 600,
                               "lr": 1e-3, "steps": STEPS[-1],
                               "data_key": data_key, "vocab_size": VOCAB, "status": "TERMINATED",
                               "error": None})
                _write_trial_shards(layout, trial_id, wd, rng)
    pq.write_table(pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA), layout.trials_file)
    return root


def _write_trial_shards(layout: SweepLayout, trial_id: str, wd: float, rng) -> None:
    for step in STEPS:
        if (trial_id, step) == MISSING:
            continue
        for split in ("train", "heldout"):
            for rank in (0, 1):
                n_seq, seq_len = 6, 9
                tokens = rng.integers(0, VOCAB, n_seq * (seq_len - 1))
                base = 1.0 / (1 + np.log1p(np.array(COUNTS)[tokens])) * (40 / step) * (1 + wd)
                loss = (base * rng.uniform(0.5, 1.5, len(tokens))).astype(np.float32)
                write_shard(pa.Table.from_arrays([
                    pa.array(np.repeat(np.arange(n_seq) + rank * n_seq, seq_len - 1), pa.int32()),
                    pa.array(np.tile(np.arange(1, seq_len), n_seq), pa.int32()),
                    pa.array(tokens, pa.int32()), pa.array(loss, pa.float32()),
                    pa.array(rng.random(len(tokens)) < 0.5)], schema=TOKEN_SCHEMA),
                    layout.token_shard(split, trial_id, step, rank))
        write_shard(pa.Table.from_arrays([
            pa.array(np.arange(VOCAB), pa.int32()),
            pa.array(rng.uniform(0.5, 2, VOCAB), pa.float32()),
            pa.array(rng.uniform(0.5, 2, VOCAB), pa.float32())], schema=EMBEDDING_SCHEMA),
            layout.embedding_shard(trial_id, step))
    # two report chunks; a retry rewrote steps 16..20 in the second chunk with different values
    for upto, steps in ((20, range(1, 21)), (30, range(16, 31))):
        steps = np.array(list(steps))
        write_shard(pa.Table.from_arrays([
            pa.array(steps, pa.int64()), pa.array(10.0 / steps + upto, pa.float64()),
            pa.array(np.full(len(steps), 1e-3)), pa.array(np.full(len(steps), 1000.0)),
            pa.array(np.full(len(steps), 0.1)), pa.array(np.full(len(steps), 0.01)),
            pa.array(1.8e9 + steps * 0.1)], schema=TRAIN_METRICS_SCHEMA),
            layout.train_metrics_shard(trial_id, upto))
