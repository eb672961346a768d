"""Token studies at scale: raysweep's named queries in DuckDB against the same computation in Polars and pandas,
on the same shard files, in one run.

    python bench/sql_bench.py [--rows 20M 100M 1B] [--dir /tmp/raysweep-sqlbench] [--engines duckdb ...]

For each size, a synthetic sweep written through raysweep's own code: `prepare_data` builds a real data dir from a
synthetic Zipf corpus (a 32k word-level vocabulary, so the eval sets and training counts are real), the trials
table comes from the spec's grid (`write_trials_table`), and every eval's token shards and rollup go through the
writers and layout EvalHook uses, with synthetic losses. `--rows` counts final-step rows (both splits); each trial
scores the paper's eval set (2,048 sequences x 127 targets per split) at two steps, so the sweep holds twice that,
and `learning_speed` reads both steps. A sweep dir of the same shape is reused unless `--fresh`.

Each engine runs in its own process, from 100M rows each query in its own (so a peak RSS is one query's), over a
warm page cache: the first run of a query warms it and is not counted; then the best of up to 3 (2 for pandas; 1
when a run takes over 10 s). Engines:
- `duckdb`: the named queries as raysweep runs them (`raysweep.connect`), reading the per-type rollups;
- `duckdb-raw`: the same queries with token_type_loss over the per-occurrence rows (token_type_loss_raw);
- `polars`: a lazy scan of the token shard files (hive partitions), the same columns and exact binning;
- `pandas`: pyarrow reads the needed rows into pandas, then groupbys; its time counts the read.
Every engine's result is checked equal to duckdb's (rtol and atol 1e-6: sums in another order) before its time
is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

QUERIES = ("bin_loss", "balanced_vs_average", "excess_loss_ci", "learning_speed")
ENGINES = ("duckdb", "duckdb-raw", "polars", "pandas")
VOCAB, SEQ_LEN, PAPER_EVAL_SEQUENCES = 32_000, 128, 2048
WEIGHT_DECAYS = (0.0, 0.1, 0.3, 1.0)
STEPS, EVERY = 1000, 500  # two eval steps: 500 (learning speed's anchor) and 1000 (the final one)

# Every query's output, as DuckDB's named query gives it: the key columns to sort on, then the values compared.
# learning_speed's output has a row per (trial, split, type), tens of millions at 1B rows: each engine reduces
# it per (split, bin) as the last stage of the timed query, and those sums are compared.
KEYS = {"bin_loss": ["trial_id", "step", "split", "bin"], "balanced_vs_average": ["trial_id", "step", "split"],
        "excess_loss_ci": ["scale", "regularizer", "split", "bin", "weight_decay"],
        "learning_speed": ["split", "bin"]}
DUCKDB_SQL = {
    "bin_loss": "SELECT * FROM bin_loss()",
    "balanced_vs_average": "SELECT * FROM balanced_vs_average()",
    "excess_loss_ci": "SELECT * EXCLUDE (vocab_size) FROM excess_loss_ci()",
    "learning_speed": "SELECT split, bin, count(*) AS n_types, sum(n_steps) AS n_steps, sum(first_loss) AS "
                      "first_loss, sum(learning_speed) AS learning_speed FROM learning_speed() GROUP BY split, bin",
}


# --- the synthetic sweep, written through raysweep's code ----------------------------------------------------
def sweep_spec(root: Path, final_rows: int, eval_sequences: int) -> dict:
    per_trial = 2 * eval_sequences * (SEQ_LEN - 1)  # final-step rows of one trial, both splits
    seeds = max(1, math.ceil(final_rows / per_trial / len(WEIGHT_DECAYS)))
    return {
        "name": f"sqlbench-{final_rows}-{eval_sequences}", "storage": str(root / "runs"),
        "data": {"corpus": str(root / "corpus.txt"), "seq_len": SEQ_LEN, "heldout_fraction": 0.2,
                 "tokenizer": {"kind": "file", "path": str(root / "tokenizer.json")}},
        "model": {"family": "llama"},
        "train": {"steps": STEPS, "batch_size": 8},
        "eval": {"every": EVERY, "n_train_sequences": eval_sequences, "n_heldout_sequences": eval_sequences},
        "grid": {"weight_decay": list(WEIGHT_DECAYS), "scale": ["nano"], "seed": list(range(seeds))},
    }


def write_corpus_and_tokenizer(root: Path, eval_sequences: int, rng) -> None:
    """A Zipf(1.1) text over a 32k word vocabulary (the rarest words unseen in training), one document per line,
    long enough for both eval sets; and a word-level tokenizer.json over that vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(VOCAB - 2)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "<|endoftext|>", *words])},
                                           unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(root / "tokenizer.json"))
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    n_words = eval_sequences * SEQ_LEN * 7  # held-out 20% of it covers the held-out eval set with room
    drawn = rng.choice(len(words), size=n_words, p=weights / weights.sum())
    lines = (" ".join(words[i] for i in drawn[start:start + 200]) for start in range(0, n_words, 200))
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")


