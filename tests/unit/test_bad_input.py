"""Every row of docs/errors.md: the bad input, the one-line error naming field or file and fix,
exit code 2, and storage left as it was.

The table is the source of the expected messages; this module holds how to set each case up.
Most cases run `raysweep.cli.main` in this process (they fail before Ray or data work starts);
the ones that need their own process limits or environment run the real command.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import transformers
import yaml

from raysweep.catalog.build import build_catalog
from raysweep.data.corpus import load_documents
from raysweep.data.prepare import prepare_data
from raysweep.data.tokenizer import train_bpe
from raysweep.spec import parse_spec, spec_to_yaml
from raysweep.store.layout import SweepLayout
from raysweep.store.shards import write_shard
from tests.conftest import REPO, cli_env, run_cli_in_process, tiny_spec_dict, write_spec
from tests.synthetic_sweep import STEPS, write_synthetic_sweep


def _table() -> dict[str, str]:
    """id -> the text the error line must contain, from docs/errors.md."""
    rows = {}
    for line in (REPO / "docs" / "errors.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("id", "") and not cells[0].startswith("-"):
            rows[cells[0]] = cells[3].strip("`")
    return rows


TABLE = _table()
SUBPROCESS_CASES = {"storage-disk-full", "data-hf-offline", "spec-checkpoints-hub-offline", "data-tokenizer-hf-offline",
                    "cli-unknown-command", "cli-missing-argument", "cli-status-bad-interval", "cli-plot-bad-format",
                    "cache-not-private"}
COMPLETE_LOOKING = ("catalog.duckdb", "complete.json", "_COMPLETE", "trials.parquet")


# Setups: each takes the test's directory and returns the command line. -------------------------

def _spec(tmp: Path, **sections) -> str:
    return str(write_spec(tmp / "spec.yaml", tiny_spec_dict(tmp / "runs", name="new", **sections)))


WD_SPACE = {"weight_decay": {"low": 0.0, "high": 1.0}}


def _search_spec(tmp: Path, space: dict, seed=(0,)) -> str:
    return _spec(tmp, search="optuna", optuna={"space": space},
                 grid={"weight_decay": [0.0], "scale": ["nano"], "seed": list(seed)})


def _raw_spec(tmp: Path, text: str) -> str:
    (tmp / "spec.yaml").write_text(text)
    return str(tmp / "spec.yaml")


def _jsonl(path: Path, docs: list[dict]) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return str(path)


def _tokenizer_file(path: Path, vocab_size: int) -> str:
    docs = load_documents("rotten-tomatoes", "text")[:300]
    train_bpe(docs, vocab_size, 2).save(str(path))
    return str(path)


def _word_level_without_unk(path: Path) -> str:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    Tokenizer(WordLevel({"review": 0, "film": 1}, unk_token="[UNK]")).save(str(path))
    return str(path)


def _model_spec(tmp: Path, config, overrides: dict | None = None) -> str:
    """A spec whose grid trains `mine`: `config` (a transformers config, or a config.json's dict) saved to a dir."""
    directory = tmp / "mine"
    if isinstance(config, dict):
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(config))
    else:
        config.save_pretrained(directory)
    return _spec(tmp, model={"configs": {"mine": {"hf": str(directory), "overrides": overrides or {}}}},
                 grid={"weight_decay": [0.0], "scale": ["mine"], "seed": [0]})


def _model_changed(tmp: Path) -> list[str]:
    """The sweep stored its gpt2 config with 2 blocks; the source dir now says 1."""
    spec = _model_spec(tmp, transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2))
    stored = SweepLayout.at(tmp / "runs" / "new").model_config_file("mine")
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({**json.loads((tmp / "mine" / "config.json").read_text()), "n_layer": 2}))
    return ["sweep", spec]


