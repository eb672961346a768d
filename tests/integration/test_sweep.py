"""End to end on a real local Ray: one worker per trial (two trials at once), FSDP2 on 2 gloo workers
where the test says so, Parquet shards, DuckDB catalog.

One uninterrupted reference sweep (2 trials) is the yardstick; a killed-then-resumed sweep must
reproduce its per-token shards exactly (an injected worker crash must too: test_object_storage.py,
where the restart reads its checkpoint back from S3).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig

from raysweep.catalog.connect import connect
from raysweep.ops.status import trial_status
from raysweep.data.frequency import read_token_counts
from raysweep.data.pack import open_array
from raysweep.data.prepare import PreparedData
from raysweep.models.build import build_config, build_model
from raysweep.spec.schema import ModelConfig
from raysweep.store.layout import SweepLayout, tokenizer_file
from raysweep.store.shards import manifest_path
from raysweep.train.checkpoint import load_model_weights
from raysweep.train.loop import batch_rows
from tests.browser import open_report_page
from tests.conftest import cli_env, kill_session_and_its_ray, run_cli, run_cli_in_process, tiny_spec_dict, write_spec

pytestmark = pytest.mark.ray

SEQ_LEN, N_TRAIN_EVAL, N_HELDOUT_EVAL, STEPS, EVAL_EVERY = 32, 12, 10, 40, 20


def _tokens(sweep_dir: Path, where: str = "true"):
    with connect([sweep_dir]) as con:
        return con.execute(f"SELECT * FROM tokens WHERE {where} "
                           "ORDER BY split, trial_id, step, seq_id, pos").df()


def test_row_count_is_eval_tokens_x_evals_x_trials_without_duplicates(reference):
    """(b) 2 trials x 2 evals x (12 + 10) sequences x 31 targets, every key once."""
    expected = 2 * (STEPS // EVAL_EVERY) * (N_TRAIN_EVAL + N_HELDOUT_EVAL) * (SEQ_LEN - 1)
    with connect([reference]) as con:
        assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == expected
        duplicates = con.execute("""SELECT count(*) FROM (SELECT split, trial_id, step, seq_id, pos
            FROM tokens GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0]
        statuses = con.execute("SELECT status, count(*) FROM trials GROUP BY 1").fetchall()
        metric_steps = con.execute("""SELECT trial_id, count(*), count(DISTINCT step), min(step), max(step)
            FROM train_metrics GROUP BY 1""").fetchall()
    assert duplicates == 0
    assert sorted(m[1:] for m in metric_steps) == [(STEPS, STEPS, 1, STEPS)] * 2
    assert statuses == [("TERMINATED", 2)]
    # no stray files either: every parquet file on disk is a complete shard
    on_disk = ds.dataset(reference / "shards" / "tokens", format="parquet", partitioning="hive")
    assert on_disk.count_rows() == expected


def test_train_metrics_carry_throughput_and_mfu(reference):
    """every step has tokens/s and an MFU that is tokens/s x FLOPs per token over the workers'
    peak (recorded in attempts.jsonl), and a wall-clock time that grows with the step."""
    with connect([reference]) as con:
        rows = con.execute("""SELECT c.trial_id, c.step, c.tokens_per_s, c.mfu, c.time, tr.flops_per_token
            FROM train_curves() c JOIN trials tr USING (trial_id) ORDER BY c.trial_id, c.step""").df()
    assert len(rows) == 2 * STEPS and (rows["tokens_per_s"] > 0).all()
    for trial_id, trial in rows.groupby("trial_id"):
        attempt = json.loads((reference / "train" / trial_id / "attempts.jsonl").read_text().splitlines()[0])
        expected = trial["tokens_per_s"] * trial["flops_per_token"] / (attempt["workers"] * attempt["peak_flops"])
        assert np.allclose(trial["mfu"], expected, rtol=1e-9) and (trial["mfu"] < 1).all()
        assert trial["time"].is_monotonic_increasing