def write_sweep(root: Path, final_rows: int, eval_sequences: int) -> Path:
    """The sweep dir (under root/runs, with corpus and tokenizer beside) and its catalog; returns the sweep dir."""
    from raysweep.catalog.build import build_catalog
    from raysweep.data.prepare import eval_sets, prepare_data
    from raysweep.run.trials_table import write_trials_table
    from raysweep.spec.load import parse_spec, spec_to_yaml
    from raysweep.data.frequency import read_token_counts
    from raysweep.store.shards import (TOKEN_ROW_ORDER, TOKEN_SCHEMA, token_types_table, type_sums, write_shard,
                                       write_token_shard)
    from raysweep.store.storage import atomic_write_text
    from raysweep.trials.source import trial_source

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    write_corpus_and_tokenizer(root, eval_sequences, rng)
    spec = parse_spec(sweep_spec(root, final_rows, eval_sequences))
    layout, source = spec.layout, trial_source(spec)
    datas = {slot: prepare_data(data, spec.eval, layout) for slot, data in source.data_configs().items()}
    atomic_write_text(layout.spec_file, spec_to_yaml(spec))
    data = next(iter(datas.values()))
    evals = eval_sets(data, data.data_dir)
    points = source.points()
    write_trials_table(spec, datas, [(point, "TERMINATED", None) for point in points])
    # One eval's rows: (seq_id, pos, token_id) of the eval set, the same for every trial as in a sweep
    rows = {}
    for split, sequences in evals.items():
        n_seq = len(sequences)
        rows[split] = pa.table({"seq_id": pa.array(np.repeat(np.arange(n_seq), SEQ_LEN - 1), pa.int32()),
                                "pos": pa.array(np.tile(np.arange(1, SEQ_LEN), n_seq), pa.int32()),
                                "token_id": pa.array(sequences[:, 1:].reshape(-1), pa.int32())}
                               ).sort_by(TOKEN_ROW_ORDER)  # write_token_shard's order, sorted once here
    # A type's loss falls with its training count and rises with weight decay, more for rare types (the paper's
    # shape, so the bins differ); noise on top.
    freq = read_token_counts(data.data_dir, data.vocab_size)
    started, n_written = time.perf_counter(), 0
    for i, point in enumerate(points):
        for step in spec.eval_steps():
            for split, table in rows.items():
                token_id = table["token_id"].to_numpy()
                rarity = 1.0 / np.log(freq[token_id] + 3.0)
                loss = (rng.gamma(2.0, 0.5, len(token_id)) + 8.0 * rarity * (1 + point.weight_decay)
                        * (1.0 if step == STEPS else 1.5)).astype(np.float32)
                shard = table.append_column("loss", pa.array(loss)).append_column("correct", pa.array(loss < 1.0))
                shard = shard.select(TOKEN_SCHEMA.names).cast(TOKEN_SCHEMA)
                write_token_shard(shard, layout.token_shard(split, point.trial_id, step, 0))
                write_shard(token_types_table(type_sums(shard, data.vocab_size)),
                            layout.token_types_shard(split, point.trial_id, step))
                n_written += shard.num_rows
        if sys.stderr.isatty() and i % 20 == 0:
            print(f"\r  {i + 1}/{len(points)} trials, {n_written / (time.perf_counter() - started) / 1e6:.1f} "
                  "M rows/s", end="", file=sys.stderr)
    build_catalog(layout.root)
    (layout.root / "BENCH_COMPLETE").write_text("")
    return layout.root


