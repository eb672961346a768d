"""Every query of the SQL library against an independent pandas computation on the same shards."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raysweep.catalog.build import SHARD_VIEWS, build_catalog
from raysweep.catalog.connect import connect
from raysweep.catalog.queries import (QueryError, get_query, install_queries, load_queries, parse_query, run_query,
                                      run_statement)
from raysweep.store.layout import SweepLayout, partition_keys
from raysweep.store.shards import EMBEDDING_PARTITIONS, TOKEN_PARTITIONS, TRAIN_METRICS_PARTITIONS, complete_shards
from tests.synthetic_sweep import MISSING, STEPS, write_synthetic_sweep

FINAL = STEPS[-1]


def _exact_bin(count: int) -> int:
    """floor(log3(count)) in integers: no float rounding at powers of three."""
    if count == 0:
        return -1
    k = 0
    while 3 ** (k + 1) <= count:
        k += 1
    return k


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = write_synthetic_sweep(tmp_path_factory.mktemp("sweep") / "alpha")
    build_catalog(root)
    return root


@pytest.fixture(scope="module")
def frames(sweep):
    """The raw shards read with pyarrow alone, partitions parsed from the paths."""
    layout = SweepLayout.at(sweep)
    parts = []
    for path in complete_shards(layout.shards_root("tokens")):
        frame = pq.read_table(path).to_pandas()
        keys = partition_keys(path)
        parts.append(frame.assign(split=keys["split"], trial_id=keys["trial"], step=int(keys["step"])))
    tokens = pd.concat(parts, ignore_index=True)
    tokens["loss"] = tokens["loss"].astype(np.float64)
    freq = pq.read_table(layout.data_dir("k1") / "token_freq.parquet").to_pandas()
    freq["bin"] = freq["count"].map(_exact_bin)
    trials = pq.read_table(layout.trials_file).to_pandas()
    return tokens, freq, trials


def query(sweep, sql: str) -> pd.DataFrame:
    with connect([sweep]) as con:
        return con.execute(sql).df()


def _type_loss(tokens, step_filter):
    selected = tokens[step_filter(tokens)]
    return (selected.groupby(["trial_id", "step", "split", "token_id"])
            .agg(n_occurrences=("loss", "size"), mean_loss=("loss", "mean"),
                 accuracy=("correct", "mean")).reset_index())


def _final(tokens):
    return tokens["step"] == FINAL


def assert_frames_match(got: pd.DataFrame, want: pd.DataFrame, keys: list[str]):
    got = got.sort_values(keys).reset_index(drop=True)
    want = want[list(got.columns)].sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-6, atol=1e-9)


def test_every_query_returns_its_declared_columns(sweep):
    with connect([sweep]) as con:
        for q in load_queries():
            if q.kind == "table":
                assert tuple(run_query(con, q.name).df().columns) == q.columns, q.name


def test_statements_create_the_tables_they_declare(sweep):
    """create_token_freq and create_catalog_info ran at build time → their tables have the declared columns."""
    with connect([sweep]) as con:
        for name, table in (("create_token_freq", "token_freq"), ("create_catalog_info", "catalog_info")):
            assert tuple(con.table(table).columns) == get_query(name, "statement").columns, name


def test_shard_views_show_partition_keys_and_file_columns_typed_as_the_schemas(sweep):
    """each view, full or empty, has the ShardView's columns and types; the partition schemas name the
    keys of the paths the layout builds."""
    layout = SweepLayout.at(sweep)
    assert list(partition_keys(layout.token_shard("train", "t", 3, 0))) == TOKEN_PARTITIONS.names
    assert list(partition_keys(layout.embedding_shard("t", 3))) == EMBEDDING_PARTITIONS.names
    assert list(partition_keys(layout.train_metrics_shard("t", 3))) == TRAIN_METRICS_PARTITIONS.names
    from raysweep.catalog.build import DUCKDB_TYPES, shard_select_sql

    with connect([sweep]) as con:
        for name, view in SHARD_VIEWS.items():
            want = [(shown, DUCKDB_TYPES[f.type]) for f, shown in view.fields()]
            assert [(c, str(t)) for c, t in zip(con.table(name).columns, con.table(name).types)] == want, name
    with duckdb.connect() as con:
        for name, view in SHARD_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {shard_select_sql(name, [])}")
            assert [(c, str(t)) for c, t in zip(con.table(name).columns, con.table(name).types)] == \
                [(shown, DUCKDB_TYPES[f.type]) for f, shown in view.fields()], name


def test_trial_panels_name_the_grid_axes_a_sweep_varies():
    """one vocabulary size and AdamW → the scale alone; two vocabulary sizes → with the vocabulary;
    another regularizer → with the regularizer."""
    with duckdb.connect() as con:
        con.execute("CREATE TABLE trials AS SELECT * FROM (VALUES ('a', 's1', 100, 'adamw'), "
                    "('b', 's1', 100, 'l2')) t(trial_id, scale, vocab_size, regularizer)")
        install_queries(con, [get_query("trial_panels")])

        def panels():
            return dict(run_query(con, "trial_panels").df()[["trial_id", "panel"]].itertuples(index=False))

        assert panels() == {"a": "s1", "b": "s1 / l2"}
        con.execute("INSERT INTO trials VALUES ('c', 's2', 200, 'adamw')")
        assert panels() == {"a": "s1 / vocab 100", "b": "s1 / vocab 100 / l2", "c": "s2 / vocab 200"}


def test_token_type_loss(sweep, frames):
    tokens, _, _ = frames
    want = _type_loss(tokens, _final)
    assert_frames_match(query(sweep, "SELECT * FROM token_type_loss()"), want,
                        ["trial_id", "split", "token_id"])
    everything = query(sweep, "SELECT * FROM token_type_loss(step := 'all')")
    assert len(everything) == len(_type_loss(tokens, lambda t: t["step"] > 0))
    at_20 = query(sweep, "SELECT DISTINCT trial_id FROM token_type_loss(step := 20)")
    assert MISSING[0] not in set(at_20["trial_id"]) and len(at_20) == 5


def _bin_loss(tokens, freq, step_filter):
    typed = _type_loss(tokens, step_filter).merge(freq[["token_id", "bin"]], on="token_id")
    typed["weighted"] = typed["mean_loss"] * typed["n_occurrences"]
    typed["weighted_acc"] = typed["accuracy"] * typed["n_occurrences"]
    out = typed.groupby(["trial_id", "step", "split", "bin"]).agg(
        n_types=("token_id", "size"), n_occurrences=("n_occurrences", "sum"),
        type_mean_loss=("mean_loss", "mean"), weighted=("weighted", "sum"),
        weighted_acc=("weighted_acc", "sum")).reset_index()
    out["occurrence_loss"] = out["weighted"] / out["n_occurrences"]
    out["accuracy"] = out["weighted_acc"] / out["n_occurrences"]
    return out


def test_bin_loss_with_unseen_bin_and_ties(sweep, frames):
    tokens, freq, _ = frames
    got = query(sweep, "SELECT * FROM bin_loss()")
    assert_frames_match(got, _bin_loss(tokens, freq, _final), ["trial_id", "split", "bin"])
    assert -1 in set(got["bin"])  # types 0 and 1 never occur in training
    # ties and powers of three: counts 3,3 -> bin 1; 9,9 -> bin 2; 27 -> 3; 81 -> 4; 243 -> 5
    bins = query(sweep, "SELECT token_id, bin FROM token_freq ORDER BY token_id")["bin"].tolist()
    assert bins == freq["bin"].tolist()


def test_bin_loss_with_min_occurrences_drops_thinly_seen_types(sweep, frames):
    tokens, freq, _ = frames
    got = query(sweep, "SELECT * FROM bin_loss(min_occurrences := 6)")
    typed = _type_loss(tokens, _final)
    kept = tokens.merge(typed[typed["n_occurrences"] >= 6][["trial_id", "step", "split", "token_id"]])
    assert_frames_match(got, _bin_loss(kept, freq, _final), ["trial_id", "split", "bin"])
    everything = query(sweep, "SELECT sum(n_types) AS n FROM bin_loss()")["n"][0]
    assert 0 < got["n_types"].sum() < everything  # the filter bites on this data, and keeps some


def _length_class(piece: str) -> str:
    n = len(piece.lstrip(" "))
    return "1" if n <= 1 else "2-3" if n <= 3 else "4-6" if n <= 6 else "7+"


def test_bin_loss_by_token_shape(sweep, frames):
    tokens, freq, _ = frames
    shapes = freq.assign(starts_word=freq["piece"].str.startswith(" "),
                         length_class=freq["piece"].map(_length_class))
    typed = _type_loss(tokens, _final).merge(shapes[["token_id", "bin", "starts_word", "length_class"]])
    want = typed.groupby(["trial_id", "step", "split", "bin", "starts_word", "length_class"]).agg(
        n_types=("token_id", "size"), n_occurrences=("n_occurrences", "sum"),
        type_mean_loss=("mean_loss", "mean")).reset_index()
    got = query(sweep, "SELECT * FROM bin_loss_by_token_shape()")
    assert_frames_match(got, want, ["trial_id", "split", "bin", "starts_word", "length_class"])
    assert got["starts_word"].nunique() == 2 and got["length_class"].nunique() == 4


def test_split_gap_puts_train_and_heldout_side_by_side(sweep, frames):
    tokens, freq, _ = frames
    bins = _bin_loss(tokens, freq, _final)
    wide = bins.pivot_table(index=["trial_id", "step", "bin"], columns="split",
                            values=["type_mean_loss", "n_types"]).reset_index()
    want = pd.DataFrame({"trial_id": wide["trial_id"], "step": wide["step"], "bin": wide["bin"],
                         "train_loss": wide[("type_mean_loss", "train")],
                         "heldout_loss": wide[("type_mean_loss", "heldout")],
                         "train_types": wide[("n_types", "train")],
                         "heldout_types": wide[("n_types", "heldout")]})
    want["gap"] = want["heldout_loss"] - want["train_loss"]
    assert_frames_match(query(sweep, "SELECT * FROM split_gap()"), want, ["trial_id", "bin"])


def test_vocab_frequency_profile(sweep, frames):
    _, freq, _ = frames
    got = query(sweep, "SELECT * FROM vocab_frequency_profile(max_count := 9)")
    counts = freq["count"].to_numpy()
    seen, low = counts[counts > 0], counts[(counts >= 1) & (counts <= 9)]
    assert got.to_dict("records") == [{
        "data_key": "k1", "vocab_size": len(counts), "n_seen_types": len(seen),
        "n_unseen_types": int((counts == 0).sum()), "n_low_frequency_types": len(low),
        "low_frequency_type_share": pytest.approx(len(low) / len(seen)),
        "low_frequency_occurrence_share": pytest.approx(low.sum() / counts.sum()),
        "median_count": pytest.approx(float(np.median(seen)))}]


def test_balanced_vs_average(sweep, frames):
    tokens, _, _ = frames
    typed = _type_loss(tokens, _final)
    rows = []
    for (trial, step, split), group in typed.groupby(["trial_id", "step", "split"]):
        average = np.average(group["mean_loss"], weights=group["n_occurrences"])
        balanced = group["mean_loss"].mean()
        rows.append({"trial_id": trial, "step": step, "split": split, "n_types": len(group),
                     "n_occurrences": group["n_occurrences"].sum(), "average_loss": average,
                     "balanced_loss": balanced, "gap": balanced - average,
                     "ratio": balanced / average,
                     "accuracy": np.average(group["accuracy"], weights=group["n_occurrences"])})
    assert_frames_match(query(sweep, "SELECT * FROM balanced_vs_average()"), pd.DataFrame(rows),
                        ["trial_id", "split"])


def test_balanced_vs_average_ci_over_seeds(sweep, frames):
    """mean over seeds and the t-interval half-width (2 seeds: t(0.975, 1) = 12.7062)."""
    per_trial = query(sweep, "SELECT * FROM balanced_vs_average()").merge(frames[2], on="trial_id")
    got = query(sweep, "SELECT * FROM balanced_vs_average_ci()")
    assert len(got) == per_trial.groupby(["scale", "split", "weight_decay"]).ngroups
    for _, row in got.iterrows():
        seeds = per_trial[(per_trial["split"] == row["split"]) & (per_trial["weight_decay"] == row["weight_decay"])]
        assert row["n_seeds"] == len(seeds) == 2
        for metric in ("average_loss", "balanced_loss", "accuracy"):
            values = seeds[metric].to_numpy()
            assert row[metric] == pytest.approx(values.mean())
            half = 12.7062 * values.std(ddof=1) / np.sqrt(len(values))
            assert row[metric.replace("_loss", "") + "_ci95"] == pytest.approx(half, rel=1e-3)


def test_learning_speed_handles_a_missing_step(sweep, frames):
    tokens, freq, _ = frames
    typed = _type_loss(tokens, lambda t: t["step"] > 0)
    first = typed.groupby(["trial_id", "split"])["step"].min().rename("first_step").reset_index()
    base = typed.merge(first, left_on=["trial_id", "split", "step"],
                       right_on=["trial_id", "split", "first_step"])[
        ["trial_id", "split", "token_id", "first_step", "mean_loss"]].rename(columns={"mean_loss": "first_loss"})
    joined = typed.merge(base, on=["trial_id", "split", "token_id"])
    joined["ratio"] = joined["mean_loss"] / joined["first_loss"]
    want = joined.groupby(["trial_id", "split", "token_id"]).agg(
        n_steps=("step", "size"), first_step=("first_step", "min"), first_loss=("first_loss", "min"),
        mean_ratio=("ratio", "mean")).reset_index()
    want["learning_speed"] = 1 - want["mean_ratio"]
    want = want.merge(freq[["token_id", "bin"]], on="token_id")
    got = query(sweep, "SELECT * FROM learning_speed()")
    assert_frames_match(got, want, ["trial_id", "split", "token_id"])
    assert got.loc[got["trial_id"] == MISSING[0], "n_steps"].max() == len(STEPS) - 1
    bins = query(sweep, "SELECT * FROM learning_speed_bins()")
    want_bins = want.groupby(["trial_id", "split", "bin"]).agg(
        n_types=("token_id", "size"), learning_speed=("learning_speed", "mean")).reset_index()
    assert_frames_match(bins, want_bins, ["trial_id", "split", "bin"])


def test_excess_loss_and_its_confidence_interval(sweep, frames):
    tokens, freq, trials = frames
    bins = _bin_loss(tokens, freq, _final).merge(trials, on="trial_id")
    base = bins[bins["weight_decay"] == 0][["scale", "seed", "split", "bin", "type_mean_loss", "trial_id"]]
    paired = bins.merge(base, on=["scale", "seed", "split", "bin"], suffixes=("", "_base"))
    paired["excess_loss"] = paired["type_mean_loss"] - paired["type_mean_loss_base"]
    got = query(sweep, "SELECT * FROM excess_loss()")
    want = paired.rename(columns={"type_mean_loss": "loss", "type_mean_loss_base": "baseline_loss",
                                  "trial_id_base": "baseline_trial_id"})
    assert_frames_match(got, want, ["trial_id", "split", "bin"])
    ci = query(sweep, "SELECT * FROM excess_loss_ci() WHERE weight_decay = 1.0")
    for _, row in ci.iterrows():
        values = paired[(paired["weight_decay"] == 1.0) & (paired["split"] == row["split"])
                        & (paired["bin"] == row["bin"])]["excess_loss"].to_numpy()
        assert row["n_seeds"] == len(values) == 2
        t_975_df1 = 12.7062  # Student t, 97.5% quantile, 1 degree of freedom (2 seeds)
        half = t_975_df1 * values.std(ddof=1) / np.sqrt(len(values))
        assert row["mean_excess"] == pytest.approx(values.mean())
        assert row["ci95_high"] - row["mean_excess"] == pytest.approx(half, rel=1e-3)


def test_loss_vs_frequency_slope(sweep, frames):
    tokens, freq, _ = frames
    typed = _type_loss(tokens, _final).merge(freq[["token_id", "count"]], on="token_id")
    typed = typed[typed["count"] > 0]
    got = query(sweep, "SELECT * FROM loss_vs_frequency_slope()")
    for _, row in got.iterrows():
        group = typed[(typed["trial_id"] == row["trial_id"]) & (typed["split"] == row["split"])]
        x, y = np.log(group["count"].to_numpy()), group["mean_loss"].to_numpy()
        slope = np.polyfit(x, y, 1)[0]
        r2 = np.corrcoef(x, y)[0, 1] ** 2
        assert row["n_types"] == len(group)
        assert row["slope"] == pytest.approx(slope) and row["r2"] == pytest.approx(r2)


def test_embedding_norms(sweep, frames):
    _, freq, _ = frames
    parts = []
    for path in complete_shards(SweepLayout.at(sweep).shards_root("embeddings")):
        keys = partition_keys(path)
        parts.append(pq.read_table(path).to_pandas().assign(trial_id=keys["trial"], step=int(keys["step"])))
    emb = pd.concat(parts).merge(freq[["token_id", "bin"]], on="token_id")
    emb = emb[emb["step"] == FINAL]
    want = emb.groupby(["trial_id", "step", "bin"]).agg(
        n_types=("token_id", "size"), input_norm=("input_norm", "mean"),
        output_norm=("output_norm", "mean")).reset_index()
    assert_frames_match(query(sweep, "SELECT * FROM embedding_norms()"), want, ["trial_id", "bin"])


def test_train_curves_deduplicate_retried_steps(sweep):
    got = query(sweep, "SELECT * FROM train_curves() WHERE trial_id = 's1-wd0.0-s0' ORDER BY step")
    assert got["step"].tolist() == list(range(1, 31))
    # steps 16..20 were rewritten by the later chunk (upto=30): its values win
    assert got.loc[got["step"] == 18, "loss"].item() == pytest.approx(10 / 18 + 30)
    assert got.loc[got["step"] == 5, "loss"].item() == pytest.approx(10 / 5 + 20)


@pytest.mark.parametrize("share", [0.1, 0.25])
def test_loss_plateau_compares_the_last_window_with_the_one_before(sweep, share):
    """At share 0.25 the earlier window crosses the steps a retry rewrote: the later chunk's values count."""
    parts = []
    for path in complete_shards(SweepLayout.at(sweep).shards_root("train_metrics")):
        keys = partition_keys(path)
        parts.append(pq.read_table(path).to_pandas().assign(trial_id=keys["trial"], upto=int(keys["upto"])))
    steps = pd.concat(parts).sort_values("upto").drop_duplicates(["trial_id", "step"], keep="last")
    rows = []
    for trial_id, curve in steps.groupby("trial_id"):
        last, window = curve["step"].max(), max(1, int(curve["step"].max() * share))
        loss = curve.set_index("step")["loss"]
        previous_loss = loss[(loss.index > last - 2 * window) & (loss.index <= last - window)].mean()
        last_loss = loss[loss.index > last - window].mean()
        rows.append(dict(trial_id=trial_id, last_step=last, window_steps=window, previous_loss=previous_loss,
                         last_loss=last_loss, relative_change=last_loss / previous_loss - 1))
    got = query(sweep, f"SELECT * FROM loss_plateau(share := {share})")
    assert_frames_match(got, pd.DataFrame(rows), ["trial_id"])
    assert (got["relative_change"] < 0).all()  # the synthetic curves fall to the end