def test_attempts_time_the_worker_group_start(reference):
    """The startup cost (issue 6, P4) splits at the train function's entry: Ray's worker-group start
    and the import before it, raysweep's setup after it, and then the first step."""
    with connect([reference]) as con:
        first_steps = dict(con.execute("SELECT trial_id, min(time) FROM train_curves() GROUP BY 1").fetchall())
    for trial_id, first_step_done in first_steps.items():
        attempt = json.loads((reference / "train" / trial_id / "attempts.jsonl").read_text().splitlines()[0])
        assert 0 < attempt["train_fn_entered_s"] < attempt["since_driver_start_s"]
        driver_started = attempt["time"] - attempt["since_driver_start_s"]
        assert driver_started + attempt["train_fn_entered_s"] < attempt["time"] < first_step_done


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_shard_losses_equal_the_models_loss_from_the_checkpoint(reference, split):
    """(a) final checkpoint loaded outside raysweep → HF loss == mean of that step's shard rows."""
    trial_id = "nano-wd1.0-s0"
    data = PreparedData.load(next((reference / "data").iterdir()))
    model = build_model(build_config("nano", data.vocab_size, eos_token_id=data.eos_id), seed=123)
    step = load_model_weights(model, reference / "train" / trial_id / f"step-{STEPS:08d}")
    assert step == STEPS
    ids = torch.from_numpy(np.asarray(open_array(data.data_dir, f"eval-{split}")).astype(np.int64))
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    rows = _tokens(reference, f"trial_id = '{trial_id}' AND split = '{split}' AND step = {STEPS}")
    assert len(rows) == ids.shape[0] * (SEQ_LEN - 1)
    assert rows["loss"].astype(np.float64).mean() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("step", [1, EVAL_EVERY + 1], ids=["first-window", "second-window"])
def test_logged_training_loss_is_the_models_loss_on_that_steps_batch(reference, step):
    """train_metrics' loss at the first step of a report window is the loss of the weights it
    started from (the seeded init, the step-20 checkpoint) on that step's batch (the mean of its two
    equal halves' losses): the per-step buffer and its index are right."""
    trial_id, batch_size = "nano-wd1.0-s0", 4
    data = PreparedData.load(next((reference / "data").iterdir()))
    model = build_model(build_config("nano", data.vocab_size, eos_token_id=data.eos_id), seed=0)
    if step > 1:
        assert load_model_weights(model, reference / "train" / trial_id / f"step-{step - 1:08d}") == step - 1
    train_rows = open_array(data.data_dir, "train")
    rows = batch_rows(step - 1, 0, len(train_rows), batch_size)
    with torch.no_grad():
        halves = [torch.from_numpy(train_rows[np.sort(half)].astype(np.int64)) for half in np.split(rows, 2)]
        expected = np.mean([model(input_ids=ids, labels=ids).loss.item() for ids in halves])
    with connect([reference]) as con:
        logged, = con.execute("SELECT loss FROM train_curves() WHERE trial_id = ? AND step = ?",
                              [trial_id, step]).fetchone()
    assert logged == pytest.approx(expected, rel=1e-5)