def _checkpoints_spec(tmp: Path, revisions: list[str], embedding_rows: int | None = None, **data) -> str:
    """A spec scoring `mine`: a random tiny GPT-NeoX saved with its own BPE tokenizer in mine/step0 (only)."""
    from transformers import PreTrainedTokenizerFast

    from raysweep.data.tokenizer import EOS

    directory = tmp / "mine" / "step0"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_bpe(load_documents("rotten-tomatoes", "text")[:300],
                                                                   300, 2), eos_token=EOS)
    tokenizer.save_pretrained(directory)
    transformers.GPTNeoXConfig(vocab_size=embedding_rows or len(tokenizer), hidden_size=16, intermediate_size=32,
                               num_hidden_layers=1, num_attention_heads=2).save_pretrained(directory)
    return _checkpoint_models_spec(tmp, {"hf": str(tmp / "mine"), "revisions": revisions}, **data)


def _checkpoint_models_spec(tmp: Path, model: dict, **data) -> str:
    return str(write_spec(tmp / "spec.yaml", {
        "name": "new", "storage": str(tmp / "runs"), "search": "checkpoints", "checkpoints": {"models": {"mine": model}},
        "data": {"max_train_docs": 200, "seq_len": 32, **data}, "eval": {"n_train_sequences": 4, "n_heldout_sequences": 4}}))


def _prepared_sweep(tmp: Path, **sections) -> str:
    """A sweep dir whose data was built and whose spec.yaml was written, as an earlier run leaves it."""
    path = _spec(tmp, **sections)
    spec = parse_spec(yaml.safe_load(Path(path).read_text()))
    prepare_data(spec.data, spec.eval, spec.layout, min_sequences=spec.train.batch_size)
    spec.layout.spec_file.write_text(spec_to_yaml(spec))
    return path


def _synthetic_copy(tmp: Path, earlier: Path) -> Path:
    copy = tmp / "runs" / "copy"
    shutil.copytree(earlier, copy)
    return copy


def _first_token_shard(sweep: Path) -> Path:
    return SweepLayout.at(sweep).token_shard("train", "s1-wd0.0-s0", STEPS[0], 0)