# --- the engines ---------------------------------------------------------------------------------------------
def timed(run, repeats: int = 3) -> tuple[float, object]:
    """(best seconds, result): one warm-up run, not counted, then the best of `repeats` (1 when slow)."""
    started = time.perf_counter()
    result = run()
    if time.perf_counter() - started > 10:
        repeats = 1
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def duckdb_queries(sweep: Path, raw: bool) -> dict:
    import raysweep

    con = raysweep.connect(sweep)
    if raw:  # macros expand when a query binds: every per-type query now starts from the occurrence rows
        con.execute("CREATE OR REPLACE TEMP MACRO token_type_loss(step := 'final') AS TABLE "
                    "SELECT * FROM token_type_loss_raw(step := step)")
    return {name: (lambda sql=sql: con.sql(sql).df()) for name, sql in DUCKDB_SQL.items()}


def bin_of(counts):
    """freq_bin (analysis/freq_bin.sql): floor(log3(count)) with its epsilon, -1 for an unseen type."""
    return np.where(counts == 0, -1, np.floor(np.log(np.maximum(counts, 1)) / math.log(3) + 1e-9)).astype(np.int32)


def t95(n: np.ndarray) -> np.ndarray:
    from scipy import stats

    return np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)


def polars_queries(sweep: Path) -> dict:
    import polars as pl

    from raysweep.store.layout import SweepLayout, token_freq_file

    layout = SweepLayout.at(sweep)
    freq_path = token_freq_file(next(layout.root.glob("data/*")))
    trials = pl.read_parquet(layout.trials_file).select("trial_id", "scale", "seed", "regularizer", "weight_decay",
                                                        "lr", "data_key")
    tokens = pl.scan_parquet(str(layout.shards_root("tokens")) + "/**/*.parquet", hive_partitioning=True,
                             hive_schema={"split": pl.String, "trial": pl.String, "step": pl.Int64})

    def freq():
        counts = pl.scan_parquet(freq_path).select("token_id", "count")
        return counts.with_columns(bin=pl.when(pl.col("count") == 0).then(-1).otherwise(
            (pl.col("count").cast(pl.Float64).log() / math.log(3) + 1e-9).floor()).cast(pl.Int32))

    def typed(final_only: bool):
        rows = tokens.filter(pl.col("step") == STEPS) if final_only else tokens
        return rows.group_by("trial", "step", "split", "token_id").agg(
            n=pl.len(), mean_loss=pl.col("loss").cast(pl.Float64).mean(),  # DuckDB's avg(FLOAT) is a DOUBLE
            accuracy=pl.col("correct").cast(pl.Float64).mean())

    def bins():
        return typed(True).join(freq(), on="token_id").group_by("trial", "step", "split", "bin").agg(
            n_types=pl.len(), n_occurrences=pl.col("n").sum(), type_mean_loss=pl.col("mean_loss").mean(),
            occurrence_loss=(pl.col("mean_loss") * pl.col("n")).sum() / pl.col("n").sum(),
            accuracy=(pl.col("accuracy") * pl.col("n")).sum() / pl.col("n").sum()).rename({"trial": "trial_id"})

    def balanced():
        return typed(True).group_by("trial", "step", "split").agg(
            n_types=pl.len(), n_occurrences=pl.col("n").sum(),
            average_loss=(pl.col("mean_loss") * pl.col("n")).sum() / pl.col("n").sum(),
            balanced_loss=pl.col("mean_loss").mean(),
            accuracy=(pl.col("accuracy") * pl.col("n")).sum() / pl.col("n").sum(),
        ).with_columns(gap=pl.col("balanced_loss") - pl.col("average_loss"),
                       ratio=pl.col("balanced_loss") / pl.col("average_loss")).rename({"trial": "trial_id"})

    def excess():
        per = bins().join(trials.lazy(), on="trial_id")
        pair = ["scale", "seed", "regularizer", "data_key", "lr", "split", "bin", "step"]
        base = per.filter(pl.col("weight_decay") == 0).select(*pair, baseline=pl.col("type_mean_loss"))
        grouped = per.join(base, on=pair).with_columns(excess=pl.col("type_mean_loss") - pl.col("baseline")).group_by(
            "scale", "regularizer", "split", "bin", "weight_decay").agg(
            n_seeds=pl.len(), mean_excess=pl.col("excess").mean(),
            standard_error=pl.col("excess").std(ddof=1) / pl.len().cast(pl.Float64).sqrt()).collect()
        t = t95(grouped["n_seeds"].to_numpy())
        return grouped.with_columns(ci95_low=pl.col("mean_excess") - pl.Series(t) * pl.col("standard_error"),
                                    ci95_high=pl.col("mean_excess") + pl.Series(t) * pl.col("standard_error"))

    def learning_speed():
        per = typed(False)
        first = per.group_by("trial", "split").agg(first_step=pl.col("step").min())
        base = per.join(first, left_on=["trial", "split", "step"], right_on=["trial", "split", "first_step"]).select(
            "trial", "split", "token_id", first_step=pl.col("step"), first_loss=pl.col("mean_loss"))
        speed = per.join(base, on=["trial", "split", "token_id"]).group_by("trial", "split", "token_id").agg(
            n_steps=pl.len(), first_loss=pl.col("first_loss").first(),
            learning_speed=1 - (pl.col("mean_loss") / pl.col("first_loss")).mean())
        return speed.join(freq(), on="token_id").group_by("split", "bin").agg(
            n_types=pl.len(), n_steps=pl.col("n_steps").sum(), first_loss=pl.col("first_loss").sum(),
            learning_speed=pl.col("learning_speed").sum())

    def collect(frame):
        return (frame if isinstance(frame, pl.DataFrame) else frame.collect(engine="streaming")).to_pandas()

    return {"bin_loss": lambda: collect(bins()), "balanced_vs_average": lambda: collect(balanced()),
            "excess_loss_ci": lambda: collect(excess()), "learning_speed": lambda: collect(learning_speed())}