def test_tensorboard_events_equal_the_train_metrics_and_the_eval_losses(reference):
    """Each trial's TensorBoard events, read back with tensorboard's EventAccumulator: every step's loss, lr,
    tokens/s and MFU equal its train_metrics rows, and each eval's average and token-balanced loss per split
    equal what SQL computes from its token shards (steps 20 and 40)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with connect([reference]) as con:
        metrics = con.execute("SELECT trial_id, step, loss, lr, tokens_per_s, mfu FROM train_metrics").df()
        evals = con.execute("""
            SELECT trial_id, split, step, sum(total) / sum(n) AS loss, avg(total / n) AS balanced_loss
            FROM (SELECT trial_id, split, step, token_id, sum(loss) AS total, count(*) AS n
                  FROM tokens GROUP BY ALL)
            GROUP BY ALL""").df()
    for trial_id in ("nano-wd0.0-s0", "nano-wd1.0-s0"):
        events = EventAccumulator(str(reference / "tensorboard" / trial_id), size_guidance={"scalars": 0})
        events.Reload()
        rows = metrics[metrics.trial_id == trial_id].set_index("step").sort_index()
        for name in ("loss", "lr", "tokens_per_s", "mfu"):
            logged = {e.step: e.value for e in events.Scalars(f"train/{name}")}
            assert sorted(logged) == list(rows.index) == list(range(1, STEPS + 1))
            assert [logged[step] for step in rows.index] == pytest.approx(rows[name].tolist(), rel=1e-6)
        for split in ("train", "heldout"):
            want = evals[(evals.trial_id == trial_id) & (evals.split == split)].set_index("step").sort_index()
            for metric, tag in (("loss", f"eval/loss_{split}"), ("balanced_loss", f"eval/balanced_loss_{split}")):
                logged = {e.step: e.value for e in events.Scalars(tag)}
                assert sorted(logged) == list(want.index) == [EVAL_EVERY, STEPS]
                assert [logged[step] for step in want.index] == pytest.approx(want[metric].tolist(), rel=1e-5)
            assert (want.balanced_loss != want.loss).all()  # two measures, not one logged twice


def test_status_shows_each_trials_loss_pace_and_the_sweep_line(reference):
    """A finished sweep's status: each trial at step 40 of 40 with its last training loss and its last report's
    median tokens/s from the train_metrics table, no ETA left, and a sweep line that counts both done."""
    from raysweep.ops.status import format_status

    frame = trial_status(reference).set_index("trial_id")
    with connect([reference]) as con:
        last = con.execute(f"""SELECT trial_id, arg_max(loss, step) AS loss,
                                      median(tokens_per_s) FILTER (WHERE step > {STEPS - EVAL_EVERY}) AS tokens_per_s
                               FROM train_metrics GROUP BY trial_id""").df().set_index("trial_id")
    assert sorted(frame.index) == sorted(last.index) == ["nano-wd0.0-s0", "nano-wd1.0-s0"]
    assert (frame.last_step == STEPS).all() and (frame.steps == STEPS).all() and frame.eta_s.isna().all()
    assert frame.loss.tolist() == pytest.approx(last.loss[frame.index].tolist(), rel=1e-9)
    assert frame.tokens_per_s.tolist() == pytest.approx(last.tokens_per_s[frame.index].tolist(), rel=1e-9)
    text = format_status(frame.reset_index())
    assert text.splitlines()[-1] == "sweep: 2 of 2 trials done, 0 running, 0 pending, 0 failed"


def test_killed_sweep_finishes_with_resume(reference, tmp_path, shared_ray):
    """(d) the sweep driver and its embedded Ray SIGKILLed once its first trial has finished, the
    other still training → `raysweep resume` restores Tune's state: the finished trial is not rerun,
    the interrupted one runs a second worker group (from its checkpoint, if it had one), and the
    shards equal the uninterrupted run's."""
    # One trial at a time (the same results): side by side, the two would finish together, and the kill
    # could find both done.
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(tmp_path / "runs", name="ref",
                                                                  resources={"max_concurrent_trials": 1}))
    sweep_dir = tmp_path / "runs" / "ref"
    env = cli_env(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "sweep", str(spec_path)],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    # the first trial finished and the second one's worker group started
    while not (list(sweep_dir.glob("train/*/complete.json")) and len(list(sweep_dir.glob("train/*/attempts.jsonl"))) == 2):
        assert process.poll() is None, "sweep exited before it could be interrupted"
        assert time.time() < deadline, "first trial did not finish in time"
        time.sleep(0.1)  # the second trial trains for a few seconds: kill well inside them
    kill_session_and_its_ray(process, env)
    finished = [p.parent.name for p in sweep_dir.glob("train/*/complete.json")]
    assert len(finished) == 1
    assert not (sweep_dir / "catalog.duckdb").exists()
    interrupted = ({"nano-wd0.0-s0", "nano-wd1.0-s0"} - set(finished)).pop()
    finished_attempts = (sweep_dir / "train" / finished[0] / "attempts.jsonl").read_text()

    resumed = run_cli(["resume", str(sweep_dir)], tmp_path, env=shared_ray)  # on another Ray, as after a lost head
    # the killed driver's lock is stale (its pid is gone): taken over, and said so
    assert (f"taking over the writer lock {sweep_dir / '.writer.lock'} from raysweep sweep (host "
            f"{socket.gethostname()}, pid {process.pid},") in resumed.stderr
    assert f"its pid {process.pid} is gone on this host" in resumed.stderr
    assert len(list(sweep_dir.glob("train/*/complete.json"))) == 2
    assert (sweep_dir / "train" / finished[0] / "attempts.jsonl").read_text() == finished_attempts
    assert len((sweep_dir / "train" / interrupted / "attempts.jsonl").read_text().splitlines()) == 2
    got, want = _tokens(sweep_dir), _tokens(reference)
    assert len(got) == len(want) > 0
    assert got.equals(want)
    assert run_cli(["verify", str(sweep_dir)], tmp_path).stdout.strip().endswith("ok")