def test_two_sweeps_attached_qualify_trial_ids(sweep, tmp_path):
    other = write_synthetic_sweep(tmp_path / "beta", rng_seed=7)
    build_catalog(other)
    with connect([sweep, other]) as con:
        per_sweep = dict(con.execute("SELECT sweep, count(*) FROM tokens GROUP BY 1").fetchall())
        ids = con.execute("SELECT DISTINCT trial_id FROM balanced_vs_average()").df()["trial_id"]
        both = con.execute("SELECT * FROM bin_loss()").df()
        bins = con.execute("SELECT freq_bin(0), freq_bin(1), freq_bin(8), freq_bin(9), freq_bin(243)").fetchone()
    with connect([sweep]) as con:
        alone = con.execute("SELECT * FROM bin_loss()").df()
    assert bins == (-1, 0, 1, 2, 5)  # the union's freq_bin is analysis/freq_bin.sql, as in each catalog
    assert set(per_sweep) == {"alpha", "beta"}
    assert set(ids) == {f"{s}/{t}" for s in ("alpha", "beta") for t in alone["trial_id"].unique()}
    mine = both[both["trial_id"].str.startswith("alpha/")].assign(
        trial_id=lambda d: d["trial_id"].str.removeprefix("alpha/"))
    assert_frames_match(mine, alone, ["trial_id", "split", "bin"])


