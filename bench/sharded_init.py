"""Peak memory of each of 2 CPU ranks building and sharding a model, side by side in one run:

  full    what trials did before: every rank builds the whole fp32 model (transformers' from_config, one
          RNG stream), then FSDP2 shards it
  meta    what a trial's workers do now: the model on the meta device, FSDP2 shards it there, then each
          rank allocates its own shards and initializes them unit by unit (raysweep.models.init)

Each setup runs in 2 fresh gloo processes (so ru_maxrss is that setup's own peak). Printed per rank: RSS
after imports and the process group (the floor every rank pays), peak RSS, and both as a share of the full
fp32 model's bytes.

    python bench/sharded_init.py [--scale qwen2-1.5b] [--vocab 151936]
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rank(rank: int, setup: str, scale: str, vocab: int, port: int, out: dict) -> None:
    from transformers import AutoModelForCausalLM

    from raysweep.models.build import build_config
    from raysweep.models.init import materialize, meta_model
    from raysweep.spec.schema import TrialTrainConfig
    from raysweep.train.parallel import parallelize

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    config = build_config(scale, vocab_size=vocab)
    cpu, cfg = torch.device("cpu"), TrialTrainConfig()
    floor = _rss_bytes()
    started = time.perf_counter()
    if setup == "full":
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float()
        parallelize(model, cpu, 2, cfg)
    else:
        model = meta_model(config)
        template = copy.deepcopy(model)
        parallelize(model, cpu, 2, cfg)
        materialize(model, template, 0, cpu)
    seconds = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.parameters())  # DTensors: the global count
    out[(setup, rank)] = {"floor": floor, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          "seconds": seconds, "n_params": n_params}
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="qwen2-1.5b")
    parser.add_argument("--vocab", type=int, default=151936, help="Qwen2's tokenizer")
    args = parser.parse_args()
    results = mp.Manager().dict()
    for setup in ("full", "meta"):
        mp.spawn(_rank, args=(setup, args.scale, args.vocab, _free_port(), results), nprocs=2)
    full_bytes = 4 * results[("meta", 0)]["n_params"]
    print(f"{args.scale}, vocab {args.vocab}: {results[('meta', 0)]['n_params'] / 1e9:.3f}B parameters, "
          f"full fp32 model {full_bytes / 2**30:.2f} GiB; 2 CPU ranks (gloo)")
    print(f"{'setup':6} {'rank':>4} {'floor GiB':>10} {'peak GiB':>9} {'peak/model':>11} "
          f"{'(peak-floor)/model':>19} {'build s':>8}")
    for setup in ("full", "meta"):
        for rank in (0, 1):
            r = results[(setup, rank)]
            print(f"{setup:6} {rank:>4} {r['floor'] / 2**30:10.2f} {r['peak'] / 2**30:9.2f} "
                  f"{r['peak'] / full_bytes:11.3f} {(r['peak'] - r['floor']) / full_bytes:19.3f} {r['seconds']:8.1f}")
    worst = {s: max(results[(s, r)]["peak"] for r in (0, 1)) for s in ("full", "meta")}
    print(f"worst rank's peak, meta / full: {worst['meta'] / worst['full']:.3f}")


if __name__ == "__main__":
    main()