def test_sql_library_on_a_real_sweep(reference):
    """every query returns rows on a real sweep; embedding norms cover the whole vocabulary at every eval (plot
    and tables of a real sweep: tests/integration/test_readme.py; its page: test_regularizer_axis_runs_through_fsdp)."""
    from raysweep.catalog.queries import load_queries
    from raysweep.catalog.connect import connect

    with connect([reference]) as con:
        for query in load_queries():
            if query.kind == "table":  # scalar macros and catalog statements select nothing
                assert con.execute(f"SELECT count(*) FROM {query.name}()").fetchone()[0] > 0, query.name
        vocab = PreparedData.load(next((reference / "data").iterdir())).vocab_size
        per_eval = con.execute("SELECT count(*) FROM embeddings GROUP BY trial_id, step").fetchall()
    assert per_eval == [(vocab,)] * 4


def test_sql_cli_is_read_only_and_exports(reference, tmp_path, capsys):
    catalog = reference / "catalog.duckdb"
    before = catalog.read_bytes()
    code, _, err = run_cli_in_process(["sql", str(reference), "DROP VIEW tokens"], capsys)
    assert code != 0 and "read-only" in err.lower()
    code, _, err = run_cli_in_process(["sql", str(reference), "SELECT nope FROM trials"], capsys)
    assert code != 0 and "nope" in err
    assert catalog.read_bytes() == before
    out = tmp_path / "b.csv"
    assert run_cli_in_process(["sql", str(reference), "SELECT * FROM balanced_vs_average()", "--format", "csv",
                               "--output", str(out)], capsys)[0] == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("trial_id,step,split") and len(lines) == 1 + 2 * 2


def _study_sql_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "token-studies.md").read_text()
    return [block.split("```", 1)[0] for block in text.split("```sql\n")[1:]]


def test_documented_studies_run_on_a_real_sweep(reference):
    """every ```sql block of docs/token-studies.md runs on the reference sweep; the first two (which select
    no subset by outcome) return rows."""
    from raysweep.catalog.connect import connect

    blocks = _study_sql_blocks()
    assert len(blocks) >= 3
    with connect([reference]) as con:
        results = [con.execute(block).fetchall() for block in blocks]
    assert results[0] and results[1]


def test_each_eval_writes_a_rollup_that_equals_its_rows(reference):
    """Rank 0 writes each eval's per-type rollup while the trial runs (before the trial's done marker, so not the
    catalog's backfill), and the per-type queries read from it what the per-occurrence rows say."""
    layout = SweepLayout.at(reference)
    for trial in ("nano-wd0.0-s0", "nano-wd1.0-s0"):
        finished = layout.done_file(trial).stat().st_mtime
        for step in (EVAL_EVERY, STEPS):
            for split in ("train", "heldout"):
                assert layout.token_types_shard(split, trial, step).stat().st_mtime < finished
    with connect([reference]) as con:
        per_type = {name: con.execute(f"SELECT * FROM {name}(step := 'all') ORDER BY trial_id, step, split, "
                                      "token_id").df() for name in ("token_type_loss", "token_type_loss_raw")}
    rolled, rows = per_type["token_type_loss"], per_type["token_type_loss_raw"]
    assert len(rolled) == len(rows) > 0
    assert (rolled.drop(columns=["mean_loss"]).to_numpy() == rows.drop(columns=["mean_loss"]).to_numpy()).all()
    np.testing.assert_allclose(rolled["mean_loss"], rows["mean_loss"], rtol=1e-9)