def pandas_queries(sweep: Path) -> dict:
    import pyarrow.parquet as pq

    from raysweep.store.layout import SweepLayout, token_freq_file

    layout = SweepLayout.at(sweep)
    trials = pd.read_parquet(layout.trials_file)
    freq = pd.read_parquet(token_freq_file(next(layout.root.glob("data/*"))), columns=["token_id", "count"])
    freq["bin"] = bin_of(freq["count"].to_numpy())

    def typed(final_only: bool) -> pd.DataFrame:
        # pyarrow's hive dataset: partition keys arrive as categoricals (pandas' fast groupby path)
        rows = pq.read_table(layout.shards_root("tokens"),
                             columns=["trial", "split", "step", "token_id", "loss", "correct"],
                             filters=[("step", "=", STEPS)] if final_only else None, partitioning="hive").to_pandas()
        rows["step"], rows["loss"] = rows["step"].astype(np.int64), rows["loss"].astype(np.float64)  # as DuckDB's
        out = rows.groupby(["trial", "step", "split", "token_id"], observed=True).agg(
            n=("loss", "size"), mean_loss=("loss", "mean"), accuracy=("correct", "mean")).reset_index()
        return out.rename(columns={"trial": "trial_id"})

    def weighted(frame):
        return frame.assign(loss_x_n=frame["mean_loss"] * frame["n"], acc_x_n=frame["accuracy"] * frame["n"])

    def bins():
        per = weighted(typed(True).merge(freq[["token_id", "bin"]], on="token_id"))
        out = per.groupby(["trial_id", "step", "split", "bin"], observed=True).agg(
            n_types=("token_id", "size"), n_occurrences=("n", "sum"), type_mean_loss=("mean_loss", "mean"),
            loss_x_n=("loss_x_n", "sum"), acc_x_n=("acc_x_n", "sum")).reset_index()
        out["occurrence_loss"] = out["loss_x_n"] / out["n_occurrences"]
        out["accuracy"] = out["acc_x_n"] / out["n_occurrences"]
        return out.drop(columns=["loss_x_n", "acc_x_n"])

    def balanced():
        per = weighted(typed(True))
        out = per.groupby(["trial_id", "step", "split"], observed=True).agg(
            n_types=("token_id", "size"), n_occurrences=("n", "sum"), balanced_loss=("mean_loss", "mean"),
            loss_x_n=("loss_x_n", "sum"), acc_x_n=("acc_x_n", "sum")).reset_index()
        out["average_loss"] = out["loss_x_n"] / out["n_occurrences"]
        out["gap"] = out["balanced_loss"] - out["average_loss"]
        out["ratio"] = out["balanced_loss"] / out["average_loss"]
        out["accuracy"] = out["acc_x_n"] / out["n_occurrences"]
        return out.drop(columns=["loss_x_n", "acc_x_n"])

    def excess():
        per = bins().merge(trials, on="trial_id")
        pair = ["scale", "seed", "regularizer", "data_key", "lr", "split", "bin", "step"]
        base = per[per["weight_decay"] == 0][pair + ["type_mean_loss"]].rename(columns={"type_mean_loss": "baseline"})
        per = per.merge(base, on=pair)
        per["excess"] = per["type_mean_loss"] - per["baseline"]
        out = per.groupby(["scale", "regularizer", "split", "bin", "weight_decay"], observed=True)["excess"].agg(
            n_seeds="size", mean_excess="mean", std="std").reset_index()
        half = t95(out["n_seeds"].to_numpy()) * out["std"] / np.sqrt(out["n_seeds"])
        out["ci95_low"], out["ci95_high"] = out["mean_excess"] - half, out["mean_excess"] + half
        return out

    def learning_speed():
        per = typed(False)
        first = per.groupby(["trial_id", "split"], observed=True)["step"].min().rename("first_step").reset_index()
        base = per.merge(first, left_on=["trial_id", "split", "step"], right_on=["trial_id", "split", "first_step"])
        base = base[["trial_id", "split", "token_id", "mean_loss"]].rename(columns={"mean_loss": "first_loss"})
        per = per.merge(base, on=["trial_id", "split", "token_id"])
        per["ratio"] = per["mean_loss"] / per["first_loss"]
        speed = per.groupby(["trial_id", "split", "token_id"], observed=True).agg(
            n_steps=("ratio", "size"), first_loss=("first_loss", "first"), ratio=("ratio", "mean")).reset_index()
        speed["learning_speed"] = 1 - speed["ratio"]
        speed = speed.merge(freq[["token_id", "bin"]], on="token_id")
        return speed.groupby(["split", "bin"], observed=True).agg(
            n_types=("token_id", "size"), n_steps=("n_steps", "sum"), first_loss=("first_loss", "sum"),
            learning_speed=("learning_speed", "sum")).reset_index()

    return {"bin_loss": bins, "balanced_vs_average": balanced, "excess_loss_ci": excess,
            "learning_speed": learning_speed}


