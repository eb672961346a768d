"""Per-token scoring, atomic shards and the DuckDB catalog on synthetic-but-real files."""

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raysweep.catalog.connect import connect
from raysweep.catalog.build import build_catalog
from raysweep.models.build import build_config, build_model
from raysweep.present.report import report_table
from raysweep.run.trials_table import TRIALS_SCHEMA
from raysweep.store.layout import SweepLayout
from raysweep.store.shards import (TOKEN_SCHEMA, complete_shards, is_complete, manifest_path, token_types_table,
                                   type_sums, write_shard)
from raysweep.train.evaluate import n_batches_for, rank_slice, score


def test_scored_rows_average_to_the_models_own_loss():
    """mean of per-token rows == model(input_ids, labels=input_ids).loss (HF's own reduction)."""
    model = build_model(build_config("nano", vocab_size=200), seed=0)
    sequences = np.random.default_rng(0).integers(0, 200, size=(7, 16)).astype(np.uint16)
    table = score(model, sequences, np.arange(7), batch_size=3, n_batches=4, device=torch.device("cpu"))
    assert table.num_rows == 7 * 15 and table.schema == TOKEN_SCHEMA
    with torch.no_grad():
        ids = torch.from_numpy(sequences.astype(np.int64))
        expected = model(input_ids=ids, labels=ids).loss.item()
    assert np.mean(table["loss"].to_numpy(), dtype=np.float64) == pytest.approx(expected, abs=1e-5)
    frame = table.to_pandas()
    assert frame.groupby("seq_id")["pos"].apply(list).map(lambda p: p == list(range(1, 16))).all()
    assert (frame["token_id"].to_numpy() == sequences[:, 1:].reshape(-1)).all()


def test_rank_slices_are_disjoint_and_cover_with_equal_batch_counts():
    for n, world in [(10, 2), (3, 4), (64, 3)]:
        slices = [rank_slice(n, r, world) for r in range(world)]
        assert sorted(np.concatenate(slices).tolist()) == list(range(n))
        assert n_batches_for(n, world, 4) * 4 >= max(len(s) for s in slices)


