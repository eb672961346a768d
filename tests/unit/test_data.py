"""Data: corpus sources, the deterministic split, packing, token_freq and the content-keyed cache."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raysweep.data.corpus import CorpusError, load_documents, split_documents
from raysweep.data.pack import encode_stream, open_array
from raysweep.data.prepare import PreparedData, prepare_data
from raysweep.data.tokenizer import eos_id, train_bpe
from raysweep.spec.schema import DataConfig, EvalConfig
from raysweep.store.layout import SweepLayout

SMALL = DataConfig(corpus="rotten-tomatoes", max_train_docs=150, seq_len=32,
                   tokenizer={"vocab_size": 600})
EVAL = EvalConfig(n_train_sequences=20, n_heldout_sequences=15)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> SweepLayout:
    return SweepLayout.at(tmp_path_factory.mktemp("runs") / "sweep")


@pytest.fixture(scope="module")
def prepared(sweep) -> PreparedData:
    return prepare_data(SMALL, EVAL, sweep)


def test_bundled_corpus_is_movie_reviews_without_synopses():
    docs = load_documents("rotten-tomatoes", "text")
    assert len(docs) > 10_000
    assert len(set(docs)) == len(docs) and all(d.strip() == d and d for d in docs)


def test_split_is_deterministic_disjoint_and_order_free():
    docs = load_documents("rotten-tomatoes", "text")[:2000]
    a = split_documents(docs, 0.1, split_seed=3)
    b = split_documents(list(reversed(docs)), 0.1, split_seed=3)
    assert set(a.heldout) == set(b.heldout) and not set(a.train) & set(a.heldout)
    assert 100 < len(a.heldout) < 300
    assert set(split_documents(docs, 0.1, split_seed=4).heldout) != set(a.heldout)


def test_token_freq_covers_every_id_and_counts_the_train_array(prepared):
    """token_freq → one row per vocab id (zero counts too); counts = bincount of train.bin."""
    freq = pq.read_table(prepared.data_dir / "token_freq.parquet").to_pandas()
    train = np.asarray(open_array(prepared.data_dir, "train"))
    assert list(freq["token_id"]) == list(range(prepared.vocab_size))
    expected = np.bincount(train.reshape(-1), minlength=prepared.vocab_size)
    assert (freq["count"].to_numpy() == expected).all()
    assert sorted(freq["rank"]) == list(range(1, prepared.vocab_size + 1))
    top = freq.sort_values("rank").iloc[0]
    assert top["count"] == expected.max()
    assert freq["share"].sum() == pytest.approx(1.0)
    assert (freq["count"] == 0).any()  # a BPE vocab always has byte tokens the corpus never uses


def test_packed_arrays_and_eval_sets(prepared):
    meta = json.loads((prepared.data_dir / "meta.json").read_text())
    train = open_array(prepared.data_dir, "train")
    sample = open_array(prepared.data_dir, "eval-train")
    assert train.shape[1] == 32 and train.dtype == np.uint16
    assert sample.shape == (20, 32)
    assert (np.asarray(sample) == np.asarray(train)[meta["eval_train_indices"]]).all()
    assert open_array(prepared.data_dir, "eval-heldout").shape == (15, 32)


@pytest.mark.parametrize("with_eos", [True, False])
def test_stream_is_each_document_encoded_alone_then_eos(with_eos):
    """Across batch boundaries (7 documents, batches of 3): document i's ids, then EOS, in order."""
    docs = load_documents("rotten-tomatoes", "text")[:7]
    tokenizer = train_bpe(load_documents("rotten-tomatoes", "text")[:300], 400, 2)
    eos = eos_id(tokenizer) if with_eos else None
    expected = [i for doc in docs for i in tokenizer.encode(doc, add_special_tokens=False).ids
                + ([eos] if with_eos else [])]
    stream = encode_stream(tokenizer, docs, eos, batch_docs=3)
    assert stream.dtype == np.int64 and stream.tolist() == expected
    assert encode_stream(tokenizer, [], eos).shape == (0,)