def setup(case: str, tmp: Path, earlier: Path) -> list[str]:
    reviews = [{"review": f"review number {i} of a film"} for i in range(50)]
    cases = {
        "spec-unknown-key": lambda: ["sweep", _spec(tmp, train={"stepz": 3})],
        "spec-wrong-type": lambda: ["sweep", _spec(tmp, train={"steps": "many"})],
        "spec-negative-wd": lambda: ["sweep", _spec(tmp, grid={"weight_decay": [0.0, -0.1]})],
        "spec-infinite-wd": lambda: ["sweep", _spec(tmp, grid={"weight_decay": [float("inf")]})],
        "spec-nan-wd": lambda: ["sweep", _spec(tmp, grid={"weight_decay": [float("nan")]})],
        "spec-empty-grid": lambda: ["sweep", _spec(tmp, grid={"weight_decay": []})],
        "spec-duplicate-grid": lambda: ["sweep", _spec(tmp, grid={"weight_decay": [0.1, 0.1]})],
        "spec-axis-set-twice": lambda: ["sweep", _spec(tmp, train={"decay_policy": "no_embeddings"},
                                                       grid={"decay_policy": ["all_matrices"]})],
        "spec-alpha-without-embedding-decay": lambda: ["sweep", _spec(tmp, train={"freq_decay_alpha": 0.5},
                                                                      grid={"decay_policy": ["no_embeddings"]})],
        "spec-alpha-flips-rows": lambda: ["sweep", _spec(tmp, grid={"weight_decay": [1.0],
                                                                    "freq_decay_alpha": [4.0]})],
        "spec-search-empty-space": lambda: ["sweep", _search_spec(tmp, {})],
        "spec-search-bad-range": lambda: ["sweep", _search_spec(tmp, {"lr": {"low": 0.01, "high": 0.001}})],
        "spec-search-log-from-zero": lambda: ["sweep", _search_spec(
            tmp, {"weight_decay": {"low": 0.0, "high": 1.0, "log": True}})],
        "spec-search-unknown-field": lambda: ["sweep", _search_spec(tmp, {"beta2": {"low": 0.9, "high": 0.99}})],
        "spec-search-with-axes": lambda: ["sweep", _search_spec(tmp, WD_SPACE, seed=[0, 1])],
        "spec-search-point-outside": lambda: ["sweep", _spec(
            tmp, search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"]},
            optuna={"space": {"lr": {"low": 0.001, "high": 0.01}}, "points_to_evaluate": [{"lr": 0.5}]})],
        "spec-search-point-not-searched": lambda: ["sweep", _spec(
            tmp, search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"]},
            optuna={"space": WD_SPACE, "points_to_evaluate": [{"weight_decay": 0.1, "lr": 0.005}]})],
        "spec-search-point-partial": lambda: ["sweep", _spec(
            tmp, search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"]},
            optuna={"space": {**WD_SPACE, "lr": {"low": 0.001, "high": 0.01}}, "points_to_evaluate": [{"lr": 0.005}]})],
        "spec-asha-grace-too-long": lambda: ["sweep", _spec(
            tmp, search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"]},
            optuna={"space": WD_SPACE, "scheduler": "asha", "grace_period": 30})],
        "spec-search-too-many-points": lambda: ["sweep", _spec(
            tmp, search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"]},
            optuna={"space": WD_SPACE, "num_samples": 2, "points_to_evaluate": [{"weight_decay": w} for w in (0.1, 0.2, 0.3)]})],
        "spec-asha-no-eval-steps": lambda: ["sweep", _spec(
            tmp, search="optuna", grid={"weight_decay": [0.0], "scale": ["nano"]}, eval={"every": None},
            optuna={"space": WD_SPACE, "scheduler": "asha"})],
        "spec-search-alpha-flips-rows": lambda: ["sweep", _search_spec(
            tmp, WD_SPACE | {"freq_decay_alpha": {"low": 0.0, "high": 4.0}})],
        "spec-vocab-axis-with-tokenizer-file": lambda: ["sweep", _spec(tmp, grid={"vocab_size": [300]}, data={
            "tokenizer": {"kind": "file", "path": str(tmp / "tokenizer.json")}})],
        "spec-negative-seed": lambda: ["sweep", _spec(tmp, grid={"seed": [-1]})],
        "spec-boolean-seed": lambda: ["sweep", _spec(tmp, grid={"seed": [True]})],
        "spec-negative-split-seed": lambda: ["sweep", _spec(tmp, data={"split_seed": -1})],
        "spec-tokenizer-path-with-bpe": lambda: ["sweep", _spec(tmp, data={"tokenizer": {
            "kind": "bpe", "path": str(tmp / "tok.json")}})],
        "spec-unknown-scale": lambda: ["sweep", _spec(tmp, grid={"scale": ["gigantic"]})],
        "spec-seq-len-too-long": lambda: ["sweep", _spec(tmp, data={"seq_len": 4096})],
        "spec-model-unknown-architecture": lambda: ["sweep", _model_spec(tmp, {"model_type": "no-such-arch"})],
        "spec-model-unknown-override": lambda: ["sweep", _model_spec(
            tmp, transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2), {"num_hidden_layer": 2})],
        "spec-model-no-decoder-blocks": lambda: ["sweep", _model_spec(
            tmp, transformers.OpenAIGPTConfig(n_embd=32, n_layer=1, n_head=2))],
        "spec-model-config-changed": lambda: _model_changed(tmp),
        "spec-model-config-missing": lambda: ["sweep", _spec(
            tmp, model={"configs": {"mine": {"hf": str(tmp / "no-such-dir")}}}, grid={"scale": ["mine"]})],
        "spec-checkpoints-revision-missing": lambda: ["sweep", _checkpoints_spec(tmp, ["step0", "step9"])],
        "spec-checkpoints-hub-offline": lambda: ["sweep", _checkpoint_models_spec(
            tmp, {"hf": "EleutherAI/pythia-14m", "revisions": ["step1000"]})],
        "spec-checkpoints-no-step": lambda: ["sweep", _checkpoint_models_spec(
            tmp, {"hf": "EleutherAI/pythia-14m", "revisions": ["main"]})],
        "spec-checkpoints-with-grid": lambda: (_checkpoint_models_spec(tmp, {"hf": "E/p", "revisions": ["step1"]}),
                                               ["sweep", str(tmp / "spec.yaml"), "--set", "grid.seed=[1]"])[1],
        "data-tokenizer-larger-than-embeddings": lambda: ["sweep", _checkpoints_spec(tmp, ["step0"], embedding_rows=100)],
        "data-counting-corpus-disjoint": lambda: ["sweep", _checkpoints_spec(tmp, ["step0"], counting_corpus=(
            tmp / "greek.txt", (tmp / "greek.txt").write_text("αβγδεζηθι\n" * 20))[0].as_posix())],
        "spec-batch-not-divisible": lambda: ["sweep", _spec(tmp, train={"batch_size": 5},
                                                            resources={"workers_per_trial": 2})],
        "spec-too-many-workers": lambda: ["sweep", _spec(tmp, resources={"workers_per_trial": 64},
                                                         train={"batch_size": 64})],
        "spec-warmup-too-long": lambda: ["sweep", _spec(tmp, train={"warmup_steps": 50, "steps": 40})],
        "spec-zero-lr": lambda: ["sweep", _spec(tmp, train={"lr": 0})],
        "spec-heldout-fraction": lambda: ["sweep", _spec(tmp, data={"heldout_fraction": 1.5})],
        "spec-bad-name": lambda: ["sweep", str(write_spec(tmp / "spec.yaml",
                                                          tiny_spec_dict(tmp / "runs", name="../escape")))],
        "spec-missing-name": lambda: ["sweep", _raw_spec(tmp, f"storage: {tmp / 'runs'}\n")],
        "spec-file-missing": lambda: ["sweep", str(tmp / "nope.yaml")],
        "spec-not-yaml": lambda: ["sweep", _raw_spec(tmp, "name: [unclosed\n")],
        "spec-not-mapping": lambda: ["sweep", _raw_spec(tmp, "- a\n- b\n")],
        "data-corpus-missing": lambda: ["sweep", _spec(tmp, data={"corpus": str(tmp / "missing.jsonl")})],
        "data-corpus-empty": lambda: ["sweep", _spec(tmp, data={"corpus": _jsonl(tmp / "empty.jsonl", [])})],
        "data-corpus-extension": lambda: ((tmp / "notes.docx").write_bytes(b"PK\x03\x04"),
                                          ["sweep", _spec(tmp, data={"corpus": "notes.docx"})])[1],
        "data-text-column": lambda: ["sweep", _spec(tmp, data={"corpus": _jsonl(tmp / "r.jsonl", reviews),
                                                               "text_column": "text"})],
        "data-text-column-not-text": lambda: ["sweep", _spec(tmp, data={"corpus": _jsonl(
            tmp / "n.jsonl", [{"text": 1000 + i} for i in range(50)])})],
        "data-corpus-directory": lambda: ((tmp / "docs.txt").mkdir(),
                                          ["sweep", _spec(tmp, data={"corpus": str(tmp / "docs.txt")})])[1],
        "data-no-heldout": lambda: ["sweep", _spec(tmp, data={
            "corpus": _jsonl(tmp / "r.jsonl", reviews), "text_column": "review", "heldout_fraction": 0.0001})],
        "data-tokenizer-cannot-encode": lambda: ["sweep", _spec(tmp, data={"tokenizer": {
            "kind": "file", "path": _word_level_without_unk(tmp / "no-unk.json")}})],
        "data-too-small": lambda: ["sweep", _spec(tmp, data={"corpus": _jsonl(
            tmp / "small.jsonl", [{"text": f"short review {i}"} for i in range(3)])})],
        "data-not-utf8": lambda: ((tmp / "latin1.txt").write_bytes("café crème, très bon\n".encode("latin-1") * 50),
                                  ["sweep", _spec(tmp, data={"corpus": str(tmp / "latin1.txt")})])[1],
        "data-tokenizer-unparsable": lambda: ((tmp / "broken.json").write_text("{not json"),
                                              ["sweep", _spec(tmp, data={"tokenizer": {
                                                  "kind": "file", "path": str(tmp / "broken.json")}})])[1],
        "spec-hub-options-without-hf-corpus": lambda: ["sweep", _spec(tmp, data={"hub": {"split": "test"}})],
        "spec-tokenizer-hf-without-name": lambda: ["sweep", _spec(tmp, data={"tokenizer": {"kind": "hf"}})],
        "data-tokenizer-hf-missing": lambda: ["sweep", _spec(tmp, data={"tokenizer": {
            "kind": "hf", "name": str(tmp / "no-such-tokenizer")}})],
        "data-tokenizer-hf-offline": lambda: ["sweep", _spec(tmp, data={"tokenizer": {
            "kind": "hf", "name": "EleutherAI/pythia-14m"}})],
        "data-tokenizer-missing": lambda: ["sweep", _spec(tmp, data={"tokenizer": {
            "kind": "file", "path": str(tmp / "gone.json")}})],
        "data-vocab-changed-on-resume": lambda: _vocab_changed(tmp),
        "data-corpus-changed-on-resume": lambda: _corpus_changed(tmp, reviews),
        "data-hf-offline": lambda: ["sweep", _spec(tmp, data={"corpus": "hf:nobody/nothing"})],
        "storage-is-a-file": lambda: ((tmp / "afile").write_text("x"),
                                      ["sweep", str(write_spec(tmp / "spec.yaml",
                                                               tiny_spec_dict(tmp / "afile", name="new")))])[1],
        "storage-unknown-scheme": lambda: ["sweep", str(write_spec(tmp / "spec.yaml", tiny_spec_dict(
            "ftp://host/sweeps", name="new")))],
        "storage-no-bucket": lambda: ["sweep", str(write_spec(tmp / "spec.yaml", tiny_spec_dict(
            "s3://", name="new")))],
        "submit-relative-path": lambda: ["submit", str(write_spec(tmp / "spec.yaml", tiny_spec_dict(
            "/srv/shared", name="new", data={"corpus": "reviews.jsonl"}))), "--address", "http://127.0.0.1:9"],
        "storage-not-writable": lambda: ["sweep", str(write_spec(tmp / "spec.yaml", tiny_spec_dict(
            _unwritable(tmp), name="new")))],
        "storage-disk-full": lambda: ["sweep", _spec(tmp, data={"max_train_docs": 3000})],
        "report-page-not-written": lambda: ((tmp / "afile").write_text("x"),  # no dir can be made under a file
                                            ["report", "--html", str(_synthetic_copy(tmp, earlier)),
                                             "--out", str(tmp / "afile" / "page.html")])[1],
        "sweep-dir-locked": lambda: _locked_by_another_writer(tmp),
        "sweep-dir-spec-damaged": lambda: _sweep_dir_with_damaged_spec(tmp),
        "cache-not-private": lambda: ((tmp / "shared-cache").mkdir(mode=0o777), (tmp / "shared-cache").chmod(0o777),
                                      ["report", "s3://raysweep-nowhere/sweeps/demo"])[-1],
        "catalog-corrupt-shard": lambda: _corrupt_shard(_synthetic_copy(tmp, earlier)),
        "catalog-wrong-schema": lambda: _foreign_shard(_synthetic_copy(tmp, earlier)),
        "catalog-not-a-sweep": lambda: ["catalog", str(_empty_dir(tmp))],
        "catalog-damaged-db": lambda: _damaged_catalog(_synthetic_copy(tmp, earlier)),
        "catalog-older-version": lambda: _older_catalog(_synthetic_copy(tmp, earlier)),
        "verify-not-a-sweep": lambda: ["verify", str(_empty_dir(tmp))],
        "sql-write-refused": lambda: ["sql", str(_synthetic_copy(tmp, earlier)),
                                      f"COPY (SELECT * FROM trials) TO '{tmp / 'trials.csv'}'"],
        "sql-outside-the-sweep": lambda: ((tmp / "credentials").write_text("key"),
                                          ["sql", str(_synthetic_copy(tmp, earlier)),
                                           f"SELECT * FROM read_text('{tmp / 'credentials'}')"])[1],
        "catalog-not-tables-only": lambda: _tampered_catalog(_synthetic_copy(tmp, earlier), (
            "DROP TABLE trials", "CREATE VIEW trials AS SELECT 1 AS trial_id")),
        "catalog-shard-outside": lambda: _tampered_catalog(_synthetic_copy(tmp, earlier), (
            "INSERT INTO shards VALUES ('tokens', '../../../etc/passwd')",)),
        "sql-bad-query": lambda: ["sql", str(_synthetic_copy(tmp, earlier)), "SELECT nope FROM trials"],
        "sql-missing-file": lambda: ["sql", str(_synthetic_copy(tmp, earlier)), "q.sql"],
        "cli-unknown-command": lambda: ["swep"],
        "cli-missing-argument": lambda: ["sweep"],
        "cli-set-without-equals": lambda: ["sweep", _spec(tmp), "--set", "train.steps"],
        "cli-set-unknown-field": lambda: ["sweep", _spec(tmp), "--set", "train.stepz=3"],
        "cli-set-bad-yaml": lambda: ["sweep", _spec(tmp), "--set", "grid.weight_decay=[0.1"],
        "cli-set-into-a-value": lambda: ["sweep", _spec(tmp), "--set", "train.steps.x=1"],
        "cli-status-bad-interval": lambda: ["status", str(_synthetic_copy(tmp, earlier)), "--watch", "--interval", "0"],
        "cli-plot-bad-format": lambda: ["plot", str(_synthetic_copy(tmp, earlier)), "--format", "gif"],
        "plan-unknown-gpu": lambda: ["plan", _spec(tmp, cost={"gpu": "H1000"}, resources={"use_gpu": True})],
        "plan-gpu-without-use-gpu": lambda: ["plan", _spec(tmp, cost={"gpu": "H100-80GB"})],
        "plan-price-without-gpu": lambda: ["plan", _spec(tmp, cost={"usd_per_gpu_hour": 2.5})],
        "plan-bad-spec": lambda: ["plan", _spec(tmp, train={"stepz": 3})],
        "plan-bad-format": lambda: ["plan", _spec(tmp), "--format", "xml"],
        "sweep-dry-run-bad-spec": lambda: ["sweep", _spec(tmp, grid={"scale": ["gigantic"]}), "--dry-run"],
        "sweep-format-without-dry-run": lambda: ["sweep", _spec(tmp), "--format", "json"],
        "sweep-dry-run-with-report": lambda: ["sweep", _spec(tmp), "--dry-run", "--report"],
    }
    return cases[case]()


