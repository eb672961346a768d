"""Every command the README shows is run here, offline, as a reader would type it, or carries the README's mark
`# needs a cluster` / `# needs internet` at the end of its line.

The commands run against the reference sweep (tests/conftest.py: the README's ```python block run on the tiny
spec), copied to `runs/demo` of a scratch dir whose `examples/demo.yaml` is that tiny spec, so that the README's
paths work unchanged and what a command writes or extends leaves the shared sweep alone. `raysweep` commands run
in this process (a subprocess would import torch and Ray again, seconds each), but for the three that run a
sweep; `source` and `tensorboard` run as processes.

Two commands are exempt, listed in EXEMPT: `make demo` and `make test`. They are the CI entry itself (`make
test` runs this suite, which cannot run itself), and `make demo` is `make install` (which `make test` runs
first) and then `raysweep sweep examples/demo.yaml`, which the reference sweep runs through the README's
Python snippet on the tiny spec.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, readme_python_snippet, run_cli, run_cli_in_process, tiny_spec_dict, write_spec

README = REPO / "README.md"
MARKS = ("needs a cluster", "needs internet")
EXEMPT = {"make demo", "make test"}  # the CI entry itself: see the module's docstring
TRIALS = ["nano-wd0.0-s0", "nano-wd1.0-s0"]  # the reference sweep's

# Each README command a test below runs, as the README writes it (its trailing comment cut off).
SOURCE_VENV = "source .venv/bin/activate"
STATUS_WATCH = "raysweep status runs/demo --watch"
TENSORBOARD = "tensorboard --logdir runs/demo"
EXTEND = "raysweep sweep examples/demo.yaml --set grid.weight_decay='[0.0,0.1,1.0]'"
RESUME = "raysweep resume runs/demo"
REPORT_HTML = "raysweep report runs/demo --html"
PLOT_AND_TABLES = "raysweep plot runs/demo && raysweep tables runs/demo"
EXPORT = "raysweep export runs/demo nano-wd1.0-s0 out/nano-wd1"
OWN_CORPUS = ("raysweep sweep examples/demo.yaml --set name=mine --set data.corpus=./reviews.jsonl "
              "--set data.text_column=text")
CLUSTER_VALIDATE = "raysweep cluster validate clusters/aws-gpu.yaml"
SQL_QUERY = "raysweep sql runs/demo \"SELECT * FROM bin_loss() WHERE split = 'train'\""
SQL_PROMPT = "raysweep sql runs/demo"
SQL_TWO_SWEEPS = "raysweep sql runs/a runs/b \"SELECT * FROM balanced_vs_average()\""
RUN_HERE = {SOURCE_VENV, STATUS_WATCH, TENSORBOARD, EXTEND, RESUME, REPORT_HTML, PLOT_AND_TABLES, EXPORT,
            OWN_CORPUS, CLUSTER_VALIDATE, SQL_QUERY, SQL_PROMPT, SQL_TWO_SWEEPS}


def readme_blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def shell_commands() -> list[tuple[str, str]]:
    """(command, trailing comment) of every line of the shell blocks (the blocks without a language)."""
    lines = [line for language, body in readme_blocks() if language == "" for line in body.splitlines()]
    return [re.fullmatch(r"(.*?)(?:\s+#\s*(.*))?", line).groups("") for line in lines if line.strip()]


def test_every_readme_command_is_run_here_or_marked():
    """A command added to the README without a test here (or a mark) fails this; so does a test of a command the
    README no longer shows."""
    languages = [language for language, _ in readme_blocks()]
    # ``` is commands, ```python the snippet, ```text output: another kind of block needs a rule here first
    assert set(languages) == {"", "python", "text"}, languages
    python = [body for language, body in readme_blocks() if language == "python"]
    assert python == [readme_python_snippet()]  # the one conftest's reference_run runs
    unmarked = {command for command, comment in shell_commands() if not comment.startswith(MARKS)}
    assert unmarked - EXEMPT == RUN_HERE, (f"not run here: {sorted(unmarked - EXEMPT - RUN_HERE)}; "
                                           f"no longer in the README: {sorted(RUN_HERE - unmarked)}")
    assert EXEMPT <= unmarked


def _raysweep(command: str, root: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """A README `raysweep` command (`a && b` runs b only if a succeeded), in this process, in `root`: the exit
    code and the output of them all."""
    monkeypatch.chdir(root)
    outs, errs = [], []
    for part in command.split(" && "):
        argv = shlex.split(part)
        assert argv[0] == "raysweep", part
        code, out, err = run_cli_in_process(argv[1:], capsys)
        outs.append(out)
        errs.append(err)
        if code != 0:
            break
    return code, "".join(outs), "".join(errs)


def _make_readme_cwd(root: Path, reference: Path) -> Path:
    """`root` as the README's working dir: examples/demo.yaml the tiny spec, runs/demo a copy of the reference
    sweep (moved and renamed: a sweep dir is the same sweep wherever it lives)."""
    (root / "examples").mkdir()
    write_spec(root / "examples" / "demo.yaml", tiny_spec_dict("runs", name="demo"))
    shutil.copytree(reference, root / "runs" / "demo")
    return root


@pytest.fixture(scope="module")
def readme_cwd(reference, tmp_path_factory) -> Path:
    """The README's working dir for the commands that only read the sweep or write beside it."""
    return _make_readme_cwd(tmp_path_factory.mktemp("readme"), reference)