def test_verify_finds_missing_partial_and_unexpected_shards(reference, tmp_path, capsys):
    """a moved copy of a good sweep verifies; then one missing shard, one without manifest, one
    truncated, a stray rank, a leftover temp file and a final checkpoint with a truncated .distcp are each
    reported, exit 1."""
    import shutil

    copy = tmp_path / "moved" / "ref"
    shutil.copytree(reference, copy)
    code, out, _ = run_cli_in_process(["verify", str(copy)], capsys)
    assert code == 0 and out.strip().endswith(": ok")
    layout = SweepLayout.at(copy)
    layout.token_shard("train", "nano-wd0.0-s0", STEPS, 0).unlink()
    manifest_path(layout.token_shard("heldout", "nano-wd0.0-s0", STEPS, 0)).unlink()
    truncated = layout.token_shard("heldout", "nano-wd1.0-s0", EVAL_EVERY, 0)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    shutil.copy(layout.token_shard("train", "nano-wd1.0-s0", EVAL_EVERY, 0),
                layout.token_shard("train", "nano-wd1.0-s0", EVAL_EVERY, 7))
    (truncated.parent / ".part-0.parquet.tmp-abc").write_bytes(b"half")
    layout.token_types_shard("train", "nano-wd0.0-s0", EVAL_EVERY).unlink()
    torn = sorted(layout.checkpoint_dir("nano-wd0.0-s0", STEPS).glob("*.distcp"))[0]
    torn.write_bytes(torn.read_bytes()[:-100])  # lost after its _COMPLETE was written
    code, out, _ = run_cli_in_process(["verify", str(copy)], capsys)
    lines = out.splitlines()
    assert code == 1
    assert any(l.startswith("missing:") and l.endswith(f"step={STEPS}/part-0.parquet") for l in lines)
    assert any(l.startswith("partial:") and "split=heldout" in l and "part-0.parquet (no manifest)" in l
               for l in lines)
    assert any(l.startswith("partial:") and "part-0.parquet (checksum differs" in l for l in lines)
    assert any(l.startswith("unexpected:") and l.endswith("part-7.parquet") for l in lines)
    assert any(l.startswith("partial:") and ".tmp-abc" in l for l in lines)
    assert f"partial: {torn.parent} (a file's size differs from its _COMPLETE record)" in lines
    assert f"missing: {layout.token_types_shard('train', 'nano-wd0.0-s0', EVAL_EVERY)}" in lines
    assert lines[-1].endswith("7 problem(s)")