def test_second_sweep_reuses_the_data_dir(sweep, prepared, tmp_path):
    """same data settings in a sibling sweep → same key, copied not rebuilt; other settings → new key."""
    again = prepare_data(SMALL, EVAL, sweep)
    assert again.data_dir == prepared.data_dir
    sibling = prepare_data(SMALL, EVAL, SweepLayout.at(sweep.root.parent / "other"))
    assert sibling.data_key == prepared.data_key
    assert (sibling.data_dir / "train.bin").read_bytes() == (prepared.data_dir / "train.bin").read_bytes()
    changed = prepare_data(SMALL.model_copy(update={"seq_len": 16}), EVAL, SweepLayout.at(tmp_path / "s"))
    assert changed.data_key != prepared.data_key


@pytest.mark.parametrize("suffix", ["txt", "jsonl", "csv", "parquet"])
def test_local_corpus_files(tmp_path, suffix):
    docs = [f"review number {i}: a film about {i % 7} things" for i in range(300)]
    path = tmp_path / f"corpus.{suffix}"
    if suffix == "txt":
        path.write_text("\n".join(docs) + "\n")
    elif suffix == "jsonl":
        pd.DataFrame({"body": docs}).to_json(path, orient="records", lines=True)
    elif suffix == "csv":
        pd.DataFrame({"body": docs}).to_csv(path, index=False)
    else:
        pd.DataFrame({"body": docs}).to_parquet(path)
    assert load_documents(str(path), "body") == docs
    data = DataConfig(corpus=str(path), text_column="body", seq_len=16, tokenizer={"vocab_size": 300})
    prepared = prepare_data(data, EvalConfig(n_train_sequences=4, n_heldout_sequences=2),
                            SweepLayout.at(tmp_path / "sw"))
    assert prepared.n_train_sequences > 10


def test_missing_text_column_names_the_columns(tmp_path):
    path = tmp_path / "c.csv"
    pd.DataFrame({"review": ["a b c"] * 5}).to_csv(path, index=False)
    with pytest.raises(CorpusError, match=r"data.text_column: 'text' is not a column .* columns: review"):
        load_documents(str(path), "text")


def test_empty_and_missing_corpus(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="holds no non-empty documents"):
        load_documents(str(empty), "text")
    with pytest.raises(CorpusError, match="not found"):
        load_documents(str(tmp_path / "missing.jsonl"), "text")


def test_corpus_smaller_than_a_batch_fails_and_leaves_no_data_dir(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("just a few words here\nand here\n" * 3)
    data = DataConfig(corpus=str(path), seq_len=64, tokenizer={"vocab_size": 300})
    layout = SweepLayout.at(SweepLayout.at(tmp_path / "sw"))
    with pytest.raises(CorpusError, match="fewer than one batch"):
        prepare_data(data, EvalConfig(), layout, min_sequences=8)
    assert list(layout.data_root.iterdir()) == []


def test_tokenizer_file_is_used_as_given(prepared, tmp_path):
    """kind: file → the saved tokenizer.json drives packing; same vocab, same ids."""
    data = DataConfig(**{**SMALL.model_dump(), "tokenizer": {
        "kind": "file", "path": str(prepared.data_dir / "tokenizer.json")}})
    again = prepare_data(data, EVAL, SweepLayout.at(tmp_path / "sw"))
    assert again.vocab_size == prepared.vocab_size and again.data_key != prepared.data_key
    assert (np.asarray(open_array(again.data_dir, "train")) ==
            np.asarray(open_array(prepared.data_dir, "train"))).all()


def test_tokenizer_file_that_does_not_parse(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    data = DataConfig(**{**SMALL.model_dump(), "tokenizer": {"kind": "file", "path": str(bad)}})
    with pytest.raises(CorpusError, match=r"data.tokenizer.path: .*tokenizer.json.* not a tokenizer.json"):
        prepare_data(data, EVAL, SweepLayout.at(tmp_path / "sw"))


def _word_level(vocab: dict, unk: str | None, path) -> str:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel(vocab, unk_token=unk))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(path))
    return str(path)


