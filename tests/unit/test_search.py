"""`search: optuna`: the spec section's checks, the points a search turns into trials, and the
objectives and Pareto front as SQL over a synthetic sweep, against pandas."""

from __future__ import annotations

import itertools
import typing

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from ray import tune

from raysweep.catalog.build import build_catalog, trial_objectives
from raysweep.catalog.connect import connect
from raysweep.catalog.queries import get_query, install_queries, run_query, run_statement
from raysweep.spec import SpecError, parse_spec
from raysweep.spec.schema import OBJECTIVE_METRICS, OptunaConfig, SearchParam
from raysweep.store.layout import SweepLayout
from raysweep.trials.optuna import OptunaSource
from raysweep.trials.point import TrialPoint
from tests.synthetic_sweep import STEPS, write_synthetic_sweep

SEARCH = {"name": "s", "search": "optuna", "grid": {"weight_decay": [0.0], "scale": ["tiny"], "seed": [3]},
          "optuna": {"space": {"weight_decay": {"low": 0.0, "high": 1.0},
                               "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}}}


def _problems(raw: dict, *overrides: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, overrides)
    return info.value.problems


@pytest.mark.parametrize("overrides, expected", [
    (("optuna.space={}",), "optuna.space: empty"),
    (("optuna.space.lr.low=0.02",), "optuna.space.lr: low (0.02) must be < high (0.01)"),
    (("optuna.space.weight_decay.low=-0.5",), "optuna.space.weight_decay.low: must be a finite number >= 0"),
    (("optuna.space.dropout={low: 0.0, high: 1.0}",), "optuna.space.dropout.high: must be < 1.0, got 1.0"),
    (("optuna.space.lr.low=0.0", "optuna.space.lr.log=false"), "optuna.space.lr.low: must be > 0.0, got 0.0"),
    (("optuna.space.freq_decay_alpha={low: 0.0, high: 5.0}",), "optuna.space.freq_decay_alpha.high: must be <= 4.0"),
    (("optuna.objectives=[heldout_average_loss, train_lowest_bin_loss]", "eval.n_heldout_sequences=0"),
     "optuna.objectives: heldout_average_loss needs eval.n_heldout_sequences > 0"),
    (("optuna.space.weight_decay.log=true",), "optuna.space.weight_decay: log needs low > 0"),
    (("optuna.space.beta2={low: 0.9, high: 0.99}",), "optuna.space.beta2: must be one of 'weight_decay'"),
    (("optuna.objectives=[train_balanced_loss, train_balanced_loss]",), "optuna.objectives: duplicate values"),
    (("optuna.objectives=[perplexity]",), "optuna.objectives[0]: must be one of"),
    (("grid.seed=[0, 1]",), "grid.seed: search: optuna runs one value of it"),
    (("grid.decay_policy=[all_matrices, no_embeddings]",), "grid.decay_policy: axes are for search: grid"),
    (("search=grid",), "optuna: is set but search is 'grid'"),
    (("train.decay_policy=no_embeddings", "optuna.space.freq_decay_alpha={low: 0.0, high: 1.0}"),
     "optuna.space.freq_decay_alpha: acts on the embedding rows"),
])
def test_search_spec_errors_name_the_field(overrides, expected):
    problems = _problems(SEARCH, *overrides)
    assert any(p.startswith(expected) for p in problems), problems


def test_fixed_weight_decay_must_be_one_value_when_not_searched():
    raw = {**SEARCH, "grid": {"weight_decay": [0.0, 1.0], "scale": ["tiny"], "seed": [0]},
           "optuna": {"space": {"lr": {"low": 1e-4, "high": 1e-2}}}}
    assert any(p.startswith("grid.weight_decay: search: optuna runs one value") for p in _problems(raw))


def test_param_space_has_distributions_for_searched_fields_and_constants_for_the_rest():
    spec = parse_spec(SEARCH, ("train.label_smoothing=0.1",))
    space = OptunaSource(spec).param_space()
    assert isinstance(space["weight_decay"], tune.search.sample.Float)
    assert isinstance(space["lr"].get_sampler(), tune.search.sample.LogUniform)
    assert (space["scale"], space["seed"], space["label_smoothing"], space["decay_policy"]) == \
        ("tiny", 3, 0.1, "all_matrices")
    assert not isinstance(space.get("lr"), float)


def test_sampled_point_is_rounded_so_id_row_and_run_agree():
    spec = parse_spec(SEARCH)
    source = OptunaSource(spec)
    config = {**source.param_space(), "weight_decay": 0.123456789, "lr": 0.00314159265}
    point = source.point_of(config)
    assert (point.weight_decay, point.lr) == (0.1235, 0.003142)
    assert point.trial_id == "tiny-wd0.1235-s3-lr0.003142"
    # Two samples that round alike are the same trial (and find each other's results).
    assert source.point_of({**config, "weight_decay": 0.12349}).trial_id == point.trial_id


def test_grid_trial_ids_are_unchanged_by_the_lr_field():
    assert TrialPoint(weight_decay=0.1, scale="tiny", seed=0).trial_id == "tiny-wd0.1-s0"


def test_search_points_come_from_the_trials_started(tmp_path):
    spec = parse_spec(SEARCH, (f"storage={tmp_path}",))
    source = OptunaSource(spec)
    assert source.points() == []
    started = [TrialPoint(weight_decay=w, scale="tiny", seed=3, lr=lr) for w, lr in ((0.5, 1e-3), (0.0, 2e-3))]
    for point in started:
        source.record(point, spec.layout.point_file(point.trial_id))
    assert sorted(p.trial_id for p in source.points()) == sorted(p.trial_id for p in started)


def test_corner_points_span_the_box():
    spec = parse_spec(SEARCH, ("optuna.space.freq_decay_alpha={low: -1.0, high: 2.0}",))
    corners = {(p.weight_decay, p.lr, p.freq_decay_alpha) for p in OptunaSource(spec).bounding_points()}
    assert corners == set(itertools.product((0.0, 1.0), (1e-4, 1e-2), (-1.0, 2.0)))


# The objectives and the front as SQL --------------------------------------------------------

@pytest.fixture(scope="module")
def search_sweep(tmp_path_factory):
    """The synthetic sweep as a search: five λ, one seed, spec.yaml saying `search: optuna`."""
    root = write_synthetic_sweep(tmp_path_factory.mktemp("search") / "srch", seeds=(0,),
                                 weight_decays=(0.0, 0.25, 0.5, 0.75, 1.0), rng_seed=7)
    spec = parse_spec({**SEARCH, "name": "srch", "optuna": {**SEARCH["optuna"],
                       "objectives": ["heldout_average_loss", "train_lowest_bin_loss"]}}, (f"storage={root.parent}",))
    assert spec.layout == SweepLayout.at(root)
    spec.layout.spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    build_catalog(root)
    return root


def _objectives_by_pandas(con) -> dict:
    """Average, token-balanced and lowest-seen-bin loss per (trial, split), from the raw rows."""
    tokens = con.execute("SELECT t.*, f.bin FROM final_tokens t JOIN trials tr USING (trial_id) "
                         "JOIN token_freq f ON f.data_key = tr.data_key AND f.token_id = t.token_id").df()
    out = {}
    for (trial, split), rows in tokens.groupby(["trial_id", "split"]):
        per_type = rows.groupby("token_id").agg(loss=("loss", "mean"), bin=("bin", "first"))
        seen = per_type[per_type["bin"] >= 0]
        lowest = seen["bin"].min()
        out[trial, split] = {"average_loss": rows["loss"].astype(np.float64).mean(),
                             "balanced_loss": per_type["loss"].mean(), "lowest_bin": lowest,
                             "lowest_bin_loss": seen[seen["bin"] == lowest]["loss"].mean()}
    return out


def test_trial_objectives_match_pandas(search_sweep):
    with connect([search_sweep]) as con:
        want = _objectives_by_pandas(con)
        got = con.execute("SELECT * FROM trial_objectives()").df()
    assert len(got) == len(want) == 10
    for row in got.to_dict("records"):
        for name, value in want[row["trial_id"], row["split"]].items():
            assert row[name] == pytest.approx(value, rel=1e-6), name


@pytest.mark.parametrize("step", [None, STEPS[0]])
def test_one_trial_catalog_scores_a_trial_as_the_full_catalog_does(search_sweep, step):
    """What a search trial reports (at an eval step, or its last) equals what the sweep's catalog computes later."""
    layout = SweepLayout.at(search_sweep)
    trials = pa.parquet.read_table(layout.trials_file).to_pylist()
    with connect([search_sweep]) as con:
        full = con.execute("SELECT * FROM trial_objectives(step := ?)", [step or "final"]).df()
    assert set(full["step"]) == {step or STEPS[-1]}
    for i in (0, 3):
        row = trials[i]
        trial_id = row["trial_id"]
        got = trial_objectives(layout, row, layout.data_dir("k1"), step)
        assert len(got) == 2 * 3
        for split in ("train", "heldout"):
            expected = full[(full["trial_id"] == trial_id) & (full["split"] == split)].iloc[0]
            for name in ("average_loss", "balanced_loss", "lowest_bin_loss"):
                assert got[f"{split}_{name}"] == pytest.approx(expected[name], rel=1e-9)


def test_pareto_front_is_the_non_dominated_set(search_sweep):
    with connect([search_sweep]) as con:
        front = con.execute("SELECT * FROM pareto_front").df()
        objectives = con.execute("SELECT * FROM trial_objectives()").df()
    by_split = {s: objectives[objectives["split"] == s].set_index("trial_id") for s in ("train", "heldout")}
    points = {t: (by_split["heldout"].loc[t, "average_loss"], by_split["train"].loc[t, "lowest_bin_loss"])
              for t in by_split["train"].index}
    dominated = {a for a, pa_ in points.items() for b, pb in points.items()
                 if all(x <= y for x, y in zip(pb, pa_)) and pb != pa_}
    assert set(front["trial_id"]) == set(points) - dominated
    assert list(front.columns[:3]) == ["trial_id", "heldout_average_loss", "train_lowest_bin_loss"]
    assert front["heldout_average_loss"].is_monotonic_increasing
    for row in front.itertuples():  # the front carries each trial's own values
        assert (row.heldout_average_loss, row.train_lowest_bin_loss) == pytest.approx(points[row.trial_id])


def test_pareto_front_table_is_the_long_front_made_wide(search_sweep):
    """pareto_front: trial_id, the spec's objectives in order, the searched fields (SearchParam), in
    pareto_front_trials' order and values."""
    objectives = ["heldout_average_loss", "train_lowest_bin_loss"]
    with connect([search_sweep]) as con:
        front = con.table("pareto_front").df()
        long = run_query(con, "pareto_front_trials", objectives=objectives).df()
    assert list(front.columns) == ["trial_id", *objectives, *typing.get_args(SearchParam)]
    assert list(front["trial_id"]) == list(long.drop_duplicates("trial_id")["trial_id"])
    wide = long.pivot(index="trial_id", columns="objective", values="value").loc[front["trial_id"], objectives]
    assert np.array_equal(front[objectives].to_numpy(), wide.to_numpy())


def test_search_objectives_cover_every_objective_of_the_spec(search_sweep):
    """<split>_<metric> for every split and OBJECTIVE_METRICS → trial_objectives' value; the searched
    fields are SearchParam's; without objectives, the spec's default ones."""
    assert get_query("search_fields").columns == ("trial_id", *typing.get_args(SearchParam))
    spec_default = repr(OptunaConfig.model_fields["objectives"].default).replace('"', "'")
    assert dict(get_query("search_objectives").params)["objectives"] == spec_default
    assert dict(get_query("pareto_front_trials").params)["objectives"] == spec_default
    names = [f"{split}_{metric}" for split in ("train", "heldout") for metric in OBJECTIVE_METRICS]
    with connect([search_sweep]) as con:
        got = run_query(con, "search_objectives", objectives=names).df()
        want = run_query(con, "trial_objectives").df()
    assert len(got) == len(names) * want["trial_id"].nunique() and got["value"].notna().all()
    for row in want.itertuples():
        for metric in OBJECTIVE_METRICS:
            value = got[(got["trial_id"] == row.trial_id) & (got["objective"] == f"{row.split}_{metric}")]["value"]
            assert value.item() == pytest.approx(getattr(row, metric), rel=1e-12)  # summed in another order


def _toy_search(con, rows: str) -> None:
    """trials and a stand-in trial_objectives (columns as the real one's), then the front's queries."""
    con.execute("CREATE TABLE trials AS SELECT * FROM (VALUES ('a', 'TERMINATED'), ('b', 'TERMINATED'), "
                "('c', 'TERMINATED'), ('d', 'TERMINATED'), ('e', 'ERROR')) t(trial_id, status)")
    for column in typing.get_args(SearchParam):
        con.execute(f"ALTER TABLE trials ADD COLUMN {column} DOUBLE DEFAULT 0")
    con.execute("CREATE MACRO trial_objectives() AS TABLE SELECT trial_id, 30 AS step, split, x AS average_loss, "
                "0.0 AS balanced_loss, 0 AS lowest_bin, y AS lowest_bin_loss, 0.5 AS accuracy "
                f"FROM (VALUES {rows}) t(trial_id, split, x, y)")
    install_queries(con, [get_query(name) for name in ("search_fields", "search_objectives", "pareto_front_trials")])


def test_pareto_front_keeps_ties_and_drops_the_dominated():
    """a and b tie, c is dominated by a, d trades off; e would dominate all but did not finish; the
    columns follow the objectives' order, the rows sort by them."""
    with duckdb.connect() as con:
        _toy_search(con, "('a', 'train', 1.0, 2.0), ('b', 'train', 1.0, 2.0), ('c', 'train', 1.0, 3.0), "
                         "('d', 'train', 0.5, 4.0), ('e', 'train', 0.1, 0.1), ('a', 'heldout', 9.0, 9.0)")
        objectives = ["train_average_loss", "train_lowest_bin_loss"]
        long = run_query(con, "pareto_front_trials", objectives=objectives).df()
        assert list(long["trial_id"]) == ["d", "d", "a", "a", "b", "b"]
        assert list(long["front_rank"]) == [1, 1, 2, 2, 3, 3] and list(long["objective"]) == objectives * 3
        run_statement(con, "create_pareto_front", objectives=objectives[::-1])
        front = con.table("pareto_front").df()
    assert list(front.columns[:3]) == ["trial_id", "train_lowest_bin_loss", "train_average_loss"]
    assert list(front["trial_id"]) == ["a", "b", "d"]  # by train_lowest_bin_loss first now
    assert list(front["train_lowest_bin_loss"]) == [2.0, 2.0, 4.0]


def test_pareto_front_keeps_a_trial_missing_an_objective():
    """a NULL objective (the trial has no rows of that split) neither dominates nor is dominated, and
    sorts last on that objective, as NULLs do."""
    with duckdb.connect() as con:
        _toy_search(con, "('a', 'train', 1.0, 2.0), ('a', 'heldout', 1.0, 2.0), ('b', 'train', 0.5, 1.0), "
                         "('c', 'train', 2.0, 3.0), ('c', 'heldout', 2.0, 3.0)")
        run_statement(con, "create_pareto_front", objectives=["train_average_loss", "heldout_average_loss"])
        front = con.table("pareto_front").df()
    assert list(front["trial_id"]) == ["b", "a"]  # a dominates c; b has no heldout value
    assert np.isnan(front["heldout_average_loss"].iloc[0])


def test_search_tables_are_per_trial_and_agree_with_the_catalog(search_sweep, tmp_path):
    """A search's tables: the front, every trial's objectives, every trial's bins; none pooled."""
    import pandas as pd

    from raysweep.present.tables import SEARCH_TABLES, write_tables

    written = write_tables(search_sweep, tmp_path)
    assert sorted(p.name for p in written) == sorted([f"{n}.csv" for n in SEARCH_TABLES] + ["tables.md"])
    trials = pd.read_csv(tmp_path / "search_trials.csv")
    front = pd.read_csv(tmp_path / "pareto_front.csv")
    bins = pd.read_csv(tmp_path / "search_bin_loss.csv")
    assert len(trials) == 2 * 5 and set(front["trial_id"]) <= set(trials["trial_id"])
    lowest = bins[bins["bin"] >= 0].sort_values("bin").groupby(["split", "trial_id"]).first()["type_mean_loss"]
    for row in trials.itertuples():
        assert row.lowest_bin_loss == pytest.approx(lowest[row.split, row.trial_id], rel=1e-9)
