"""`raysweep plan`: what a sweep will cost, before anything starts.

Per trial, from the spec and the model built on the meta device: parameters, training tokens and
FLOPs, eval token rows and their Parquet bytes, peak memory per worker, and GPU-hours and cost. It
reads what earlier sweeps under the same storage root measured (MFU, bytes per shard row) and writes
nothing. Every figure is an estimate; `Plan.assumptions` says where each one comes from.

- Training FLOPs are model FLOPs (raysweep.models.build.flops_per_token: 6 x matmul params + attention,
  PaLM App. B) x steps x batch_size x seq_len. Activation checkpointing's recompute is not in them: it
  costs time, which a measured MFU already shows. Eval adds one forward (a third) per scored token.
- GPU-hours = FLOPs / (MFU x the GPU's dense bf16 peak), summed over a trial's workers.
- Peak memory per worker: float32 params, grads and both AdamW moments sharded over the workers
  (FSDP2), the unsharded units FSDP2 gathers, the activations autograd keeps for one step's batch
  share (fewer under activation checkpointing), and the logits with their loss.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from raysweep.models.build import (build_config, decoder_blocks, flops_per_token, head_dim, hf_config_fields,
                                   stored_config)
from raysweep.spec.schema import SweepSpec, TokenizerConfig
from raysweep.store.layout import SweepLayout, partition_keys
from raysweep.store.shards import complete_shards, manifest_path
from raysweep.store.storage import StoragePath, location, read_parquet_table
from raysweep.train.devices import GPUS
from raysweep.trials.checkpoints import CheckpointSource, checkpoint_dir
from raysweep.trials.grid import grid_points
from raysweep.trials.optuna import fixed_values
from raysweep.trials.point import TrialPoint, data_config

# Bytes per token row when no shard under the storage root says otherwise: measured on the shards of
# examples/demo.yaml (TOKEN_SCHEMA, zstd, rows sorted by token id; 4032-row shards, 4096-type BPE).
DEFAULT_BYTES_PER_ROW = 8.7
SHARDS_SAMPLED = 64  # manifests read for the bytes per row: enough for a stable mean, few requests on S3


@dataclass(frozen=True)
class TrialPlan:
    trial: str
    """The trial_id, or what stands for trials not known yet (a search's)."""
    n_trials: int
    scale: str
    workers: int
    n_params: int
    train_tokens: int
    train_flops: float
    eval_flops: float
    eval_rows: int
    parquet_bytes: float
    peak_memory_bytes: float
    fits: Optional[bool]
    """Fits the named GPU's memory; None: no GPU named."""
    mfu: Optional[float]
    gpu_hours: Optional[float]
    """Of all its workers together; None: no GPU named."""
    cost_usd: Optional[float]


@dataclass(frozen=True)
class Plan:
    sweep: str
    search: str
    trials: list[TrialPlan]
    assumptions: dict = field(default_factory=dict)

    def totals(self) -> dict:
        def total(name):
            values = [getattr(t, name) for t in self.trials]
            return None if None in values else sum(v * t.n_trials for v, t in zip(values, self.trials))
        return {"n_trials": sum(t.n_trials for t in self.trials),
                **{name: total(name) for name in ("train_tokens", "train_flops", "eval_flops", "eval_rows",
                                                  "parquet_bytes", "gpu_hours", "cost_usd")},
                "peak_memory_bytes": max(t.peak_memory_bytes for t in self.trials),
                "fits": None if any(t.fits is None for t in self.trials) else all(t.fits for t in self.trials)}


# Shapes and memory -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    n_params: int
    block_params: int
    """The largest decoder block: FSDP2 gathers one block at a time (and prefetches the next)."""
    root_params: int
    """Everything outside the blocks (embeddings, final norm, head): FSDP2's root unit."""
    hidden: int
    intermediate: int
    n_layers: int
    kv_width: int
    vocab_size: int


def model_shape(config: PretrainedConfig) -> ModelShape:
    """The counts the memory estimate needs, from the model built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    blocks = decoder_blocks(model)
    block_params = [sum(p.numel() for p in block.parameters()) for block in blocks]
    n_params = sum(p.numel() for p in model.parameters())
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return ModelShape(n_params, max(block_params), n_params - sum(block_params), config.hidden_size,
                      getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
                      config.num_hidden_layers, kv_heads * head_dim(config), config.vocab_size)


def block_elements_per_token(shape: ModelShape) -> int:
    """What autograd keeps per token for one decoder block's backward, in elements: fitted to transformers'
    Llama blocks with SDPA attention (8 x hidden + 2 x key/value width + 4 x MLP width; checked in
    tests/unit/test_plan.py). SDPA keeps no seq_len x seq_len scores."""
    return 8 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate


def kept_elements_per_token(shape: ModelShape, checkpoint_every: Optional[int]) -> int:
    """Activations kept through one step's forward, per token, logits excluded: each block's, a checkpointed
    block only its input (transformers checkpoints blocks 0, n, 2n, ...), and the final norm's."""
    checkpointed = math.ceil(shape.n_layers / checkpoint_every) if checkpoint_every else 0
    return ((shape.n_layers - checkpointed) * block_elements_per_token(shape) + checkpointed * shape.hidden
            + 3 * shape.hidden)


def peak_memory_bytes(shape: ModelShape, spec: SweepSpec) -> float:
    """Peak bytes on one training worker (see the module docstring)."""
    workers, use_gpu = spec.resources.workers_per_trial, spec.resources.use_gpu
    compute = 2 if use_gpu else 4  # FSDP2's bf16 params on a GPU (raysweep.train.parallel), float32 on CPU
    states = 16 * shape.n_params / workers  # float32 params, grads, AdamW's two moments
    gathered = 0.0
    if workers > 1 or use_gpu:  # FSDP2: the root and two blocks unsharded, one block's grads before reduction
        gathered = compute * (shape.root_params + 2 * shape.block_params) + (compute + 4) * shape.block_params
    checkpoint_every = spec.train.activation_checkpointing
    recompute = block_elements_per_token(shape) if checkpoint_every else 0  # one block rebuilt in the backward
    tokens = spec.train.batch_size // workers * spec.data.seq_len
    activations = tokens * compute * (kept_elements_per_token(shape, checkpoint_every) + recompute)
    return states + gathered + activations + tokens * shape.vocab_size * _bytes_per_logit(compute)


def scoring_memory_bytes(shape: ModelShape, spec: SweepSpec) -> float:
    """Peak bytes scoring a checkpoint (`search: checkpoints`): the weights, one block's activations at a
    time under no_grad, and one eval batch's logits."""
    dtype = 2 if spec.checkpoints.dtype == "bfloat16" else 4
    tokens = spec.eval.batch_size * spec.data.seq_len
    return (dtype * shape.n_params + tokens * dtype * block_elements_per_token(shape)
            + tokens * shape.vocab_size * _bytes_per_logit(dtype))


def _bytes_per_logit(compute: int) -> int:
    """The logit, its float32 copy when it is not float32 already, its float32 log-softmax kept for the
    backward and that one's float32 gradient."""
    return compute + (4 if compute < 4 else 0) + 8


# What earlier sweeps measured ------------------------------------------------------------------

def measured_mfu(storage: StoragePath, scale: str, on_gpu: bool) -> Optional[tuple[float, str]]:
    """(MFU, where measured) of the newest trial of `scale` under the storage root that trained on the same
    kind of device (GPU or CPU, from its attempts log): the median of its newest train-metrics chunk."""
    newest = None
    for point_file in storage.glob("*/train/*/point.json"):
        try:
            point = json.loads(point_file.read_text())
        except ValueError:  # a damaged point of some other sweep: not this plan's business
            continue
        layout, trial_id = SweepLayout(point_file.parent.parent.parent), point_file.parent.name
        attempts = layout.attempts_file(trial_id)
        if not isinstance(point, dict) or point.get("scale") != scale or not attempts.exists():
            continue
        device = _device_of(attempts.read_text())
        if not device or device.endswith("(CPU)") == on_gpu:
            continue
        try:
            chunks = complete_shards(layout.trial_train_metrics_dir(trial_id))
            if not chunks:
                continue
            chunk = read_parquet_table(max(chunks, key=lambda c: int(partition_keys(c)["upto"]))).to_pydict()
            when, mfu = max(chunk["time"]), float(statistics.median(chunk["mfu"]))
        except (ValueError, KeyError, TypeError, OSError):  # another sweep's damaged chunk: measure elsewhere
            continue
        if newest is None or when > newest[0]:
            newest = (when, mfu, f"measured: {layout.name}/{trial_id}, {device}")
    return newest[1:] if newest else None


def _device_of(attempts: str) -> str:
    """The device the newest worker group measured its peak on, e.g. `measured fp32 matmul (CPU)` or
    `datasheet bf16 (NVIDIA H100 80GB HBM3)`; '' if its line is damaged."""
    lines = [line for line in attempts.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]).get("peak_source", "") if lines else ""
    except (ValueError, AttributeError):
        return ""