def _words_corpus(tmp_path) -> str:
    path = tmp_path / "words.txt"
    path.write_text("\n".join(f"the cat sat on the mat {i}" for i in range(200)) + "\n")  # distinct: both splits get some
    return str(path)


def test_tokenizer_file_with_gaps_in_its_ids_sizes_the_vocabulary_by_its_largest_id(tmp_path):
    vocab = {"[UNK]": 0, "</s>": 1, "the": 2, "cat": 500, "mat": 70_000}
    data = DataConfig(corpus=_words_corpus(tmp_path), seq_len=8, tokenizer={
        "kind": "file", "path": _word_level(vocab, "[UNK]", tmp_path / "gaps.json")})
    prepared = prepare_data(data, EvalConfig(n_train_sequences=4, n_heldout_sequences=2),
                            SweepLayout.at(tmp_path / "sw"))
    assert prepared.vocab_size == 70_001
    assert {0, 500, 70_000} <= set(np.unique(open_array(prepared.data_dir, "train")).tolist())


def test_tokenizer_file_that_cannot_encode_the_corpus_names_the_field(tmp_path):
    no_unk = _word_level({"the": 0, "cat": 1}, "[UNK]", tmp_path / "no-unk.json")  # [UNK] not in the vocab
    data = DataConfig(corpus=_words_corpus(tmp_path), seq_len=8, tokenizer={"kind": "file", "path": no_unk})
    with pytest.raises(CorpusError, match=r"^data.tokenizer: cannot encode the corpus \(.*unk"):
        prepare_data(data, EvalConfig(), SweepLayout.at(tmp_path / "sw"))


def test_text_column_of_non_strings_is_refused(tmp_path):
    path = tmp_path / "numbers.csv"
    pd.DataFrame({"text": range(50)}).to_csv(path, index=False)
    with pytest.raises(CorpusError, match=r"^data.text_column: 'text' of .* holds int64 values, not text"):
        load_documents(str(path), "text")


def test_directory_as_corpus_says_so(tmp_path):
    (tmp_path / "docs.txt").mkdir()
    with pytest.raises(CorpusError, match=r"data.corpus: .* is a directory"):
        load_documents(str(tmp_path / "docs.txt"), "text")


def test_held_out_split_without_one_sequence_is_refused(tmp_path):
    data = DataConfig(corpus=_words_corpus(tmp_path), heldout_fraction=1e-4, seq_len=8,
                      tokenizer={"vocab_size": 300})
    with pytest.raises(CorpusError, match=r"^data.heldout_fraction: 0.0001 .* eval.n_heldout_sequences: 0"):
        prepare_data(data, EvalConfig(n_heldout_sequences=4), SweepLayout.at(tmp_path / "sw"))
    prepared = prepare_data(data, EvalConfig(n_heldout_sequences=0), SweepLayout.at(tmp_path / "sw"))
    assert prepared.n_eval_sequences["heldout"] == 0


def test_relative_corpus_and_tokenizer_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = DataConfig(corpus="c.jsonl", tokenizer={"kind": "file", "path": "tok/t.json"})
    assert data.corpus == str(tmp_path / "c.jsonl") and data.tokenizer.path == str(tmp_path / "tok" / "t.json")
    assert DataConfig(corpus="rotten-tomatoes").corpus == "rotten-tomatoes"
    assert DataConfig(corpus="hf:stanfordnlp/imdb").corpus == "hf:stanfordnlp/imdb"