def test_loader_rejects_malformed_queries():
    good = "-- name: q\n-- description: d\n-- params: k := 1\n-- columns: a\nWITH final AS (SELECT k AS a)\nSELECT * FROM final"
    assert parse_query(good, "q.sql").params == (("k", "1"),)
    listed = good.replace("k := 1", "o := ['a, b', 'c'], k := 1  -- names, e.g. 'x'").replace("k AS a", "o, k AS a")
    assert parse_query(listed, "q.sql").params == (("o", "['a, b', 'c']"), ("k", "1"))
    with pytest.raises(QueryError, match="q.sql: parameter 'z' is declared but never used"):
        parse_query(good.replace("k := 1", "k := 1, z := 2"), "q.sql")
    with pytest.raises(QueryError, match="must equal the file name"):
        parse_query(good, "other.sql")
    with pytest.raises(QueryError, match="header lacks -- columns:"):
        parse_query(good.replace("-- columns: a\n", ""), "q.sql")
    with pytest.raises(QueryError, match="q.sql: -- kind: 'view' is not one of table, scalar, statement"):
        parse_query("-- kind: view\n" + good, "q.sql")


def test_loader_reads_scalar_and_statement_kinds():
    """a scalar takes positional parameters and declares its return type; a statement's `$name`
    parameters must each be declared, and each declared one used."""
    scalar = "-- name: f\n-- kind: scalar\n-- description: d\n-- params: c  -- a count\n-- returns: INTEGER\nc + 1"
    assert parse_query(scalar, "f.sql").create_sql(temporary=True) == "CREATE OR REPLACE TEMP MACRO f(c) AS\nc + 1"
    with pytest.raises(QueryError, match="f.sql: -- params: 'c := 1' is not a bare name"):
        parse_query(scalar.replace("params: c ", "params: c := 1 "), "f.sql")
    with pytest.raises(QueryError, match="header lacks -- returns:"):
        parse_query(scalar.replace("-- returns: INTEGER\n", ""), "f.sql")
    statement = "-- name: s\n-- kind: statement\n-- description: d\n-- params: v\n-- columns: v\n" \
                "CREATE TABLE s AS SELECT $v AS v"
    assert parse_query(statement, "s.sql").params == (("v", None),)
    with pytest.raises(QueryError, match=r"s.sql: parameter \$w is used but not declared"):
        parse_query(statement + ", $w AS w", "s.sql")
    with pytest.raises(QueryError, match="s.sql: parameter 'v' is declared but never used"):
        parse_query(statement.replace("$v", "1"), "s.sql")
    with pytest.raises(QueryError, match="a statement is run by run_statement"):
        parse_query(statement, "s.sql").create_sql()