def _vocab_changed(tmp: Path) -> list[str]:
    tokenizer = _tokenizer_file(tmp / "tokenizer.json", 300)
    spec = _prepared_sweep(tmp, data={"tokenizer": {"kind": "file", "path": tokenizer}})
    _tokenizer_file(tmp / "tokenizer.json", 400)
    return ["sweep", spec]


def _corpus_changed(tmp: Path, reviews: list[dict]) -> list[str]:
    docs = [{"text": f"{r['review']} and it was good, the actors were fine" * 3} for r in reviews]
    corpus = _jsonl(tmp / "corpus.jsonl", docs)
    _prepared_sweep(tmp, data={"corpus": corpus})
    _jsonl(tmp / "corpus.jsonl", docs[:-1])
    return ["resume", str(tmp / "runs" / "new")]


def _unwritable(tmp: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permission bits; /proc refuses new entries
        return Path("/proc/raysweep-storage")
    locked = tmp / "locked"
    locked.mkdir(mode=0o555)
    return locked / "runs"


def _locked_by_another_writer(tmp: Path) -> list[str]:
    spec = _spec(tmp)
    sweep = tmp / "runs" / "new"
    sweep.mkdir(parents=True)
    (sweep / ".writer.lock").write_text(json.dumps({"command": "raysweep sweep", "host": "elsewhere", "pid": 4242,
                                                    "token": "theirs", "heartbeat": time.time()}))
    return ["sweep", spec]


def _sweep_dir_with_damaged_spec(tmp: Path) -> list[str]:
    spec = _spec(tmp)
    sweep = tmp / "runs" / "new"
    sweep.mkdir(parents=True)
    (sweep / "spec.yaml").write_text("- not\n- a mapping\n")
    return ["sweep", spec]


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _corrupt_shard(sweep: Path) -> list[str]:
    shard = _first_token_shard(sweep)
    shard.write_bytes(b"garbage" * 100)
    return ["catalog", str(sweep)]


def _foreign_shard(sweep: Path) -> list[str]:
    write_shard(pa.table({"a": pa.array([1, 2, 3], pa.int64())}), _first_token_shard(sweep))
    return ["catalog", str(sweep)]


def _damaged_catalog(sweep: Path) -> list[str]:
    SweepLayout.at(sweep).catalog_file.write_bytes(b"not a database" * 1000)
    return ["sql", str(sweep), "SELECT 1"]


def _tampered_catalog(sweep: Path, statements: tuple[str, ...]) -> list[str]:
    """A catalog someone edited: views in place of tables, or a shard path leading out of the sweep."""
    import duckdb

    with duckdb.connect(str(SweepLayout.at(sweep).catalog_file)) as con:
        for statement in statements:
            con.execute(statement)
    return ["sql", str(sweep), "SELECT * FROM trials"]


def _older_catalog(sweep: Path) -> list[str]:
    """A catalog as raysweep wrote it before catalogs carried their version (no catalog_info)."""
    import duckdb

    with duckdb.connect(str(SweepLayout.at(sweep).catalog_file)) as con:
        con.execute("DROP TABLE catalog_info")
    return ["sql", str(sweep), "SELECT 1"]


# Running a case ---------------------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def _run_subprocess(case: str, argv: list[str], tmp: Path) -> tuple[int, str]:
    # an empty hub cache: a machine that once downloaded the model must not turn the case into a run
    env = cli_env(tmp) | ({"HF_HUB_CACHE": str(tmp / "empty-hub-cache")} if case.endswith("offline") else {})
    if case == "cache-not-private":  # a cache dir anyone could have made first in a shared /tmp
        env |= {"RAYSWEEP_CACHE": str(tmp / "shared-cache")}
    result = subprocess.run([sys.executable, "-m", "raysweep.cli", *argv], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size if case == "storage-disk-full" else None)
    return result.returncode, result.stderr


def _run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    code, _, err = run_cli_in_process(argv, capsys)
    return code, err


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """A finished (synthetic) sweep with its catalog: must survive every bad command untouched."""
    root = write_synthetic_sweep(tmp_path_factory.mktemp("earlier") / "runs" / "earlier")
    build_catalog(root)
    return root


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """A case that got past validation would start Ray in the test process: fail it instead."""
    def refuse(*_):
        raise AssertionError("the bad input was not caught before Ray started")
    monkeypatch.setattr("raysweep.run.tuner.init_ray", refuse)


def test_every_row_of_the_table_has_a_case():
    assert len(TABLE) >= 30
    cases_source = Path(__file__).read_text()
    assert [c for c in TABLE if f'"{c}":' not in cases_source] == []


@pytest.mark.parametrize("case", sorted(TABLE))
def test_bad_input(case, tmp_path, earlier, monkeypatch, capsys):
    if case == "storage-disk-full":
        load_documents("rotten-tomatoes", "text")  # the corpus cache is not what this case fills
    argv = setup(case, tmp_path, earlier)
    earlier_before = _snapshot(earlier)
    before = _snapshot(tmp_path)
    dirs_before = {p for p in tmp_path.rglob("*") if p.is_dir()}
    monkeypatch.chdir(tmp_path)
    if case in SUBPROCESS_CASES:
        code, stderr = _run_subprocess(case, argv, tmp_path)
    else:
        code, stderr = _run_in_process(argv, capsys)

    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    print(last)
    assert code == 2, f"exit {code}; stderr:\n{stderr[-3000:]}"
    assert last.startswith("raysweep") and "error: " in last, stderr[-3000:]
    assert TABLE[case] in last, f"{TABLE[case]!r} not in {last!r}"
    assert "Traceback" not in stderr
    after = _snapshot(tmp_path)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert changed == [], f"earlier files changed or removed: {changed}"
    new = [p for p in after if p not in before]
    assert [p for p in new if Path(p).name in COMPLETE_LOOKING or p.endswith(".manifest.json")] == []
    empty_new_dirs = [p for p in tmp_path.rglob("*") if p.is_dir() and p not in dirs_before and not any(p.iterdir())]
    assert empty_new_dirs == []  # not even an empty sweep dir that a later `raysweep status` would trip on
    assert _snapshot(earlier) == earlier_before
