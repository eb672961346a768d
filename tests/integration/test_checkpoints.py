"""`search: checkpoints`: a model trained elsewhere (here: plain PyTorch inside the test), scored at three
of its checkpoints by Ray trials, read by the catalog's SQL library as one trial with three steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, \
    PreTrainedTokenizerFast

from raysweep.catalog.connect import connect
from raysweep.data.corpus import load_documents
from raysweep.data.pack import open_array
from raysweep.data.prepare import PreparedData
from raysweep.data.tokenizer import EOS, train_bpe
from raysweep.store.layout import tokenizer_file
from tests.conftest import run_cli, write_spec

pytestmark = pytest.mark.ray

SEQ_LEN, REVISIONS = 32, {"step0": 0, "step50": 50, "step100": 100}


def _train_elsewhere(root, docs: list[str]) -> None:
    """A small GPT-NeoX trained 100 steps with a plain PyTorch loop, saved (safetensors and its tokenizer)
    at steps 0, 50 and 100 as the subdirs step0, step50, step100: what a run on another system leaves."""
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_bpe(docs, 400, 2), eos_token=EOS)
    config = GPTNeoXConfig(vocab_size=len(tokenizer) + 8,  # padded embeddings, as Pythia's are
                           hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    ids = [i for doc in docs for i in tokenizer(doc).input_ids + [tokenizer.eos_token_id]]
    rows = torch.tensor(ids[: len(ids) // SEQ_LEN * SEQ_LEN]).view(-1, SEQ_LEN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(101):
        if step in REVISIONS.values():
            model.save_pretrained(root / f"step{step}")
            tokenizer.save_pretrained(root / f"step{step}")
        if step == 100:
            break
        batch = rows[torch.randint(len(rows), (8,))]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _direct(root, data: PreparedData, counting_docs: list[str]) -> tuple[dict, dict]:
    """bin_loss (type-balanced, by split, step, bin) and learning speed (by split, token) computed with
    transformers alone: each revision's logits on the eval sets, frequency bins from AutoTokenizer's
    counts over the counting corpus."""
    tokenizer = AutoTokenizer.from_pretrained(root / "step0")
    counts = np.zeros(data.vocab_size + 8, dtype=np.int64)
    for doc in counting_docs:
        for token in tokenizer(doc).input_ids + [tokenizer.eos_token_id]:
            counts[token] += 1
    type_loss = {}  # (split, step) -> {token: mean loss}
    for revision, step in REVISIONS.items():
        model = AutoModelForCausalLM.from_pretrained(root / revision).eval()
        for split in ("train", "heldout"):
            ids = torch.from_numpy(np.asarray(open_array(data.data_dir, f"eval-{split}")).astype(np.int64))
            with torch.no_grad():
                logits = model(input_ids=ids).logits[:, :-1]
            losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
            targets = ids[:, 1:].flatten().numpy()
            type_loss[split, step] = {int(t): float(losses.numpy()[targets == t].mean()) for t in np.unique(targets)}
    bins = {}
    for (split, step), by_type in type_loss.items():
        for token, loss in by_type.items():
            b = -1 if counts[token] == 0 else math.floor(math.log(counts[token]) / math.log(3) + 1e-9)
            bins.setdefault((split, step, b), []).append(loss)
    bin_loss = {key: float(np.mean(v)) for key, v in bins.items()}
    speed = {}
    for split in ("train", "heldout"):
        first = type_loss[split, 0]
        for token in first:
            ratios = [type_loss[split, s][token] / first[token] for s in REVISIONS.values()]
            speed[split, token] = 1 - float(np.mean(ratios))
    return bin_loss, speed


def test_checkpoints_trained_elsewhere_score_like_a_trial(tmp_path, shared_ray):
    """Three checkpoints of a model trained elsewhere, each a Ray trial: the catalog's bin_loss and
    learning_speed equal a direct transformers computation, token_freq counts the named counting corpus,
    the trials table records it; all of it under a storage dir named o'neil. (A sweep extended by a revision
    scores only the new one: tests/unit/test_config.py.)"""
    docs = load_documents("rotten-tomatoes", "text")
    training, evaluated, counting = docs[:600], docs[600:760], docs[1000:1800]
    root = tmp_path / "neox-run"
    _train_elsewhere(root, training)
    (tmp_path / "eval.txt").write_text("\n".join(evaluated))
    (tmp_path / "count.txt").write_text("\n".join(counting))
    runs = tmp_path / "o'neil" / "runs"  # a quote in the storage path: SQL only ever sees it escaped
    spec = {"name": "scored", "storage": str(runs), "search": "checkpoints",
            "checkpoints": {"models": {"neox": {"hf": str(root), "revisions": ["step0", "step100", "step50"]}}},
            "data": {"corpus": str(tmp_path / "eval.txt"), "counting_corpus": str(tmp_path / "count.txt"),
                     "seq_len": SEQ_LEN, "heldout_fraction": 0.3},
            "eval": {"n_train_sequences": 8, "n_heldout_sequences": 8, "batch_size": 8}}
    result = run_cli(["sweep", str(write_spec(tmp_path / "spec.yaml", spec))], tmp_path, env=shared_ray)
    sweep = runs / "scored"
    assert "neox" in result.stdout

    with connect([sweep]) as con:
        trial = con.execute("SELECT trial_id, status, steps, weight_decay, counting_corpus, model_source, data_key "
                            "FROM trials").fetchall()
        bin_loss = con.execute("SELECT split, step, bin, type_mean_loss FROM bin_loss(step := 'all')").fetchall()
        speed = con.execute("SELECT split, token_id, first_step, learning_speed FROM learning_speed()").fetchall()
    assert len(trial) == 1
    trial_id, status, steps, weight_decay, counting_corpus, model_source, key = trial[0]
    assert (trial_id, status, steps, weight_decay) == ("neox", "TERMINATED", 100, None)
    assert (counting_corpus, model_source) == (str(tmp_path / "count.txt"), str(root))

    data = PreparedData.load(sweep / "data" / key)
    text = "A quietly moving film about grief, with one scene too many."
    own = AutoTokenizer.from_pretrained(root / "step0")  # the eval sets are in the model's own tokenizer
    assert Tokenizer.from_file(str(tokenizer_file(data.data_dir))).encode(text).ids == own(text).input_ids
    direct_bins, direct_speed = _direct(root, data, counting)
    assert {(s, st, b) for s, st, b, _ in bin_loss} == set(direct_bins)
    for split, step, b, loss in bin_loss:
        assert loss == pytest.approx(direct_bins[split, step, b], abs=1e-5), (split, step, b)
    assert {(s, t) for s, t, _, _ in speed} == set(direct_speed) and {f for _, _, f, _ in speed} == {0}
    for split, token, _, value in speed:
        assert value == pytest.approx(direct_speed[split, token], abs=1e-5), (split, token)
    assert run_cli(["verify", str(sweep)], tmp_path).returncode == 0
    status = run_cli(["status", str(sweep)], tmp_path).stdout
    assert all(f"neox@{revision}" in status for revision in REVISIONS) and status.count("TERMINATED") == 3
    run_cli(["plot", str(sweep)], tmp_path)  # no weight decay to compare: the per-model figures only
    assert sorted(p.stem for p in (sweep / "figures").glob("*.png")) == [
        "1_loss_vs_rank", "2_bin_loss_accuracy", "4_learning_speed"]