def test_regularizer_axis_runs_through_fsdp(tmp_path, shared_ray):
    """A grid over frequency-aware decay (alpha 0 and 0.5), with label smoothing and dropout on, and
    the blocks checkpointed as a long run would have them (compiled too: tests/unit/test_fsdp.py, as torch.compile
    costs minutes of CPU here): the trials are named and paired by their regularizer, and the per-row decay
    applied to the FSDP-sharded embeddings spares rows of rarer types relative to more frequent ones."""
    grid = {"weight_decay": [1.0], "scale": ["nano"], "seed": [0], "freq_decay_alpha": [0.0, 0.5],
            "label_smoothing": [0.1], "dropout": [0.1]}
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(  # 2 workers: FSDP2 over gloo, per-block units
        tmp_path / "runs", name="reg", grid=grid, train={"activation_checkpointing": 1},
        resources={"workers_per_trial": 2}))
    result = run_cli(["sweep", str(spec), "--report"], tmp_path, env=shared_ray)
    sweep = tmp_path / "runs" / "reg"
    assert "regularizer" in result.stdout  # two regularizers: the report says which row is which
    # --report: the page is the last line printed, and opens whole in a browser (tests/browser.py)
    assert result.stdout.splitlines()[-1] == str(SweepLayout.at(sweep).report_page)
    seen = open_report_page(SweepLayout.at(sweep).report_page, tmp_path / "report.png")
    assert {"1_loss_vs_rank", "7_training_curves", "9_embedding_norms"} <= set(seen.figures), seen.figures
    assert len(seen.tables) == 3 and all(seen.tables), seen.tables  # Table 1, excess over λ = 0, trials
    assert "nano-wd1.0-s0-ls0.1-do0.1" in seen.text and "nano-wd1.0-s0-fa0.5-ls0.1-do0.1" in seen.text
    # the console: progress lines of our own, no Tune table, no worker output (`-v` brings those back)
    progress = [line for line in result.stdout.splitlines() if " step " in line and " tok/s  ETA " in line]
    assert progress and all(re.fullmatch(r"nano-wd1\.0-s0-(fa0\.5-)?ls0\.1-do0\.1  step \d+/40  loss \d+\.\d{4}  "
                                         r"[\d,]+ tok/s  ETA (\d+[hms]\S*|-)", line) for line in progress), progress
    assert {line for line in result.stdout.splitlines() if line.endswith(": finished")} == {
        "nano-wd1.0-s0-ls0.1-do0.1: finished", "nano-wd1.0-s0-fa0.5-ls0.1-do0.1: finished"}
    assert "Trial status" not in result.stdout and "RayTrainWorker" not in result.stdout + result.stderr
    with connect([sweep]) as con:
        regularizers = dict(con.execute("SELECT trial_id, regularizer FROM trials").fetchall())
        # two ranks' rows summed into rank 0's rollup (a collective) say what the rows say
        rollup_vs_rows = con.execute(
            "SELECT count(*), count(a.step), count(b.step), bool_and(a.n_occurrences = b.n_occurrences), "
            "max(abs(a.mean_loss - b.mean_loss)), max(abs(a.accuracy - b.accuracy)) "
            "FROM token_type_loss(step := 'all') a FULL JOIN token_type_loss_raw(step := 'all') b "
            "USING (trial_id, step, split, token_id)").fetchone()
    n_pairs, n_rolled, n_from_rows, same_counts, loss_diff, accuracy_diff = rollup_vs_rows
    assert n_pairs == n_rolled == n_from_rows > 0 and same_counts, rollup_vs_rows
    assert loss_diff < 1e-9 and accuracy_diff < 1e-12, rollup_vs_rows
    rollups = list((sweep / "shards" / "token_types").rglob("part-0.parquet"))  # rank 0's, one per eval
    assert len(rollups) == 2 * 2 * 2  # trials x eval steps x splits
    assert all(r.stat().st_mtime < SweepLayout.at(sweep).done_file(r.parts[-3][len("trial="):]).stat().st_mtime
               for r in rollups)
    assert regularizers == {"nano-wd1.0-s0-ls0.1-do0.1": "adamw label_smoothing=0.1 dropout=0.1",
                            "nano-wd1.0-s0-fa0.5-ls0.1-do0.1":
                                "adamw freq_decay_alpha=0.5 label_smoothing=0.1 dropout=0.1"}
    for trial_id in regularizers:  # nano has one block: the trial's workers checkpointed it
        attempt = json.loads((sweep / "train" / trial_id / "attempts.jsonl").read_text().splitlines()[0])
        assert (attempt["compiled_blocks"], attempt["checkpointed_blocks"]) == (0, 1), attempt
    data = PreparedData.load(next((sweep / "data").iterdir()))
    counts = read_token_counts(data.data_dir, data.vocab_size)
    norms = {}
    for trial_id in regularizers:
        model = build_model(build_config("nano", data.vocab_size, eos_token_id=data.eos_id), seed=1)
        load_model_weights(model, sweep / "train" / trial_id / f"step-{STEPS:08d}")
        norms[trial_id] = model.get_input_embeddings().weight.detach().norm(dim=1).numpy()
    ratio = norms["nano-wd1.0-s0-fa0.5-ls0.1-do0.1"] / norms["nano-wd1.0-s0-ls0.1-do0.1"]
    median = np.median(counts[counts > 0])
    rare, frequent = (counts > 0) & (counts < median), counts > 4 * median
    assert rare.any() and frequent.any()
    assert ratio[rare].mean() > 1 > ratio[frequent].mean(), (ratio[rare].mean(), ratio[frequent].mean())


