"""The SQL bench's smoke run: bench/sql_bench.py at ~1M rows, as `make test` keeps it working. Its sweep is written
through raysweep's own code (data dir, trials table, shard writers, catalog), so a change there that the bench
does not follow fails here; and every peer's answer must equal the named queries'."""

import importlib.util
from pathlib import Path

import pandas as pd


def load_bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "sql_bench.py"
    spec = importlib.util.spec_from_file_location("sql_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sql_bench_smoke_run_agrees_with_every_peer(tmp_path, capsys):
    bench = load_bench()
    report = bench.main(["--rows", "1M", "--eval-sequences", "256", "--dir", str(tmp_path)])[1_000_000]
    assert report["rows"]["final"] >= 1_000_000 and report["rows"]["all"] == 2 * report["rows"]["final"]
    assert report["rows"]["final_types"] < report["rows"]["final"] / 3  # a rollup row stands for many occurrences
    for engine in bench.ENGINES:
        assert set(report[engine]) == set(bench.QUERIES)
        for query, result in report[engine].items():
            assert "failed" not in result and result["seconds"] > 0, (engine, query, result)
            assert result.get("mismatch") is None, (engine, query, result)
            assert ("mismatch" in result) == (engine != "duckdb")  # each peer was compared
    results = next(tmp_path.glob("*/results/duckdb"))
    bins = pd.read_parquet(results / "bin_loss.parquet")
    n_trials = bins["trial_id"].nunique()
    assert n_trials >= 16 and set(bins["split"]) == {"train", "heldout"}
    assert -1 in set(bins["bin"]) and bins["bin"].nunique() >= 6  # types unseen in training, and a Zipf spread
    # the synthetic losses fall with frequency: the rarest seen bin costs more than the most frequent
    train = bins[bins["split"] == "train"].groupby("bin")["type_mean_loss"].mean()
    assert train[train.index >= 0].iloc[0] > train.iloc[-1]
    printed = capsys.readouterr().out
    assert "RESULT DIFFERS" not in printed and "duckdb is" in printed
