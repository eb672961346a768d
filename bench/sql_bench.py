"""SQL library speed: 100M synthetic per-token rows in the real shard layout, `bin_loss` and
`balanced_vs_average` timed warm in DuckDB against the same computation in pandas, same run.

    python bench/sql_bench.py [--rows 100_000_000] [--dir /tmp/raysweep-sqlbench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.catalog.build import build_catalog
from raysweep.run.trials_table import TRIALS_SCHEMA
from raysweep.store.layout import SweepLayout
from raysweep.store.shards import TOKEN_SCHEMA, write_token_shard

VOCAB, SEQ_LEN = 32_000, 128


def write_sweep(root: Path, n_rows: int, n_trials: int = 8, steps=(1000, 2000)) -> None:
    rng = np.random.default_rng(0)
    layout = SweepLayout.at(root)
    counts = (1e6 / np.arange(1, VOCAB + 1) ** 1.1).astype(np.int64)  # Zipf-like, zeros in the tail
    layout.data_dir("k").mkdir(parents=True)
    pq.write_table(pa.table({"token_id": pa.array(np.arange(VOCAB), pa.int32()), "count": counts,
                             "rank": np.arange(1, VOCAB + 1), "share": counts / counts.sum(),
                             "piece": [str(i) for i in range(VOCAB)], "n_chars": pa.array(np.ones(VOCAB), pa.int32())}),
                   layout.data_dir("k") / "token_freq.parquet")
    # the data dir's completeness marker: the catalog reads only data dirs that have it
    (layout.data_dir("k") / "meta.json").write_text(json.dumps({"data_key": "k", "vocab_size": VOCAB}))
    trials = [{"trial_id": f"t{i}", "weight_decay": [0.0, 0.1, 0.3, 1.0][i % 4], "scale": "s", "seed": i // 4,
               "decay_policy": "all_matrices", "freq_decay_alpha": 0.0, "label_smoothing": 0.0, "dropout": 0.0,
                               "regularizer": "adamw", "n_params": 1,
               "flops_per_token": 1, "lr": 1e-3, "steps": steps[-1], "data_key": "k", "vocab_size": VOCAB,
               "status": "TERMINATED", "error": None} for i in range(n_trials)]
    pq.write_table(pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA), layout.trials_file)
    shards = [(t["trial_id"], split, step, rank) for t in trials for split in ("train", "heldout")
              for step in steps for rank in (0, 1)]
    per_shard = n_rows // len(shards) // (SEQ_LEN - 1) * (SEQ_LEN - 1)
    probabilities = np.maximum(counts, 1) / np.maximum(counts, 1).sum()
    tokens = rng.choice(VOCAB, size=per_shard, p=probabilities).astype(np.int32)
    for i, (trial, split, step, rank) in enumerate(shards):
        n_seq = per_shard // (SEQ_LEN - 1)
        loss = rng.gamma(2.0, 1.0, per_shard).astype(np.float32)
        write_token_shard(pa.Table.from_arrays([
            pa.array(np.repeat(np.arange(n_seq), SEQ_LEN - 1), pa.int32()),
            pa.array(np.tile(np.arange(1, SEQ_LEN), n_seq), pa.int32()),
            pa.array(np.roll(tokens, i * 7919)), pa.array(loss), pa.array(loss < 1.0)], schema=TOKEN_SCHEMA),
            layout.token_shard(split, trial, step, rank))


def pandas_reference(root: Path) -> tuple[float, float, int, float]:
    """Read the final-step shards into pandas (pyarrow's hive dataset: partition keys arrive as
    categoricals, pandas' fast path) and compute both queries there, warm like DuckDB's."""
    started = time.perf_counter()
    layout = SweepLayout.at(root)
    tokens = pq.read_table(layout.shards_root("tokens"), columns=["trial", "split", "token_id", "loss", "correct"],
                           filters=[("step", "=", 2000)], partitioning="hive").to_pandas()
    tokens = tokens.rename(columns={"trial": "trial_id"})
    load_s = time.perf_counter() - started
    freq = pq.read_table(layout.data_dir("k") / "token_freq.parquet").to_pandas()
    freq["bin"] = np.where(freq["count"] > 0, np.floor(np.log(np.maximum(freq["count"], 1)) / np.log(3) + 1e-9), -1)

    def per_type():  # token_type_loss: what both queries start from, in DuckDB as here
        return tokens.groupby(["trial_id", "split", "token_id"], observed=True).agg(
            n=("loss", "size"), mean_loss=("loss", "mean"), accuracy=("correct", "mean")).reset_index()

    def bin_loss():  # the same five outputs per (trial, split, bin)
        typed = per_type().merge(freq[["token_id", "bin"]], on="token_id")
        typed["loss_x_n"], typed["acc_x_n"] = typed["mean_loss"] * typed["n"], typed["accuracy"] * typed["n"]
        bins = typed.groupby(["trial_id", "split", "bin"], observed=True).agg(
            n_types=("token_id", "size"), n_occurrences=("n", "sum"), type_mean_loss=("mean_loss", "mean"),
            loss_x_n=("loss_x_n", "sum"), acc_x_n=("acc_x_n", "sum"))
        bins["occurrence_loss"] = bins["loss_x_n"] / bins["n_occurrences"]
        bins["accuracy"] = bins["acc_x_n"] / bins["n_occurrences"]

    def balanced_vs_average():  # the same outputs per (trial, split)
        typed = per_type()
        typed["loss_x_n"], typed["acc_x_n"] = typed["mean_loss"] * typed["n"], typed["accuracy"] * typed["n"]
        table = typed.groupby(["trial_id", "split"], observed=True).agg(
            n_types=("token_id", "size"), n_occurrences=("n", "sum"), balanced_loss=("mean_loss", "mean"),
            loss_x_n=("loss_x_n", "sum"), acc_x_n=("acc_x_n", "sum"))
        table["average_loss"] = table["loss_x_n"] / table["n_occurrences"]
        table["gap"] = table["balanced_loss"] - table["average_loss"]
        table["ratio"] = table["balanced_loss"] / table["average_loss"]
        table["accuracy"] = table["acc_x_n"] / table["n_occurrences"]

    bins_s, balanced_s = best_of(2, bin_loss), best_of(2, balanced_vs_average)  # warm, as DuckDB
    return bins_s, balanced_s, len(tokens), load_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--dir", default="/tmp/raysweep-sqlbench")
    args = parser.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    write_sweep(root, args.rows)
    print(f"wrote {args.rows:,} rows of shards in {time.perf_counter() - started:.1f} s")
    build_catalog(root)
    with duckdb.connect(str(SweepLayout.at(root).catalog_file), read_only=True) as con:
        total = con.execute("SELECT count(*) FROM tokens").fetchone()[0]
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        final_rows = con.execute("SELECT count(*) FROM final_tokens").fetchone()[0]
        timings = {name: best_of(3, lambda: con.execute(f"SELECT count(*) FROM {name}()").fetchall())
                   for name in ("bin_loss", "balanced_vs_average")}
    bins_s, balanced_s, pandas_rows, load_s = pandas_reference(root)
    print(f"rows in the catalog: {total:,}; final-step rows each query reads: {final_rows:,}; "
          f"DuckDB threads: {threads}")
    print(f"pandas: loading the final-step shards (pyarrow, hive categoricals) took {load_s:.1f} s")
    for name, duck_s, pandas_s in (("bin_loss", timings["bin_loss"], bins_s),
                                   ("balanced_vs_average", timings["balanced_vs_average"], balanced_s)):
        print(f"{name}: duckdb from Parquet {duck_s:.2f} s = {final_rows / duck_s / 1e6:.1f} M rows/s; "
              f"pandas in memory {pandas_s:.2f} s = {pandas_rows / pandas_s / 1e6:.1f} M rows/s; "
              f"ratio vs pandas in memory {pandas_s / duck_s:.1f}x, "
              f"vs pandas from the same Parquet {(load_s + pandas_s) / duck_s:.1f}x")


def best_of(n: int, run) -> float:
    """Warm timing: the first run caches file metadata and pages; the best of n after it."""
    run()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


if __name__ == "__main__":
    main()