def _saved_hf_tokenizer(directory, docs, vocab_size: int) -> str:
    """A model's tokenizer as transformers saves one (tokenizer.json + tokenizer_config.json)."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=train_bpe(docs, vocab_size, 2),
                            eos_token="<|endoftext|>").save_pretrained(directory)
    return str(directory)


def test_hf_tokenizer_from_a_local_dir_tokenizes_the_data_as_autotokenizer(tmp_path):
    """kind: hf loads a model's own tokenizer through AutoTokenizer; the packed arrays are its ids, and a
    changed tokenizer in the same dir is a new data key (its content, not its name, is the identity)."""
    from transformers import AutoTokenizer

    docs = load_documents("rotten-tomatoes", "text")[:400]
    directory = _saved_hf_tokenizer(tmp_path / "tok", docs, 500)
    data = SMALL.model_copy(update={"tokenizer": {"kind": "hf", "name": directory}})
    data = DataConfig.model_validate(data.model_dump())
    prepared = prepare_data(data, EVAL, SweepLayout.at(tmp_path / "runs" / "s"))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert prepared.vocab_size == len(tokenizer) and prepared.eos_id == tokenizer.eos_token_id
    first_doc = split_documents(load_documents(data.corpus, data.text_column), data.heldout_fraction,
                                data.split_seed, data.max_train_docs).train[0]
    expected = tokenizer(first_doc).input_ids[:data.seq_len]
    assert np.asarray(open_array(prepared.data_dir, "train"))[0][:len(expected)].tolist() == expected

    _saved_hf_tokenizer(tmp_path / "tok", docs, 450)  # the same dir, another tokenizer
    again = prepare_data(data, EVAL, SweepLayout.at(tmp_path / "runs" / "s"))
    assert again.data_key != prepared.data_key and again.vocab_size == 450


def _dataset_dir(root) -> dict:
    """A dataset dir as the hub lays one out: two configs, the first with two splits (no network needed)."""
    texts = {("short", "train"): [f"short review {i} of a film" for i in range(40)],
             ("short", "test"): [f"held back review {i}, quite good" for i in range(30)],
             ("long", "train"): [f"a much longer review number {i} " * 5 for i in range(20)]}
    card = ["---", "configs:"]
    for config in ("short", "long"):
        card += [f"- config_name: {config}", "  data_files:"]
        for (name, split), docs in texts.items():
            if name == config:
                (root / config).mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"body": docs}).to_parquet(root / config / f"{split}.parquet")
                card += [f"  - split: {split}", f"    path: {config}/{split}.parquet"]
    (root / "README.md").write_text("\n".join(card + ["---", ""]))
    return texts


def test_hf_corpus_takes_config_split_and_streaming_and_its_content_is_the_key(tmp_path):
    from raysweep.data.prepare import data_key
    from raysweep.spec.schema import HubDatasetConfig

    texts = _dataset_dir(tmp_path / "reviews")
    corpus = f"hf:{tmp_path / 'reviews'}"
    test_split = HubDatasetConfig(config="short", split="test")
    assert load_documents(corpus, "body", test_split) == [t.strip() for t in texts[("short", "test")]]
    assert load_documents(corpus, "body", test_split.model_copy(update={"streaming": True})) == \
        [t.strip() for t in texts[("short", "test")]]
    assert load_documents(corpus, "body", HubDatasetConfig(config="long")) == \
        [t.strip() for t in texts[("long", "train")]]
    with pytest.raises(CorpusError, match=r"data\.text_column: 'text' is not a column of .*; columns: body"):
        load_documents(corpus, "text", test_split.model_copy(update={"streaming": True}))

    def key(hub):
        return data_key(DataConfig(corpus=corpus, text_column="body", hub=hub), EVAL)

    assert key(test_split) != key(HubDatasetConfig(config="short"))  # the split is part of the data
    before = key(test_split)
    pd.DataFrame({"body": ["an edited review"] * 30}).to_parquet(tmp_path / "reviews" / "short" / "test.parquet")
    assert key(test_split) != before  # so is the dir's content