def bytes_per_row(storage: StoragePath, layout: SweepLayout) -> tuple[float, str]:
    """Parquet bytes per token row: measured on up to SHARDS_SAMPLED token shards of this sweep, else of the
    first sweep under the storage root that has some, else DEFAULT_BYTES_PER_ROW."""
    others = sorted(d for d in storage.iterdir() if d.is_dir() and d != layout.root) if storage.exists() else []
    for sweep in [layout.root, *others]:
        shards = complete_shards(SweepLayout(sweep).shards_root("tokens"))[:SHARDS_SAMPLED]
        try:
            rows = sum(int(json.loads(manifest_path(shard).read_text())["rows"]) for shard in shards)
            size = sum(shard.stat().st_size for shard in shards)
        except (ValueError, KeyError, TypeError, OSError):  # a damaged manifest: try the next sweep
            continue
        if rows > 0:
            return size / rows, f"measured on {len(shards)} token shards of {sweep}"
    return DEFAULT_BYTES_PER_ROW, f"measured on examples/demo.yaml's shards (none under {storage} yet)"


# The plan --------------------------------------------------------------------------------------

def _vocab_size(tokenizer: TokenizerConfig) -> tuple[int, str]:
    """(vocabulary size, how it is known) before any data is built."""
    if tokenizer.kind == "bpe":
        return tokenizer.vocab_size, "data.tokenizer.vocab_size (a BPE trained on a small corpus may stop short)"
    from raysweep.data.tokenizer import load_hf_tokenizer, load_tokenizer_file, vocab_size_of

    loaded = (load_tokenizer_file(tokenizer.path) if tokenizer.kind == "file"
              else load_hf_tokenizer(tokenizer.name, tokenizer.revision)[0])
    return vocab_size_of(loaded), f"the {tokenizer.kind} tokenizer's"