def test_sweep_with_a_failed_trial_exits_1_and_names_it(tmp_path, shared_ray):
    """A trial that runs out of retries (a worker dies, no restarts allowed) fails the command:
    exit 1, a last line naming the trial, the report of what did finish above it."""
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(
        tmp_path / "runs", name="fails", grid={"weight_decay": [1.0], "scale": ["nano"], "seed": [0]},
        failure={"max_failures": 0, "trial_max_failures": 0, "inject_crash_at_step": 10}))
    result = run_cli(["sweep", str(spec)], tmp_path, check=False, env=shared_ray)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("raysweep sweep: error: 1 of 1 trials did not finish (first: nano-wd1.0-s0: "), last
    assert "ray::" not in last and "\x1b[" not in last, last  # the cause, not the actor's coloured header
    assert "sweep dir:" in result.stdout

    # status reads the trial's error from the trial's own dir, even where Tune's state names another file
    sweep_dir = tmp_path / "runs" / "fails"
    (error,) = trial_status(sweep_dir)["error"]
    assert error  # the real cause, from error.txt
    secret = tmp_path / "secret.txt"
    secret.write_text("AWS_SECRET_ACCESS_KEY=hunter2")
    state_file = sorted((sweep_dir / "tune").glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    for trial in state["trial_data"]:
        run_metadata = json.loads(trial[1])
        assert run_metadata["error_filename"]
        trial[1] = json.dumps(run_metadata | {"error_filename": str(secret)})
    state_file.write_text(json.dumps(state))
    (error,) = trial_status(sweep_dir)["error"]
    assert "hunter2" not in error and error == ""


def test_vocab_axis_trains_each_size_on_its_own_data(tmp_path, shared_ray):
    """grid.vocab_size: one BPE and data dir per size, each trial's model sized to its vocabulary,
    the frequency profile and per-vocab report rows, and verify finds every shard. The model is a
    Hugging Face config from a local dir (gpt_neox, a layer overridden), not a preset; eval.at: [0]
    scores the initialization (learning speed's anchor), and every checkpoint is kept."""
    GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                  max_position_embeddings=64).save_pretrained(tmp_path / "neox")
    model = {"configs": {"neox": {"hf": str(tmp_path / "neox"), "overrides": {"num_hidden_layers": 1}}}}
    grid = {"weight_decay": [1.0], "scale": ["neox"], "seed": [0], "vocab_size": [300, 512]}
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(  # the axis replaces the tokenizer's single size
        tmp_path / "runs", name="vocab", grid=grid, model=model, eval={"at": [0]},
        train={"checkpoint_every": 10, "keep_checkpoints": "all"},
        data={"tokenizer": {"kind": "bpe", "min_frequency": 2}}))
    result = run_cli(["sweep", str(spec)], tmp_path, env=shared_ray)
    sweep = tmp_path / "runs" / "vocab"
    assert "vocab_size" in result.stdout  # two sizes: the report says which row is which
    with connect([sweep]) as con:
        trials = con.execute("SELECT trial_id, vocab_size, data_key FROM trials ORDER BY trial_id").fetchall()
        profile = con.execute("SELECT data_key, vocab_size FROM vocab_frequency_profile()").fetchall()
        max_token = dict(con.execute("SELECT trial_id, max(token_id) FROM tokens GROUP BY 1").fetchall())
        anchors = con.execute("SELECT DISTINCT first_step FROM learning_speed()").fetchall()
        initial = con.execute("SELECT trial_id, avg(loss::DOUBLE) FROM tokens WHERE step = 0 AND split = 'heldout' "
                              "GROUP BY 1 ORDER BY 1").fetchall()
    assert [t[0] for t in trials] == ["neox-wd1.0-s0-v300", "neox-wd1.0-s0-v512"]
    assert trials[0][2] != trials[1][2] and trials[0][1] <= 300 < trials[1][1] <= 512
    assert sorted(profile) == sorted((key, vocab) for _, vocab, key in trials)
    assert all(max_token[trial_id] < vocab for trial_id, vocab, _ in trials)  # each scored its own ids
    assert anchors == [(0,)]
    for (trial_id, vocab, key), (_, initial_loss) in zip(trials, initial):
        config = build_config("neox", vocab, ModelConfig(**model))
        assert (config.model_type, config.num_hidden_layers) == ("gpt_neox", 1)
        # step 0 is the model before any update: the seed's init scores the held-out set the same
        data = PreparedData.load(sweep / "data" / key)
        ids = torch.from_numpy(np.asarray(open_array(data.data_dir, "eval-heldout")).astype(np.int64))
        with torch.no_grad():
            assert build_model(config, seed=0)(input_ids=ids, labels=ids).loss.item() == pytest.approx(
                initial_loss, abs=1e-5)
        # loads only at its own size, and only into the architecture it trained
        load_model_weights(build_model(config, seed=1), sweep / "train" / trial_id / f"step-{STEPS:08d}")
        kept = sorted(p.name for p in (sweep / "train" / trial_id).glob("step-*"))
        assert kept == [f"step-{s:08d}" for s in range(10, STEPS + 1, 10)]  # all, not the newest 2
    assert run_cli(["verify", str(sweep)], tmp_path).returncode == 0


