"""Tokenizing and packing a corpus: raysweep's path (encode_stream + pack) against the `tokenizers` batch
encoder alone, on the same documents and tokenizer, in one run.

    python bench/data_prep.py [--corpus rotten-tomatoes] [--vocab 4096] [--repeat 3] [--threads N]

All documents of the corpus (not the demo's 600), so the timing is not lost in noise. Then the same
encode_stream + pack in fresh processes with `tokenizers`' thread pool at 1 thread and at N (default: every
core): how far tokenization scales across cores. Last, the peak RSS of `prepare_data` (BPE, packed arrays,
token_freq) in a fresh process on the corpus as a Parquet file, and on that file repeated 10x (`--copies`):
the data path streams, so memory should not grow with the corpus.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

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
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--encode-only", action="store_true", help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--prepare-only", help=argparse.SUPPRESS)  # the child's role: a corpus file
    args = parser.parse_args()
    if args.encode_only:
        encode_only(args)
        return
    if args.prepare_only:
        prepare_only(args)
        return

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
    rates = {threads: threaded_rate(args, threads) for threads in (1, args.threads)}
    print(f"encode_stream + pack in a fresh process: 1 thread {rates[1] / 1e6:.2f} M tokens/s, {args.threads} "
          f"threads {rates[args.threads] / 1e6:.2f} M tokens/s; ratio {rates[args.threads] / rates[1]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {}
        for copies in (1, args.copies):
            corpus = Path(tmp) / f"corpus-x{copies}.parquet"
            # Each copy's documents differ (a copy number), so the split and the BPE see a corpus copies x larger.
            pd.DataFrame({"text": [f"{doc} ({n})" for n in range(copies) for doc in docs]}).to_parquet(corpus)
            peaks[copies] = (corpus.stat().st_size, *prepared_peak(args, corpus))
        for copies, (size, floor, peak, n_tokens, seconds) in peaks.items():
            print(f"prepare_data, corpus x{copies} ({size / 2**20:.1f} MiB as Parquet): {n_tokens:,} train tokens "
                  f"in {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB "
                  f"(floor {floor / 2**20:.0f} MiB, above it {(peak - floor) / 2**20:.0f} MiB)")
        (_, f1, p1, *_), (_, f10, p10, *_) = peaks[1], peaks[args.copies]
        print(f"above-floor peak, x{args.copies} / x1: {(p10 - f10) / (p1 - f1):.2f}")


def threaded_rate(args, threads: int) -> float:
    """tokens/s of this script's --encode-only child with `tokenizers`' (rayon's) pool at `threads`: its size
    is fixed when the pool starts, so each count needs its own process."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    out = subprocess.run([sys.executable, __file__, "--encode-only", "--corpus", args.corpus, "--vocab",
                          str(args.vocab), "--seq-len", str(args.seq_len), "--repeat", str(args.repeat)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def encode_only(args) -> None:
    docs = load_documents(args.corpus, "text")
    tokenizer = train_bpe(docs, args.vocab, 2)
    eos = eos_id(tokenizer)
    seconds, packed = best_of(args.repeat, lambda: pack(encode_stream(tokenizer, docs, eos), args.seq_len))
    print(packed.size / seconds)


def prepared_peak(args, corpus: Path) -> tuple[int, int, int, float]:
    """(RSS before, peak RSS, train tokens, seconds) of prepare_data on `corpus` in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--prepare-only", str(corpus), "--vocab", str(args.vocab),
                          "--seq-len", str(args.seq_len)], capture_output=True, text=True, check=True).stdout
    floor, peak, n_tokens, seconds = out.strip().splitlines()[-1].split()
    return int(floor), int(peak), int(n_tokens), float(seconds)


def prepare_only(args) -> None:
    import resource

    from raysweep.data.prepare import prepare_data
    from raysweep.spec.schema import DataConfig, EvalConfig
    from raysweep.store.layout import SweepLayout

    with open("/proc/self/statm") as statm:
        floor = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    data = DataConfig(corpus=args.prepare_only, seq_len=args.seq_len, tokenizer={"vocab_size": args.vocab})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        prepared = prepare_data(data, EvalConfig(), SweepLayout.at(Path(tmp) / "sweep"))
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(floor, peak, prepared.n_train_sequences * args.seq_len, f"{seconds:.2f}")


if __name__ == "__main__":
    main()