def _eval_sequences(spec: SweepSpec) -> int:
    """Sequences one eval scores: both fixed eval sets (at most: a small corpus packs fewer)."""
    return spec.eval.n_train_sequences + spec.eval.n_heldout_sequences


def _pricing(spec: SweepSpec, flops: float, mfu: float) -> tuple[Optional[float], Optional[float]]:
    """(GPU-hours, USD) of `flops` at `mfu`; None where no GPU (or no price) is named."""
    if spec.cost.gpu is None:
        return None, None
    hours = flops / (mfu * GPUS[spec.cost.gpu].bf16_peak_flops) / 3600
    return hours, None if spec.cost.usd_per_gpu_hour is None else hours * spec.cost.usd_per_gpu_hour


def _fits(spec: SweepSpec, peak: float) -> Optional[bool]:
    return None if spec.cost.gpu is None else peak <= GPUS[spec.cost.gpu].memory_gib * 2**30


class _Planner:
    """Caches per (scale, vocab): shapes and FLOPs; per scale: the MFU used."""

    def __init__(self, spec: SweepSpec):
        self.spec, self.storage = spec, location(spec.storage)
        self.shapes, self.mfus, self.vocab_notes = {}, {}, set()
        self.row_bytes, self.row_source = bytes_per_row(self.storage, spec.layout)

    def shape(self, scale: str, vocab_slot: Optional[int]) -> tuple[ModelShape, int]:
        if (scale, vocab_slot) not in self.shapes:
            vocab, note = _vocab_size(data_config(self.spec, vocab_slot).tokenizer)
            self.vocab_notes.add(note)
            config = build_config(scale, vocab, self.spec.model, layout=self.spec.layout)
            self.shapes[scale, vocab_slot] = model_shape(config), flops_per_token(config, self.spec.data.seq_len)
        return self.shapes[scale, vocab_slot]

    def mfu(self, scale: str) -> float:
        if scale not in self.mfus:
            found = measured_mfu(self.storage, scale, self.spec.resources.use_gpu)
            self.mfus[scale] = found or (self.spec.cost.default_mfu, "default (cost.default_mfu)")
        return self.mfus[scale][0]

    def trial(self, label: str, n_trials: int, point: TrialPoint) -> TrialPlan:
        spec = self.spec
        shape, per_token = self.shape(point.scale, point.data_slot)
        tokens = spec.train.steps * spec.train.batch_size * spec.data.seq_len
        eval_steps = len(spec.eval_steps())
        eval_flops = per_token / 3 * eval_steps * _eval_sequences(spec) * spec.data.seq_len
        rows = eval_steps * _eval_sequences(spec) * (spec.data.seq_len - 1)  # a row per target token
        peak, mfu = peak_memory_bytes(shape, spec), self.mfu(point.scale)
        hours, cost = _pricing(spec, per_token * tokens + eval_flops, mfu)
        return TrialPlan(label, n_trials, point.scale, spec.resources.workers_per_trial, shape.n_params, tokens,
                         float(per_token * tokens), eval_flops, rows, rows * self.row_bytes, peak,
                         _fits(spec, peak), mfu, hours, cost)

    def checkpoint(self, point) -> TrialPlan:
        """A checkpoint is only scored: one eval, no training."""
        spec, layout = self.spec, self.spec.layout
        if layout.model_config_file(point.model).exists():
            config = stored_config(layout, point.model)
        else:
            name, revision = checkpoint_dir(spec.checkpoints.models[point.model], point.revision)
            fields = hf_config_fields(name, f"checkpoints.models.{point.model}.hf", revision)
            config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        self.vocab_notes.add("each checkpoint's config.json (vocab_size)")
        shape = model_shape(config)
        rows = _eval_sequences(spec) * (spec.data.seq_len - 1)
        flops = flops_per_token(config, spec.data.seq_len) / 3 * _eval_sequences(spec) * spec.data.seq_len
        peak, mfu = scoring_memory_bytes(shape, spec), self.mfu(point.model)
        hours, cost = _pricing(spec, flops, mfu)
        return TrialPlan(point.trial_id, 1, point.model, 1, shape.n_params, 0, 0.0, flops, rows,
                         rows * self.row_bytes, peak, _fits(spec, peak), mfu, hours, cost)