def test_export_opens_in_transformers_and_reproduces_the_shards(reference, tmp_path, capsys):
    """`raysweep export` → a dir that transformers opens without raysweep: the model's per-token losses on
    the held-out eval set equal the trial's final shard rows, and the tokenizer encodes as the sweep's did."""
    trial_id, out = "nano-wd1.0-s0", tmp_path / "model"
    assert run_cli_in_process(["export", str(reference), trial_id, str(out)], capsys)[0] == 0
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    data = PreparedData.load(next((reference / "data").iterdir()))
    text = "A quietly moving film about grief, with one scene too many."
    assert tokenizer(text).input_ids == Tokenizer.from_file(str(tokenizer_file(data.data_dir))).encode(text).ids
    assert tokenizer.eos_token_id == data.eos_id

    ids = torch.from_numpy(np.asarray(open_array(data.data_dir, "eval-heldout")).astype(np.int64))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    rows = _tokens(reference, f"trial_id = '{trial_id}' AND split = 'heldout' AND step = {STEPS}")  # seq, pos order
    np.testing.assert_allclose(losses.numpy(), rows["loss"].to_numpy(), rtol=0, atol=1e-5)

    code, _, err = run_cli_in_process(["export", str(reference), trial_id, str(tmp_path / "other"), "--step", "30"],
                                      capsys)
    assert code == 2
    every = tiny_spec_dict(reference)["train"]["checkpoint_every"]
    assert err.strip().splitlines()[-1].endswith(f"complete ones: {every}, {STEPS}")
    assert not (tmp_path / "other").exists()


def test_readme_python_api_snippet_runs(reference_run):
    """the README's ```python block, run as written (it made the reference sweep): it swept, printed the
    report and a SQL result, and read the study tables."""
    sweep_dir, result = reference_run
    assert "balanced_loss" in result.stdout and "type_mean_loss" in result.stdout  # report, then bin_loss()
    assert "balanced_ci95" in result.stdout  # Table 1 of the study tables
    assert sorted(p.name for p in (sweep_dir / "train").iterdir()) == ["nano-wd0.0-s0", "nano-wd1.0-s0"]