def _token_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"seq_id": np.repeat(np.arange(n // 4), 4).astype(np.int32),
                     "pos": np.tile(np.arange(1, 5), n // 4).astype(np.int32),
                     "token_id": rng.integers(0, 10, n).astype(np.int32),
                     "loss": rng.random(n).astype(np.float32),
                     "correct": rng.random(n) > 0.5}, schema=TOKEN_SCHEMA)


def test_shard_is_complete_only_with_its_manifest(tmp_path):
    path = SweepLayout.at(tmp_path).token_shard("train", "t1", 10, 0)
    write_shard(_token_table(40), path)
    assert is_complete(path, verify_checksum=True)
    # a rewrite that dies after dropping the manifest leaves the shard looking incomplete
    manifest_path(path).unlink()
    assert not is_complete(path) and complete_shards(tmp_path) == []
    write_shard(_token_table(40, seed=1), path)
    path.write_bytes(path.read_bytes()[:-10])  # truncated after the manifest was written
    assert is_complete(path) and not is_complete(path, verify_checksum=True)
    assert not list(path.parent.glob(".*tmp*"))


_SLOW_WRITER = """
import sys
import numpy as np, pyarrow as pa
from pathlib import Path
from raysweep.store.shards import TOKEN_SCHEMA, write_shard
n = 40_000_000  # seconds of zstd work: long enough to be killed mid-write
rng = np.random.default_rng(0)
table = pa.Table.from_arrays([pa.array(np.zeros(n, np.int32)), pa.array(np.zeros(n, np.int32)),
    pa.array(rng.integers(0, 50_000, n, dtype=np.int32)), pa.array(rng.random(n, dtype=np.float32)),
    pa.array(np.zeros(n, bool))], schema=TOKEN_SCHEMA)
print("writing", flush=True)
write_shard(table, Path(sys.argv[1]))
"""


def test_writer_killed_mid_write_leaves_nothing_that_counts(tmp_path):
    """SIGKILL a process inside write_shard: no shard counts; the next writer of that shard
    clears the dead one's temporary file and completes it."""
    path = SweepLayout.at(tmp_path).token_shard("train", "t1", 10, 0)
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    deadline = time.time() + 60
    while not list(path.parent.glob(".part-0.parquet.tmp-*")):
        assert writer.poll() is None and time.time() < deadline, "the writer finished before it could be killed"
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert complete_shards(tmp_path) == [] and not path.exists()
    assert list(path.parent.glob(".part-0.parquet.tmp-*"))  # the dead writer's leftovers
    write_shard(_token_table(40), path)
    assert complete_shards(tmp_path) == [path] and is_complete(path, verify_checksum=True)
    assert not list(path.parent.glob(".*tmp*"))


def _fake_sweep(root):
    """Two trials (wd 0 and 1) over a 6-token vocab, with hand-chosen losses."""
    layout = SweepLayout.at(root)
    data_dir = layout.data_dir("k1")
    data_dir.mkdir(parents=True)
    pq.write_table(pa.table({"token_id": pa.array(range(6), pa.int32()),
                             "count": [0, 1, 2, 3, 9, 27], "rank": [6, 5, 4, 3, 2, 1],
                             "share": [0, 1 / 42, 2 / 42, 3 / 42, 9 / 42, 27 / 42],
                             "piece": list("abcdef"), "n_chars": [1] * 6}),
                   data_dir / "token_freq.parquet")
    (data_dir / "meta.json").write_text('{"data_key": "k1", "vocab_size": 6}')  # marks the data dir complete
    trial = {"scale": "nano", "seed": 0, "steps": 10, "data_key": "k1", "status": "TERMINATED",
             "decay_policy": "all_matrices", "freq_decay_alpha": 0.0, "label_smoothing": 0.0, "dropout": 0.0,
                               "regularizer": "adamw", "n_params": 1,
             "flops_per_token": 6, "lr": 1e-3, "error": None}
    pq.write_table(pa.Table.from_pylist([{**trial, "trial_id": "a", "weight_decay": 0.0},
                                         {**trial, "trial_id": "b", "weight_decay": 1.0}],
                                        schema=TRIALS_SCHEMA), layout.trials_file)
    rows = {"a": ([1, 1, 4, 5], [1.0, 3.0, 0.5, 0.1]), "b": ([1, 4, 4, 5], [4.0, 1.0, 2.0, 0.3])}
    for trial, (tokens, losses) in rows.items():
        for step, offset in ((5, 10.0), (10, 0.0)):  # step 5 must not leak into the final table
            table = pa.table({"seq_id": pa.array([0] * 4, pa.int32()), "pos": pa.array([1, 2, 3, 4], pa.int32()),
                              "token_id": pa.array(tokens, pa.int32()),
                              "loss": pa.array([l + offset for l in losses], pa.float32()),
                              "correct": [True] * 4})
            write_shard(table, layout.token_shard("train", trial, step, 0))
    # an incomplete shard (no manifest) must be ignored by the catalog
    pq.write_table(_token_table(8), layout.token_shard("train", "a", 10, 1))


def test_catalog_views_and_report_values(tmp_path):
    _fake_sweep(tmp_path)
    build_catalog(tmp_path)
    with connect([tmp_path]) as con:
        assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == 16
        bins = dict(con.execute("SELECT token_id, bin FROM token_freq").fetchall())
    assert bins == {0: -1, 1: 0, 2: 0, 3: 1, 4: 2, 5: 3}  # exact powers of 3 start a new bin
    table = report_table(tmp_path).set_index("weight_decay")
    # trial a: type means {1: 2.0, 4: 0.5, 5: 0.1}; occurrences average 1.15
    assert table.loc[0.0, "average_loss"] == pytest.approx(1.15, abs=1e-6)
    assert table.loc[0.0, "balanced_loss"] == pytest.approx((2.0 + 0.5 + 0.1) / 3, abs=1e-6)
    assert table.loc[0.0, "bin0"] == pytest.approx(2.0) and table.loc[1.0, "bin2"] == pytest.approx(1.5)
    assert table.loc[1.0, "balanced_loss"] == pytest.approx((4.0 + 1.5 + 0.3) / 3, abs=1e-6)


def test_catalog_of_a_sweep_without_shards_yet(tmp_path):
    """no complete shards → typed, empty views and an explicit 'nothing yet' report."""
    _fake_sweep(tmp_path)
    for manifest in tmp_path.rglob("_*.manifest.json"):
        manifest.unlink()
    build_catalog(tmp_path)
    with connect([tmp_path]) as con:
        assert con.execute("SELECT count(*), sum(loss) FROM tokens").fetchone() == (0, None)
        assert con.execute("SELECT count(*) FROM train_metrics").fetchone()[0] == 0
    assert report_table(tmp_path).empty


def test_catalog_skips_data_dirs_still_being_built(tmp_path):
    """A data dir counts only with its meta.json (written or uploaded last): a staging dir and an
    interrupted upload contribute no token_freq rows."""
    _fake_sweep(tmp_path)
    layout = SweepLayout.at(tmp_path)
    complete = layout.data_dir("k1") / "token_freq.parquet"
    for unfinished in ("k2", ".k3.tmp-123"):
        layout.data_dir(unfinished).mkdir()
        shutil.copy(complete, layout.data_dir(unfinished) / "token_freq.parquet")
    (layout.data_dir(".k3.tmp-123") / "meta.json").write_text('{"data_key": "k3"}')
    build_catalog(tmp_path)
    with connect([tmp_path]) as con:
        assert con.execute("SELECT DISTINCT data_key FROM token_freq").fetchall() == [("k1",)]


def test_a_step_counts_only_when_every_rank_finished_it(tmp_path):
    """Rank 1 of one trial kept dying in its final eval: its part-1 of the held-out split never became
    complete. The catalog, and so every query, shows that trial's earlier steps only (its train split at that
    step too: half an eval is not the step's), and every other trial whole."""
    from tests.synthetic_sweep import STEPS, write_synthetic_sweep

    sweep = write_synthetic_sweep(tmp_path / "runs" / "s")
    trial = "s1-wd1.0-s0"
    lost = SweepLayout.at(sweep).token_shard("heldout", trial, STEPS[-1], 1)
    manifest_path(lost).unlink()  # written, never confirmed
    build_catalog(sweep)
    with connect([sweep]) as con:
        last_step = dict(con.execute("SELECT trial_id, max(step) FROM tokens GROUP BY 1").fetchall())
        at_final = dict(con.execute("SELECT trial_id, count(DISTINCT split) FROM final_tokens GROUP BY 1").fetchall())
        ranks = con.execute("SELECT DISTINCT step, seq_id >= 6 FROM tokens WHERE trial_id <> ? ORDER BY 1, 2",
                            [trial]).fetchall()
        binned = {row[0] for row in con.execute("SELECT trial_id FROM bin_loss()").fetchall()}
    assert last_step[trial] == STEPS[-2]
    assert {t: s for t, s in last_step.items() if t != trial} == dict.fromkeys(set(last_step) - {trial}, STEPS[-1])
    assert trial not in at_final and set(at_final.values()) == {2} and len(at_final) == len(last_step) - 1
    assert ranks == [(s, r) for s in STEPS for r in (False, True)]  # both ranks' rows at every step of the others
    assert trial not in binned


def test_rollups_and_the_rows_they_stand_for_give_the_same_answer(tmp_path):
    """Evals with a rollup (written as EvalHook writes one) and evals without (a sweep from before rollups) side by
    side: every per-type query gives what the per-occurrence rows give, the catalog writes nothing into the sweep,
    and a rollup of an eval that is not whole (rank 1 never finished) stays out of the views, as its rows do."""
    from tests.synthetic_sweep import STEPS, VOCAB, write_synthetic_sweep

    sweep = write_synthetic_sweep(tmp_path / "runs" / "s")
    layout = SweepLayout.at(sweep)
    token_shards = complete_shards(layout.shards_root("tokens"))
    for shard in token_shards[::3]:  # a third of the evals get their rollup
        keys = dict(part.split("=") for part in shard.parts if "=" in part)
        rank_shards = sorted(shard.parent.glob("part-*.parquet"))
        rows = pa.concat_tables([pq.read_table(p) for p in rank_shards])
        write_shard(token_types_table(type_sums(rows, VOCAB)),
                    layout.token_types_shard(keys["split"], keys["trial"], int(keys["step"])))
    trial = "s1-wd1.0-s0"
    manifest_path(layout.token_shard("heldout", trial, STEPS[-1], 1)).unlink()  # this eval is not whole
    half = pq.read_table(layout.token_shard("heldout", trial, STEPS[-1], 0))
    write_shard(token_types_table(type_sums(half, VOCAB)), layout.token_types_shard("heldout", trial, STEPS[-1]))
    rollups = complete_shards(layout.shards_root("token_types"))
    assert 5 < len(rollups) < len(token_shards) / 2
    build_catalog(sweep)
    assert complete_shards(layout.shards_root("token_types")) == rollups  # a reader writes no rollup
    with connect([sweep]) as con:
        evals = con.execute("SELECT DISTINCT trial_id, split, step FROM tokens ORDER BY ALL").fetchall()
        rolled = con.execute("SELECT DISTINCT trial_id, split, step FROM token_types ORDER BY ALL").fetchall()
        final = con.execute("SELECT DISTINCT trial_id, split, step FROM final_token_types ORDER BY ALL").fetchall()
        per_type = {name: con.execute(f"SELECT * FROM {name}(step := 'all') ORDER BY trial_id, step, split, "
                                      "token_id").df() for name in ("token_type_loss", "token_type_loss_raw")}
    assert rolled == evals and (trial, "heldout", STEPS[-1]) not in rolled and len(evals) > 20
    assert final == [e for e in evals if e[2] == STEPS[-1]]
    expected, got = per_type["token_type_loss_raw"], per_type["token_type_loss"]
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    keys = ["trial_id", "step", "split", "token_id", "n_occurrences"]
    assert (got[keys].to_numpy() == expected[keys].to_numpy()).all()
    np.testing.assert_allclose(got["mean_loss"], expected["mean_loss"], rtol=1e-9)
    np.testing.assert_allclose(got["accuracy"], expected["accuracy"], rtol=1e-12)


def test_trials_that_ended_in_error_are_named_and_left_out_of_table_1(tmp_path, capsys):
    """An ERROR trial (here one that wrote every shard, then failed) is named with its error by `report`, on the
    page and in tables.md, and Table 1 pools only the finished seeds unless include_errors := true."""
    from tests.conftest import run_cli_in_process
    from tests.synthetic_sweep import write_synthetic_sweep

    sweep = write_synthetic_sweep(tmp_path / "runs" / "s")
    trials = pq.read_table(sweep / "trials.parquet").to_pylist()
    failed = trials[0]["trial_id"]
    trials[0] |= {"status": "ERROR", "error": "RuntimeError: CUDA out of memory"}
    pq.write_table(pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA), sweep / "trials.parquet")
    build_catalog(sweep)
    code, out, _ = run_cli_in_process(["report", str(sweep)], capsys)
    assert code == 0 and f"{failed}: ERROR (RuntimeError: CUDA out of memory)" in out
    run_cli_in_process(["tables", str(sweep), "--out", str(tmp_path / "t")], capsys)
    assert f"{failed}: ERROR" in (tmp_path / "t" / "tables.md").read_text()
    with connect([sweep]) as con:
        point = con.execute("SELECT scale, weight_decay FROM trials WHERE trial_id = ?", [failed]).fetchone()
        seeds = {include: con.execute(
            "SELECT DISTINCT n_seeds FROM balanced_vs_average_ci(include_errors := ?) WHERE scale = ? AND "
            "weight_decay = ?", [include, *point]).fetchall() for include in (False, True)}
    assert seeds == {False: [(1,)], True: [(2,)]}


def test_a_shard_is_on_disk_before_its_manifest(tmp_path, monkeypatch):
    """The order a power loss cannot break: the shard's bytes flushed, renamed into place, the rename flushed,
    and only then the manifest (itself flushed the same way)."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(source, target):
        events.append(("replace", str(target)))
        return real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = SweepLayout.at(tmp_path).token_shard("train", "t", 10, 0)
    write_shard(_token_table(4), path)
    shard, manifest, directory = str(path), str(manifest_path(path)), str(path.parent)
    at = {}
    for i, event in enumerate(events):
        at.setdefault(event, i)  # each event's first time
    assert events[at[("replace", shard)] - 1][0] == "fsync"  # the temporary file, just before its rename
    assert at[("replace", shard)] < at[("fsync", directory)] < at[("replace", manifest)]
    assert events[at[("replace", manifest)] - 1][0] == "fsync" and events[-1] == ("fsync", directory)