def plan_sweep(spec: SweepSpec) -> Plan:
    """The plan of every trial the spec's sweep would run: the grid's points, a search's `num_samples` trials
    (one row: the points are chosen as it runs, but the model is fixed), or each checkpoint to score."""
    planner = _Planner(spec)
    if spec.search == "checkpoints":
        trials = [planner.checkpoint(point) for point in CheckpointSource(spec).points()]
    elif spec.search == "optuna":
        point = TrialPoint(**fixed_values(spec) | {"weight_decay": spec.grid.weight_decay[0]})
        label = f"optuna: {spec.optuna.num_samples} trials of {point.scale}, points chosen as it runs"
        if spec.optuna.scheduler:
            label += " (at most: ASHA stops some early)"
        trials = [planner.trial(label, spec.optuna.num_samples, point)]
    else:
        trials = [planner.trial(point.trial_id, 1, point) for point in grid_points(spec)]
    mfu = {scale: {"mfu": value, "source": source} for scale, (value, source) in planner.mfus.items()}
    assumptions = {
        "flops": "model FLOPs: 6 x matmul params + attention per token (PaLM App. B); training tokens = steps x "
                 "batch_size x seq_len; activation-checkpointing recompute excluded (a measured MFU shows it); "
                 "eval: one forward (a third) per scored token",
        "mfu": mfu,
        "gpu": spec.cost.gpu and {"name": spec.cost.gpu, **asdict(GPUS[spec.cost.gpu])},
        "price": ({"usd_per_gpu_hour": spec.cost.usd_per_gpu_hour, "source": "cost.usd_per_gpu_hour"}
                  if spec.cost.usd_per_gpu_hour is not None else None),
        "eval_rows": "(eval.n_train_sequences + eval.n_heldout_sequences) x (seq_len - 1) per eval step, at most "
                     "(a small corpus packs fewer sequences)",
        "parquet_bytes_per_row": {"bytes": planner.row_bytes, "source": planner.row_source},
        "vocab_size": sorted(planner.vocab_notes),
        "memory": ("estimate per worker: the weights in checkpoints.dtype, one block's activations and one eval "
                   "batch's logits" if spec.search == "checkpoints" else
                   "estimate per worker: float32 params, grads and AdamW moments sharded over "
                   "resources.workers_per_trial, FSDP2's gathered units, activations of the batch share "
                   f"({'bf16' if spec.resources.use_gpu else 'float32'}; train.activation_checkpointing applied), "
                   "logits and loss"),
    }
    return Plan(spec.name, spec.search, trials, assumptions)


