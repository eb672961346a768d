"""Tokenizers: a byte-level BPE trained on the train split, a tokenizer.json from disk, or a model's own
tokenizer through transformers (its fast backend: the same `tokenizers.Tokenizer` as the other two)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from raysweep.spec.schema import TokenizerConfig
from raysweep.data.corpus import CorpusError, corpus_fingerprint, require_file
from raysweep.errors import first_line

EOS = "<|endoftext|>"
_EOS_CANDIDATES = (EOS, "</s>", "<eos>", "<|im_end|>")


def train_bpe(docs: Iterable, vocab_size: int, min_frequency: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style): every byte is in the base alphabet, so nothing is unknown. `docs`:
    documents, or batches of them as they stream (the trainer keeps word counts, not the text)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(docs, trainer)
    return tokenizer


def load_tokenizer_file(path: str) -> Tokenizer:
    file = require_file(Path(path).expanduser(), "data.tokenizer.path")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise CorpusError(f"data.tokenizer.path: {str(file)!r} is not a tokenizer.json that "
                          f"`tokenizers` can parse ({first_line(exc)})") from None


def load_hf_tokenizer(name: str, revision: Optional[str] = None) -> tuple[Tokenizer, Optional[int]]:
    """AutoTokenizer's fast tokenizer of a hub id (at `revision`) or local dir (no code from the hub runs),
    and its eos id."""
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"data.tokenizer.name: no tokenizer could be loaded from {name!r} ({first_line(exc)}); "
                          "name a local dir with tokenizer files, or a hub id (with internet)") from None
    if not loaded.is_fast:
        raise CorpusError(f"data.tokenizer.name: {name!r} has only a slow (Python) tokenizer; raysweep needs a "
                          "fast one (tokenizer.json)")
    return loaded.backend_tokenizer, loaded.eos_token_id


def tokenizer_fingerprint(cfg: TokenizerConfig) -> object:
    """What identifies the tokenizer for the data key, read without transformers or a network (a finished
    sweep must open offline): a file's hash (a local dir's tokenizer.json), a hub id by name, or the BPE
    trainer's settings (the corpus identifies what it is trained on)."""
    if cfg.kind == "file":
        return corpus_fingerprint(cfg.path, "data.tokenizer.path")
    if cfg.kind == "hf":
        local = Path(cfg.name) / "tokenizer.json"
        if Path(cfg.name).is_dir():
            return corpus_fingerprint(str(local), "data.tokenizer.name")
        return f"hub:{cfg.name}" + (f"@{cfg.revision}" if cfg.revision else "")
    return [cfg.vocab_size, cfg.min_frequency]


def build_tokenizer(cfg: TokenizerConfig, train_docs: Iterable) -> tuple[Tokenizer, Optional[int]]:
    """The tokenizer and the document separator packing puts between documents (None: none)."""
    if cfg.kind == "hf":
        return load_hf_tokenizer(cfg.name, cfg.revision)  # the model's own eos, whatever its name (e.g. <|end_of_text|>)
    tokenizer = load_tokenizer_file(cfg.path) if cfg.kind == "file" else train_bpe(train_docs, cfg.vocab_size,
                                                                                     cfg.min_frequency)
    return tokenizer, eos_id(tokenizer)


def vocab_size_of(tokenizer: Tokenizer) -> int:
    """Ids, not entries: a tokenizer.json may leave gaps in its ids, and every id needs an embedding row."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def eos_id(tokenizer: Tokenizer) -> Optional[int]:
    """A tokenizer.json's document separator, by the usual names; None if it has none."""
    for token in _EOS_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None
