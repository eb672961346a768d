"""Tokenizing and packing a corpus: raysweep's path (encode_stream + pack) against the `tokenizers` batch
encoder alone, on the same documents and tokenizer, in one run.

    python bench/data_prep.py [--corpus rotten-tomatoes] [--vocab 4096] [--repeat 3]

All documents of the corpus (not the demo's 600), so the timing is not lost in noise.
"""

from __future__ import annotations

import argparse
import time

from raysweep.data.corpus import load_documents
from raysweep.data.pack import encode_stream, pack
from raysweep.data.tokenizer import eos_id, train_bpe


def best_of(repeat: int, run):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="rotten-tomatoes")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    docs = load_documents(args.corpus, "text")
    started = time.perf_counter()
    tokenizer = train_bpe(docs, args.vocab, 2)
    train_s = time.perf_counter() - started
    eos = eos_id(tokenizer)

    alone_s, encodings = best_of(args.repeat, lambda: tokenizer.encode_batch(docs, add_special_tokens=False))
    fast_s, _ = best_of(args.repeat, lambda: tokenizer.encode_batch_fast(docs, add_special_tokens=False))
    n_tokens = sum(len(e.ids) for e in encodings) + len(docs)  # + one EOS per document
    ours_s, packed = best_of(args.repeat, lambda: pack(encode_stream(tokenizer, docs, eos), args.seq_len))
    print(f"{len(docs):,} documents, {n_tokens:,} tokens, BPE {args.vocab} trained in {train_s:.1f} s; "
          f"{packed.shape[0]:,} sequences of {args.seq_len}")
    print(f"tokenizers encode_batch alone: {alone_s:.2f} s = {n_tokens / alone_s / 1e6:.2f} M tokens/s")
    print(f"tokenizers encode_batch_fast alone (no offsets): {fast_s:.2f} s = {n_tokens / fast_s / 1e6:.2f} M tokens/s")
    print(f"raysweep encode_stream + pack: {ours_s:.2f} s = {n_tokens / ours_s / 1e6:.2f} M tokens/s; "
          f"ratio {alone_s / ours_s:.2f} against encode_batch, {fast_s / ours_s:.2f} against encode_batch_fast")


if __name__ == "__main__":
    main()