def run_engine(engine: str, queries: list[str], sweep: Path, out: Path) -> None:
    """Time `queries` on one engine: each one's result to `out/<query>.parquet`, its time and this process's peak
    RSS so far to `out/<query>.json`."""
    thunks = {"duckdb": lambda: duckdb_queries(sweep, raw=False), "duckdb-raw": lambda: duckdb_queries(sweep, raw=True),
              "polars": lambda: polars_queries(sweep), "pandas": lambda: pandas_queries(sweep)}[engine]()
    out.mkdir(parents=True, exist_ok=True)
    for name in queries:
        seconds, frame = timed(thunks[name], repeats=2 if engine == "pandas" else 3)
        frame.to_parquet(out / f"{name}.parquet")
        (out / f"{name}.json").write_text(json.dumps({"seconds": seconds, "peak_rss_gb": peak_rss_gb()}))


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's ru_maxrss it starts afresh at exec, so
    the parent's memory does not show)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20


# --- the comparison ------------------------------------------------------------------------------------------
def same_result(name: str, expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
    """None when `got` holds `expected`'s rows and columns (floats to rtol 1e-6); else what differs."""
    keys, columns = KEYS[name], list(expected.columns)
    if missing := set(columns) - set(got.columns):
        return f"columns missing: {sorted(missing)}"
    if len(got) != len(expected):
        return f"{len(got)} rows, expected {len(expected)}"
    a = expected.sort_values(keys).reset_index(drop=True)
    b = got[columns].astype({k: a[k].dtype for k in keys}).sort_values(keys).reset_index(drop=True)
    for column in columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if column in keys or x.dtype == object:
            if not (x == y).all():
                return f"{column} differs"
        elif not np.allclose(x.astype(float), y.astype(float), rtol=1e-6, atol=1e-6, equal_nan=True):
            return f"{column} differs (max abs diff {np.nanmax(np.abs(x.astype(float) - y.astype(float))):.3g})"
    return None


def compare(sweep: Path, engines: list[str], work: Path, process_per_query: bool) -> dict:
    """Run each engine in its own process (or each engine's every query: its peak RSS is then the query's);
    returns {"rows": counts, engine: {query: {"seconds", "peak_rss_gb", "mismatch"} or {"failed"}}}."""
    from raysweep.catalog.connect import connect

    with connect([sweep]) as con:
        counts = dict(con.execute("SELECT 'final', count(*) FROM final_tokens UNION ALL SELECT 'all', count(*) "
                                  "FROM tokens UNION ALL SELECT 'final_types', count(*) FROM final_token_types "
                                  "UNION ALL SELECT 'types', count(*) FROM token_types").fetchall())
    report = {"rows": counts}
    for engine in ["duckdb", *[e for e in engines if e != "duckdb"]]:
        out, report[engine] = work / engine, {}
        shutil.rmtree(out, ignore_errors=True)
        for queries in ([[name] for name in QUERIES] if process_per_query else [list(QUERIES)]):
            done = subprocess.run([sys.executable, __file__, "--engine", engine, "--queries", *queries,
                                   "--sweep", str(sweep), "--out", str(out)])
            for name in queries:
                if not (out / f"{name}.json").exists():  # killed for memory (-9), or failed
                    report[engine][name] = {"failed": f"exit {done.returncode}"}
                    continue
                report[engine][name] = json.loads((out / f"{name}.json").read_text())
                if engine != "duckdb" and "failed" not in report["duckdb"][name]:
                    report[engine][name]["mismatch"] = same_result(
                        name, pd.read_parquet(work / "duckdb" / f"{name}.parquet"),
                        pd.read_parquet(out / f"{name}.parquet"))
    return report


def print_report(size: int, report: dict) -> None:
    rows = report["rows"]
    print(f"\n== {size:,} final-step rows requested: the catalog holds {rows['all']:,} token rows "
          f"({rows['final']:,} at the final step) and {rows['types']:,} rollup rows ({rows['final_types']:,})")
    reads = {"learning_speed": rows["all"]}  # the occurrence rows behind each answer, for rows/s
    for engine, results in report.items():
        if engine == "rows":
            continue
        print(f"{engine}:")
        for name, result in results.items():
            if "failed" in result:
                print(f"    {name:<20} failed ({result['failed']})")
                continue
            seconds = result["seconds"]
            line = (f"    {name:<20} {seconds:8.3f} s  {reads.get(name, rows['final']) / seconds / 1e6:7.1f} M rows/s  "
                    f"peak RSS {result['peak_rss_gb']:5.2f} GB")
            if result.get("mismatch"):
                line += f"  RESULT DIFFERS: {result['mismatch']} (time not counted)"
            elif engine != "duckdb" and "failed" not in report["duckdb"][name]:
                line += f"  duckdb is {seconds / report['duckdb'][name]['seconds']:.1f}x faster"
            print(line)


def parse_size(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["20M", "100M", "1B"], help="final-step rows per sweep")
    parser.add_argument("--eval-sequences", type=int, default=PAPER_EVAL_SEQUENCES,
                        help="eval sequences per split and trial (the paper's 2,048)")
    parser.add_argument("--dir", default="/tmp/raysweep-sqlbench")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--fresh", action="store_true", help="rewrite sweeps that exist")
    parser.add_argument("--process-per-query", action=argparse.BooleanOptionalAction, default=None,
                        help="each query in its own process, so each peak RSS is one query's (default: from 100M rows)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # the child process: one engine's run
    parser.add_argument("--queries", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine:
        run_engine(args.engine, args.queries, Path(args.sweep), Path(args.out))
        return {}
    reports = {}
    for text in args.rows:
        size = parse_size(text)
        root = Path(args.dir) / f"{size}-{args.eval_sequences}"
        if args.fresh or not any(root.glob("runs/*/BENCH_COMPLETE")):
            shutil.rmtree(root, ignore_errors=True)
            started = time.perf_counter()
            sweep = write_sweep(root, size, args.eval_sequences)
            print(f"wrote the {text} sweep (data dir, shards, rollups, catalog) in "
                  f"{time.perf_counter() - started:.0f} s "
                  f"({sum(f.stat().st_size for f in sweep.rglob('*.parquet')) / 1e9:.2f} GB of Parquet)")
        sweep_dir = next(root.glob("runs/*/BENCH_COMPLETE")).parent
        per_query = size >= 100_000_000 if args.process_per_query is None else args.process_per_query
        reports[size] = compare(sweep_dir, args.engines, root / "results", per_query)
        print_report(size, reports[size])
    return reports


if __name__ == "__main__":
    main()