def _sweep_command(command: str, root: Path, ray_env: dict):
    """A README command that runs a sweep, in a subprocess on the shared Ray: as a driver, this process would
    keep the Ray auth state it first loaded (no token, when an earlier test used Ray without the shared one) and
    fail to connect."""
    argv = shlex.split(command)
    assert argv[0] == "raysweep", command
    return run_cli(argv[1:], root, env=ray_env)


def test_activate_puts_the_venvs_raysweep_on_path():
    result = subprocess.run(["bash", "-c", f"{SOURCE_VENV} && command -v raysweep"], cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / ".venv" / "bin" / "raysweep"


def test_cluster_validate_passes_the_shipped_config(capsys, monkeypatch):
    assert _raysweep(CLUSTER_VALIDATE, REPO, capsys, monkeypatch) == (0, "clusters/aws-gpu.yaml: ok\n", "")


@pytest.mark.ray
def test_status_watch_draws_a_finished_sweep_once_and_returns(readme_cwd, capsys, monkeypatch):
    def second_redraw(seconds):
        raise AssertionError("--watch waited to redraw a finished sweep")

    # the command's clock only, not time.sleep of every thread in this process
    monkeypatch.setattr("raysweep.cli.time", types.SimpleNamespace(sleep=second_redraw))
    code, out, _ = _raysweep(STATUS_WATCH, readme_cwd, capsys, monkeypatch)
    assert code == 0 and out.startswith("\x1b[H\x1b[2J")  # drawn in place
    lines = out.splitlines()
    for trial_id in TRIALS:
        assert re.match(rf"{re.escape(trial_id)} TERMINATED .* 40 +40 +\d+\.\d{{4}} +\d+ +- ", next(
            line for line in lines if line.startswith(trial_id))), out
    assert lines[-1] == "sweep: 2 of 2 trials done, 0 running, 0 pending, 0 failed"


@pytest.mark.ray
def test_tensorboard_serves_each_trials_curves(readme_cwd):
    """Run as written (no --port: TensorBoard takes the first free one from 6006 and says which), it serves
    the curves the README names for each trial."""
    log = readme_cwd / "tensorboard.log"
    venv_bin = str(Path(sys.executable).parent)
    with log.open("w") as output:
        server = subprocess.Popen(shlex.split(TENSORBOARD), cwd=readme_cwd, stdout=output, stderr=output,
                                  env={**os.environ, "PATH": venv_bin + os.pathsep + os.environ["PATH"]},
                                  start_new_session=True)  # its data server is a child: killed with it
    try:
        url = _poll(lambda: re.search(r"TensorBoard \S+ at (http://\S+/) ", log.read_text()), "its URL", log,
                    server)[1]

        def tags():  # the event files load in the background: empty until then
            runs = json.load(urllib.request.urlopen(url + "data/plugin/scalars/tags", timeout=10))
            return runs if all(f"tensorboard/{t}" in runs for t in TRIALS) else None

        runs = _poll(tags, "both trials' runs", log, server)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    for trial_id in TRIALS:
        assert {"train/loss", "train/lr", "train/tokens_per_s", "train/mfu", "eval/loss_heldout",
                "eval/balanced_loss_train"} <= set(runs[f"tensorboard/{trial_id}"]), runs


def _poll(found, what: str, log: Path, server: subprocess.Popen, timeout: float = 90):
    deadline = time.time() + timeout
    while not (result := found()):
        assert server.poll() is None, f"tensorboard exited {server.returncode}:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {what} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    return result


@pytest.mark.ray
def test_report_html_is_one_self_contained_page_of_the_trials(readme_cwd, capsys, monkeypatch):
    code, out, err = _raysweep(REPORT_HTML, readme_cwd, capsys, monkeypatch)
    assert code == 0, err
    page = Path(out.strip())
    assert page == readme_cwd / "runs" / "demo" / "report.html"
    html = page.read_text()
    assert all(trial_id in html for trial_id in TRIALS)
    sources = re.findall(r"""\b(?:src|href)=["']([^"']*)""", html)
    images = re.findall(r"<img\b", html)
    assert len(images) >= 3 and len([s for s in sources if s.startswith("data:image/")]) == len(images)
    assert not [s for s in sources if not s.startswith(("data:", "#"))], "the page loads something from elsewhere"


@pytest.mark.ray
def test_plot_and_tables_write_the_studys_figures_and_tables(readme_cwd, capsys, monkeypatch):
    from raysweep.present.tables import TABLES

    code, out, err = _raysweep(PLOT_AND_TABLES, readme_cwd, capsys, monkeypatch)
    assert code == 0, err
    written = [Path(p) for p in out.split()]
    figures = [p for p in written if p.parent == readme_cwd / "runs" / "demo" / "figures"]
    assert sorted(p.suffix for p in figures) == [".png"] * 9 + [".svg"] * 9
    assert all(p.stat().st_size > 1000 for p in figures)
    tables = [p for p in written if p.parent == readme_cwd / "runs" / "demo" / "tables"]
    assert sorted(p.name for p in tables) == sorted([f"{name}.csv" for name in TABLES] + ["tables.md"])
    assert len(tables) + len(figures) == len(written)
    table1 = pd.read_csv(readme_cwd / "runs" / "demo" / "tables" / "table1_balanced_vs_average.csv")
    # each weight decay x split; one seed, so no interval yet
    assert sorted(table1["weight_decay"]) == [0.0, 0.0, 1.0, 1.0] and table1["balanced_ci95"].isna().all()
    # one plateau row per trial here (one seed), its windows the last two tenths of the trial's steps
    plateau = pd.read_csv(readme_cwd / "runs" / "demo" / "tables" / "loss_plateau.csv")
    steps = pd.read_parquet(readme_cwd / "runs" / "demo" / "trials.parquet")["steps"].max()
    assert len(plateau) == 2 and (plateau["window_steps"] == steps // 10).all()
    assert np.allclose(plateau["relative_change"], plateau["last_loss"] / plateau["previous_loss"] - 1)


@pytest.mark.ray
def test_export_opens_offline_in_transformers_with_the_sweeps_loss(readme_cwd, capsys, monkeypatch):
    """The exported model's loss on the held-out eval set is the average loss the sweep recorded for it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raysweep.catalog.connect import connect
    from raysweep.data.pack import open_array
    from raysweep.data.prepare import PreparedData

    code, out, err = _raysweep(EXPORT, readme_cwd, capsys, monkeypatch)
    assert code == 0, err
    assert Path(out.strip()) == readme_cwd / "out" / "nano-wd1"
    model = AutoModelForCausalLM.from_pretrained(readme_cwd / "out" / "nano-wd1", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(readme_cwd / "out" / "nano-wd1", local_files_only=True)
    data = PreparedData.load(next((readme_cwd / "runs" / "demo" / "data").iterdir()))
    assert tokenizer.eos_token_id == data.eos_id
    ids = torch.from_numpy(np.asarray(open_array(data.data_dir, "eval-heldout")).astype(np.int64))
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    with connect([readme_cwd / "runs" / "demo"]) as con:
        recorded, = con.execute("SELECT average_loss FROM balanced_vs_average() WHERE trial_id = 'nano-wd1.0-s0' "
                                "AND split = 'heldout' AND step = 40").fetchone()
    assert loss == pytest.approx(recorded, abs=1e-5)


def _table(printed: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a DataFrame `raysweep sql` printed (no value here has a space)."""
    header, *rows = printed.splitlines()
    return header.split(), [row.split() for row in rows]


@pytest.mark.ray
def test_sql_query_prompt_and_two_sweeps(readme_cwd, capsys, monkeypatch):
    code, out, err = _raysweep(SQL_QUERY, readme_cwd, capsys, monkeypatch)
    assert code == 0, err
    header, rows = _table(out)
    assert header == ["trial_id", "step", "split", "bin", "n_types", "n_occurrences", "type_mean_loss",
                      "occurrence_loss", "accuracy"]
    assert {row[2] for row in rows} == {"train"} and {row[0] for row in rows} == set(TRIALS)

    # the prompt: a write refused, then a statement over two lines answered; end of input ends it
    monkeypatch.setattr("sys.stdin", io.StringIO("DROP VIEW tokens;\nSELECT trial_id, count(*) AS n\n"
                                                 "FROM tokens GROUP BY 1 ORDER BY 1;\n"))
    code, out, err = _raysweep(SQL_PROMPT, readme_cwd, capsys, monkeypatch)
    assert code == 0, err
    assert "error: query: DROP is not read-only" in out
    per_trial = 2 * (12 + 10) * 31  # evals x eval sequences x targets
    assert re.search(rf"│ {TRIALS[0]} │ +{per_trial} │\n│ {TRIALS[1]} │ +{per_trial} │", out), out

    for name in ("a", "b"):
        if not (readme_cwd / "runs" / name).exists():
            shutil.copytree(readme_cwd / "runs" / "demo", readme_cwd / "runs" / name)
    code, out, err = _raysweep(SQL_TWO_SWEEPS, readme_cwd, capsys, monkeypatch)
    assert code == 0, err
    header, rows = _table(out)
    assert header[:3] == ["trial_id", "step", "split"] and "balanced_loss" in header
    assert sorted(row[0] for row in rows) == sorted(f"{s}/{t}" for s in "ab" for t in TRIALS for _ in range(2))


def _attempts(sweep: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sweep.glob("train/*/attempts.jsonl")}


@pytest.mark.ray
def test_extend_adds_only_the_new_trial_and_resume_reruns_nothing(reference, tmp_path, shared_ray):
    """On a copy of the sweep. The resume finds nothing left to do; an interrupted sweep's resume is
    test_sweep.py's test_killed_sweep_finishes_with_resume."""
    from raysweep.catalog.connect import connect

    root = _make_readme_cwd(tmp_path, reference)
    sweep = root / "runs" / "demo"
    before = _attempts(sweep)
    out = _sweep_command(EXTEND, root, shared_ray).stdout
    extended = _attempts(sweep)
    assert sorted(extended) == sorted([*TRIALS, "nano-wd0.1-s0"])
    assert {t: extended[t] for t in TRIALS} == before  # the finished trials did not train again
    assert len(extended["nano-wd0.1-s0"].splitlines()) == 1
    assert any(line.split()[:3] == ["train", "nano", "0.1000"] for line in out.splitlines()), out

    _sweep_command(RESUME, root, shared_ray)
    assert _attempts(sweep) == extended
    with connect([sweep]) as con:
        statuses = dict(con.execute("SELECT trial_id, status FROM trials").fetchall())
    assert statuses == dict.fromkeys([*TRIALS, "nano-wd0.1-s0"], "TERMINATED")


@pytest.mark.ray
def test_own_corpus_sweep_reads_the_jsonl_file(tmp_path, shared_ray):
    """On a slice of the bundled reviews, written as the README's reviews.jsonl; examples/demo.yaml is the tiny
    spec with one trial here (this sweep starts from nothing: each trial costs a worker group's start)."""
    from raysweep.catalog.connect import connect
    from raysweep.data.corpus import is_heldout, load_documents

    reviews = load_documents("rotten-tomatoes", "text")[:600]
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in reviews))
    (tmp_path / "examples").mkdir()
    write_spec(tmp_path / "examples" / "demo.yaml", tiny_spec_dict("runs", name="demo", grid={"weight_decay": [1.0]}))
    _sweep_command(OWN_CORPUS, tmp_path, shared_ray)
    sweep = tmp_path / "runs" / "mine"
    assert not (tmp_path / "runs" / "demo").exists()
    spec = yaml.safe_load((sweep / "spec.yaml").read_text())
    assert (spec["data"]["corpus"], spec["data"]["text_column"]) == (str(tmp_path / "reviews.jsonl"), "text")
    meta = json.loads((next((sweep / "data").iterdir()) / "meta.json").read_text())
    heldout = [r for r in reviews if is_heldout(r, spec["data"]["heldout_fraction"], spec["data"]["split_seed"])]
    assert meta["n_docs"] == {"train": 120, "heldout": len(heldout)}  # the file's reviews, not the bundled corpus
    with connect([sweep]) as con:
        assert con.execute("SELECT trial_id, status FROM trials").fetchall() == [("nano-wd1.0-s0", "TERMINATED")]