# Output ----------------------------------------------------------------------------------------

def plan_json(plan: Plan) -> str:
    return json.dumps({"sweep": plan.sweep, "search": plan.search, "trials": [asdict(t) for t in plan.trials],
                       "total": plan.totals(), "assumptions": plan.assumptions}, indent=1)


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}"


def _bytes(value: float) -> str:
    for factor, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value:.0f} B"


COLUMNS = ("trial", "params", "train tokens", "train FLOPs", "eval rows", "Parquet", "peak mem/worker", "fits",
           "GPU-h", "cost")


def format_table(plan: Plan, spec: SweepSpec) -> str:
    """An aligned table (a row per trial, then the total) and the assumptions under it."""
    no_gpu = "n/a (CPU)" if not spec.resources.use_gpu else "n/a (no cost.gpu)"

    def cells(t: dict, n_params: str) -> list[str]:
        fits = "-" if t["fits"] is None else ("yes" if t["fits"] else "NO")
        hours = no_gpu if t["gpu_hours"] is None else f"{t['gpu_hours']:.3g}"
        cost = no_gpu if t["gpu_hours"] is None else "-" if t["cost_usd"] is None else f"${t['cost_usd']:,.2f}"
        return [n_params, _si(t["train_tokens"]), _si(t["train_flops"]), _si(t["eval_rows"]),
                _bytes(t["parquet_bytes"]), _bytes(t["peak_memory_bytes"]), fits, hours, cost]

    rows = [[t.trial, *cells(asdict(t), _si(t.n_params))] for t in plan.trials]
    rows.append([f"total ({plan.totals()['n_trials']} trials)", *cells(plan.totals(), "")])
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]

    def line(row) -> str:  # the trial column left-aligned, the figures right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    out = [line(COLUMNS), *(line(r) for r in rows[:-1]), "-" * len(line(COLUMNS)), line(rows[-1]), ""]
    a = plan.assumptions
    out += [f"MFU {scale}: {m['mfu']:.3g}, {m['source']}" for scale, m in a["mfu"].items()]
    if a["gpu"]:
        out.append(f"GPU: {a['gpu']['name']}, {a['gpu']['memory_gib']} GiB, "
                   f"{_si(a['gpu']['bf16_peak_flops'], 'FLOP/s')} dense bf16 (datasheet)")
    out.append(f"price: ${a['price']['usd_per_gpu_hour']}/GPU-hour (cost.usd_per_gpu_hour)" if a["price"]
               else "price: none (cost.usd_per_gpu_hour not set)")
    out += [f"Parquet: {a['parquet_bytes_per_row']['bytes']:.3g} bytes/row, {a['parquet_bytes_per_row']['source']}",
            f"vocabulary: {'; '.join(a['vocab_size'])}", f"eval rows: {a['eval_rows']}", f"FLOPs: {a['flops']}",
            f"memory: {a['memory']}"]
    return "\n".join(out)