def test_queries_run_by_name_with_checked_parameters(sweep):
    """run_query passes parameters as values; a wrong name or parameter is a QueryError naming it."""
    with connect([sweep]) as con:
        assert_frames_match(run_query(con, "bin_loss", min_occurrences=6).df(),
                            con.execute("SELECT * FROM bin_loss(min_occurrences := 6)").df(),
                            ["trial_id", "split", "bin"])
        with pytest.raises(QueryError, match="bin_loss.sql: no parameter min_count; it takes: step, min_occurrences"):
            run_query(con, "bin_loss", min_count=6)
        with pytest.raises(QueryError, match="no table query named 'bin_los' in analysis/"):
            run_query(con, "bin_los")
        with pytest.raises(QueryError, match="create_pareto_front.sql: parameter objectives is required"):
            run_statement(con, "create_pareto_front")


def test_study_tables_are_written_and_agree_with_each_other(sweep, tmp_path):
    """`raysweep tables`: one CSV per table plus tables.md; the excess table equals the bin table's
    difference to λ = 0, and the CI table's means equal balanced_vs_average averaged over seeds."""
    from raysweep import cli
    from raysweep.present.tables import TABLES

    assert all(get_query(q, "table") for _, q in TABLES.values())
    assert TABLES["table1_balanced_vs_average"][1] == "balanced_vs_average_ci"  # Table 1: one query everywhere
    assert cli.main(["tables", str(sweep), "--out", str(tmp_path / "t")]) == 0
    tables = {name: pd.read_csv(tmp_path / "t" / f"{name}.csv") for name in TABLES}
    page = (tmp_path / "t" / "tables.md").read_text()
    assert all(title in page for title, _ in TABLES.values())
    assert all(len(frame) > 0 for frame in tables.values())
    bins = tables["bin_loss"].set_index(["split", "scale", "regularizer", "weight_decay", "bin"])["type_mean_loss"]
    for row in tables["excess_loss_by_bin"].itertuples():
        here, base = (row.split, row.scale, row.regularizer, row.weight_decay, row.bin), \
            (row.split, row.scale, row.regularizer, 0.0, row.bin)
        assert row.mean_excess == pytest.approx(bins[here] - bins[base], abs=1e-9)
    per_trial = query(sweep, "SELECT * FROM balanced_vs_average()").merge(
        pd.read_parquet(SweepLayout.at(sweep).trials_file), on="trial_id")
    means = per_trial.groupby(["split", "weight_decay"])["balanced_loss"].mean()
    for row in tables["table1_balanced_vs_average"].itertuples():
        assert row.balanced_loss == pytest.approx(means[(row.split, row.weight_decay)])


def test_sql_cli_takes_a_query_longer_than_a_file_name(sweep, capsys):
    """The last argument is a sweep dir, a .sql file or a query; a query past 255 characters is not
    a path to stat (the OS refuses the name)."""
    from raysweep import cli

    query_text = "SELECT count(*) AS n FROM tokens WHERE " + " OR ".join(f"token_id = {i}" for i in range(40))
    assert len(query_text) > 255
    assert cli.main(["sql", str(sweep), query_text]) == 0
    assert "n" in capsys.readouterr().out
