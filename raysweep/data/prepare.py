"""Build (or reuse) one sweep's data directory: split, tokenizer, packed arrays, token_freq.

The directory name is a content key over everything that shapes the arrays, so two sweeps on
the same data and settings share it. It is built under a temporary name and renamed into
place; meta.json inside is the marker that it is complete. On an object store it is built in a
local temporary dir and uploaded with meta.json last.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raysweep.spec.schema import DataConfig, EvalConfig, HubDatasetConfig
from raysweep.data.corpus import CorpusError, corpus_fingerprint, iter_documents, resolved_revision, split_batches
from raysweep.data.frequency import token_frequencies
from raysweep.data.pack import (PackedArrayWriter, array_chunks, count_tokens, encode_batches, open_array, open_packed,
                                write_array)
from raysweep.data.tokenizer import build_tokenizer, tokenizer_fingerprint, vocab_size_of
from raysweep.errors import first_line
from raysweep.store.layout import (DATA_MARKER, SweepLayout, array_file, data_marker, token_freq_file,
                                   tokenizer_file)
from raysweep.store.storage import (StoragePath, durable_replace, fsync_tree, is_remote, location, temporary_sibling,
                                    upload_tree)

FORMAT_VERSION = 1
EVAL_SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class PreparedData:
    data_dir: StoragePath
    data_key: str
    vocab_size: int
    eos_id: int | None
    n_train_sequences: int
    n_eval_sequences: dict[str, int]

    @classmethod
    def load(cls, data_dir: StoragePath) -> "PreparedData":
        data_dir = location(data_dir)
        meta = json.loads(data_marker(data_dir).read_text())
        return cls(data_dir, meta["data_key"], meta["vocab_size"], meta["eos_id"],
                   meta["arrays"]["train"]["shape"][0],
                   {s: meta["arrays"][f"eval-{s}"]["shape"][0] for s in EVAL_SPLITS})


def eval_sets(data: PreparedData, arrays_dir) -> dict[str, np.ndarray]:
    """The fixed eval sets a trial scores, by split (a split the data packed no sequence of is left out),
    read whole from a local copy of the data dir."""
    return {s: np.asarray(open_array(arrays_dir, f"eval-{s}")) for s in EVAL_SPLITS if data.n_eval_sequences[s] > 0}


def data_key(data: DataConfig, evaluation: EvalConfig) -> str:
    tok = data.tokenizer
    tokenizer_identity = tokenizer_fingerprint(tok)
    identity = {
        "version": FORMAT_VERSION, "corpus": corpus_fingerprint(data.corpus),
        "text_column": data.text_column, "heldout_fraction": data.heldout_fraction,
        "split_seed": data.split_seed, "max_train_docs": data.max_train_docs,
        "tokenizer": [tok.kind, tokenizer_identity], "seq_len": data.seq_len,
        "eval": [evaluation.n_train_sequences, evaluation.n_heldout_sequences],
    }
    if data.hub != HubDatasetConfig():  # only then: the keys of earlier sweeps stay as they were
        identity["hub"] = data.hub.model_dump()
    if data.counting_corpus is not None:
        identity["counting_corpus"] = corpus_fingerprint(data.counting_corpus, "data.counting_corpus")
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _build(data: DataConfig, evaluation: EvalConfig, key: str, out: Path, min_sequences: int) -> None:
    """Stream the corpus through the tokenizer into the packed arrays: documents and tokens pass in batches
    (`BATCH_DOCS`), so memory holds one batch, the tokenizer and the eval sets, not the corpus."""
    def split():  # a fresh pass over the corpus: (train, held-out) batches
        return split_batches(iter_documents(data.corpus, data.text_column, data.hub), data.heldout_fraction,
                             data.split_seed, data.max_train_docs)

    tokenizer, eos = build_tokenizer(data.tokenizer, (train for train, _ in split()))
    vocab_size = vocab_size_of(tokenizer)
    n_docs = {"train": 0, "heldout": 0}
    with PackedArrayWriter(array_file(out, "train"), data.seq_len, vocab_size) as train_out, \
            PackedArrayWriter(array_file(out, "heldout"), data.seq_len, vocab_size) as heldout_out:
        for train_docs, heldout_docs in split():
            n_docs["train"] += len(train_docs)
            n_docs["heldout"] += len(heldout_docs)
            train_out.write(_encode(tokenizer, train_docs, eos))
            heldout_out.write(_encode(tokenizer, heldout_docs, eos))
    if not n_docs["train"]:
        raise CorpusError(f"data.corpus: {data.corpus!r} left no training documents after the split")
    train, heldout = open_packed(out, train_out.entry), open_packed(out, heldout_out.entry)
    if len(train) < min_sequences:
        raise CorpusError(
            f"data.corpus: {data.corpus!r} packs into {len(train)} training sequences of "
            f"{data.seq_len} tokens, fewer than one batch ({min_sequences}); use a larger corpus, "
            f"a smaller data.seq_len or a smaller train.batch_size")
    if evaluation.n_heldout_sequences and not len(heldout):
        raise CorpusError(
            f"data.heldout_fraction: {data.heldout_fraction} of {data.corpus!r} holds out "
            f"{n_docs['heldout']} documents, not one sequence of {data.seq_len} tokens for the held-out "
            f"eval; raise data.heldout_fraction, or set eval.n_heldout_sequences: 0")
    # The train-sample eval set is fixed by split_seed alone, so every trial scores the same rows.
    rng = np.random.default_rng(data.split_seed)
    n_sample = min(evaluation.n_train_sequences, len(train))
    sample = np.sort(rng.choice(len(train), size=n_sample, replace=False))
    arrays = {
        "train": train_out.entry,
        "eval-train": write_array(array_file(out, "eval-train"), np.asarray(train[sample]), vocab_size),
        "eval-heldout": write_array(array_file(out, "eval-heldout"),
                                    np.asarray(heldout[: evaluation.n_heldout_sequences]), vocab_size),
    }
    n_heldout_tokens = int(heldout.size)
    del heldout
    array_file(out, "heldout").unlink()  # only its first sequences are kept, as eval-heldout
    tokenizer.save(str(tokenizer_file(out)))
    counts = (count_tokens(array_chunks(train), vocab_size) if data.counting_corpus is None
              else _counting_corpus_counts(data, tokenizer, eos, vocab_size, arrays, out))
    pq.write_table(token_frequencies(counts, tokenizer), token_freq_file(out))
    meta = {
        "data_key": key, "vocab_size": vocab_size, "eos_id": eos, "seq_len": data.seq_len,
        "n_docs": n_docs, "n_tokens": {"train": int(train.size), "heldout": n_heldout_tokens},
        "eval_train_indices": sample.tolist(), "arrays": arrays,
        "settings": data.model_dump(mode="json"),
        # what the content was: a resumed sweep checks its files against these
        "fingerprints": {"corpus": corpus_fingerprint(data.corpus),
                         "corpus_revision": resolved_revision(data.corpus, data.hub.revision),
                         "tokenizer": (tokenizer_fingerprint(data.tokenizer)
                                       if data.tokenizer.kind != "bpe" else None),
                         "counting_corpus": (corpus_fingerprint(data.counting_corpus, "data.counting_corpus")
                                             if data.counting_corpus is not None else None)},
    }
    data_marker(out).write_text(json.dumps(meta, indent=1))  # written last: the marker


def _counting_corpus_counts(data: DataConfig, tokenizer, eos, vocab_size: int, arrays: dict,
                            out: Path) -> np.ndarray:
    """Each id's count over the counting corpus, whole, in the sweep's tokenizer. Its counts bin the eval
    sets' tokens, so it must share some of their types; with none, every type would fall in the unseen bin
    (the document separator, in both by construction, does not count)."""
    batches = iter_documents(data.counting_corpus, data.text_column)
    counts = count_tokens((_encode(tokenizer, docs, eos) for docs in batches), vocab_size)
    seen = counts > 0
    if eos is not None:
        seen[eos] = False
    eval_ids = np.unique(np.concatenate([np.asarray(open_packed(out, arrays[f"eval-{s}"])).reshape(-1)
                                         for s in EVAL_SPLITS]))
    if not seen[eval_ids].any():
        raise CorpusError(f"data.counting_corpus: {data.counting_corpus!r} shares no token with the eval sets "
                          f"of {data.corpus!r} (in this tokenizer), so every type would be unseen; name a "
                          "counting corpus in the eval sets' language and domain")
    return counts


def _encode(tokenizer, docs: list[str], eos) -> np.ndarray:
    try:
        return next(encode_batches(tokenizer, [docs], eos))
    except Exception as exc:  # tokenizers raises a bare Exception, e.g. a WordLevel without its unk token
        raise CorpusError(f"data.tokenizer: cannot encode the corpus ({first_line(exc)}); give the tokenizer "
                          "an unk_token that is in its vocabulary, or use kind: bpe") from None


def prepare_data(data: DataConfig, evaluation: EvalConfig, layout: SweepLayout,
                 min_sequences: int = 1) -> PreparedData:
    """The sweep's data directory, built once; on local storage, copied from a sibling sweep that
    has it."""
    key = data_key(data, evaluation)
    final = layout.data_dir(key)
    if data_marker(final).exists():
        return PreparedData.load(final)
    if is_remote(final):
        # Built afresh rather than copied from a sibling sweep: finding one would list every
        # sweep's tree in the bucket, and a copy costs as many requests as the upload.
        with tempfile.TemporaryDirectory(prefix=f"raysweep-data-{key}-") as staging:
            _build(data, evaluation, key, Path(staging), min_sequences)
            upload_tree(Path(staging), final, last=DATA_MARKER)
    else:
        storage = layout.root.parent
        siblings = sorted(m for sweep in (storage.iterdir() if storage.is_dir() else []) if sweep.is_dir()
                          for m in [data_marker(SweepLayout(sweep).data_dir(key))] if m.exists())
        _prepare_local(data, evaluation, key, final, siblings, min_sequences)
    prepared = PreparedData.load(final)
    if prepared.n_train_sequences < min_sequences:
        raise CorpusError(f"data.corpus: only {prepared.n_train_sequences} training sequences, "
                          f"fewer than one batch ({min_sequences}); lower train.batch_size")
    return prepared


def _prepare_local(data: DataConfig, evaluation: EvalConfig, key: str, final: Path,
                   siblings: list[Path], min_sequences: int) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    shutil.rmtree(tmp, ignore_errors=True)
    if siblings:
        shutil.copytree(siblings[0].parent, tmp)
    else:
        tmp.mkdir()
        try:
            _build(data, evaluation, key, tmp, min_sequences)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    fsync_tree(tmp)  # meta.json, the marker, never on disk before the arrays it describes
    durable_replace(tmp, final)


__all__ = ["PreparedData", "prepare_data", "open_array", "eval_sets", "EVAL_SPLITS"]
