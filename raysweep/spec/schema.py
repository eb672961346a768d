"""The sweep spec: one YAML file, validated by pydantic, with `--set a.b=value` overrides.

Every run-level choice lives here. Unknown keys are refused, and every error names the
field path and the bad value (``grid.weight_decay[2]: must be >= 0, got -0.1``).
"""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Literal, Optional, Union, get_args

from pydantic import (BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from raysweep.data.corpus import is_local_file
from raysweep.models.presets import PRESETS
from raysweep.ops.cluster import STORAGE_ENV
from raysweep.spec.errors import SpecError, describe_error
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StorageError, check_location
from raysweep.train.devices import GPUS

DecayPolicy = Literal["all_matrices", "no_embeddings", "embeddings_only"]
# What `search: optuna` may vary; each bound must pass the constraints of the field it stands for.
SearchParam = Literal["weight_decay", "lr", "freq_decay_alpha", "label_smoothing", "dropout"]
# <eval split>_<metric>: measured on the trial's final-step shards by the `trial_objectives` query,
# and minimized. Held-out average loss against train-sample rarest-bin loss is the paper's trade-off.
OBJECTIVE_METRICS = ("average_loss", "balanced_loss", "lowest_bin_loss")
Objective = Literal["train_average_loss", "train_balanced_loss", "train_lowest_bin_loss",
                    "heldout_average_loss", "heldout_balanced_loss", "heldout_lowest_bin_loss"]
# grid axis -> (spec section, field) holding its single value when the axis is left out
REGULARIZER_AXES = {"decay_policy": ("train", "decay_policy"), "freq_decay_alpha": ("train", "freq_decay_alpha"),
                    "label_smoothing": ("train", "label_smoothing"), "dropout": ("model", "dropout")}


def _types_in(annotation: Any) -> set:
    """Every type an annotation names: Optional[list[int]] -> {NoneType, list, int}."""
    return {annotation} | {t for arg in get_args(annotation) for t in _types_in(arg)}


class SpecSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic's lax mode reads YAML's `true` as 1 for a number field (`seed: [true]` was seed 1)."""
        items = value if isinstance(value, (list, tuple)) else [value]
        types = _types_in(cls.model_fields[info.field_name].annotation)
        if any(isinstance(item, bool) for item in items) and {int, float} & types and bool not in types:
            raise PydanticCustomError("bool_not_number", "must be a number, not true/false")
        return value


def _local_dir_or_hub_id(name: Optional[str]) -> Optional[str]:
    """A Hugging Face source: a path (./, ../, / or ~) becomes absolute, so the stored spec means the same
    from any directory; anything else is a hub id, whatever dirs the current directory holds."""
    if name and name.startswith(("/", "./", "../", "~")):
        return os.path.abspath(os.path.expanduser(name))
    return name


def is_local_path(name: str) -> bool:
    """A Hugging Face source the spec named by a path (made absolute on load), not a hub id."""
    return name.startswith("/")


def _absolute_local_path(path: Optional[str]) -> Optional[str]:
    """A local file as an absolute path, so the stored spec means the same from any directory
    (`raysweep resume` from elsewhere); bundled and hub corpora stay names."""
    return os.path.abspath(os.path.expanduser(path)) if path is not None and is_local_file(path) else path


class TokenizerConfig(SpecSection):
    """The tokenizer the data is encoded with: a BPE trained on the training split, a tokenizer.json, or a
    hub tokenizer."""
    kind: Literal["bpe", "file", "hf"] = "bpe"
    """`bpe`: train a byte-level BPE on the train split; `file`: load `path` (a tokenizer.json); `hf`: a
    model's own tokenizer through transformers' AutoTokenizer, by `name`."""
    vocab_size: int = Field(4096, ge=260)
    """Vocabulary size asked of the BPE trainer (it may stop short on a small corpus)."""
    min_frequency: int = Field(2, ge=1)
    """A pair must occur this often in the train split to be merged."""
    path: Optional[str] = None
    """tokenizer.json to load when kind is `file`."""
    name: Optional[str] = None
    """A hub id, or a local dir with a (fast) tokenizer as a path (`./dir`, `/dir`), when kind is `hf`."""
    revision: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """A hub branch, tag or commit of a hub `name` (kind `hf`); None: the default branch."""

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: Optional[str]) -> Optional[str]:
        return _absolute_local_path(path)

    @field_validator("name")
    @classmethod
    def _local_dir_or_hub_id(cls, name: Optional[str]) -> Optional[str]:
        return _local_dir_or_hub_id(name)


class HubDatasetConfig(SpecSection):
    """How an `hf:` corpus is loaded: `datasets.load_dataset`'s own arguments."""
    config: Optional[str] = None
    """The dataset's configuration (subset), e.g. `wikitext-103-raw-v1`."""
    split: str = "train"
    """The split whose documents raysweep divides into its train and held-out sets."""
    revision: Optional[str] = None
    """A branch, tag or commit of a hub dataset; a commit pins its content."""
    streaming: bool = False
    """Read the rows as they download instead of preparing the whole dataset first."""


class DataConfig(SpecSection):
    """The corpus, its split into training and held-out documents, the tokenizer and the sequence length."""
    corpus: str = "rotten-tomatoes"
    """`rotten-tomatoes` (bundled), a local .txt/.jsonl/.json/.csv/.parquet file, or `hf:<dataset>`."""
    text_column: str = "text"
    """Column holding the document text (ignored for .txt, one document per line)."""
    heldout_fraction: float = Field(0.05, gt=0, lt=1)
    """Share of documents held out of training, chosen by a hash of the text and `split_seed`."""
    split_seed: int = Field(0, ge=0)
    """Seed of the train/held-out split; independent of the trial seed so all trials share it."""
    max_train_docs: Optional[int] = Field(None, ge=1)
    """Keep only the first N training documents (None: all). Small N lets tiny models memorise."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    hub: HubDatasetConfig = HubDatasetConfig()
    """Options of an `hf:` corpus."""
    seq_len: int = Field(128, ge=4)
    """Tokens per packed sequence; the model predicts seq_len - 1 targets per sequence."""
    counting_corpus: Optional[str] = None
    """Where token_freq's counts (and so the frequency bins) come from: a corpus in `corpus`'s forms (an
    `hf:` one with default options), tokenized whole. None: the training split of `corpus`. For scoring
    checkpoints trained elsewhere, name (a sample of) their pretraining data."""

    @field_validator("corpus", "counting_corpus")
    @classmethod
    def _absolute_corpus(cls, corpus: Optional[str]) -> Optional[str]:
        if corpus is None:
            return None
        if corpus.startswith("hf:"):  # hf:./dir is a local dataset dir, hf:org/name a hub dataset
            return "hf:" + _local_dir_or_hub_id(corpus[3:])
        return _absolute_local_path(corpus)


class ArchitectureConfig(SpecSection):
    """A model named in `model.configs`: a Hugging Face config (its architecture and shape, never its
    weights), with fields replaced. The vocabulary size and token ids always come from the sweep's tokenizer."""
    hf: str = Field(min_length=1)
    """A hub id (`EleutherAI/pythia-14m`) or a local dir holding a config.json (a path: `./dir`, `/dir`, `~/dir`)."""
    overrides: dict[str, Any] = {}
    """Config fields to replace, by their transformers names (e.g. `num_hidden_layers: 4`)."""

    @field_validator("hf")
    @classmethod
    def _local_dir_or_hub_id(cls, hf: str) -> str:
        return _local_dir_or_hub_id(hf)


class ModelConfig(SpecSection):
    """The model family of the presets, extra named configs, and model-wide settings."""
    family: Literal["llama", "qwen2"] = "llama"
    """transformers architecture for the CPU presets; GPU presets carry their own family."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Attention dropout (the paper trains without). `grid.dropout` makes it an axis."""
    configs: dict[str, ArchitectureConfig] = {}
    """Models by name, for `grid.scale` beside the presets: `{name: {hf: ..., overrides: {...}}}`."""

    @field_validator("configs")
    @classmethod
    def _names(cls, configs: dict) -> dict:
        for name in configs:
            if name in PRESETS:
                raise PydanticCustomError("config_name", "{name} is a preset's name; name the config otherwise",
                                          {"name": repr(name)})
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise PydanticCustomError("config_name", "{name}: a config's name goes into trial ids; use "
                                          "letters, digits, '.', '_', '-'", {"name": repr(name)})
        return configs


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # a name that goes into trial ids and paths: no '/', never '..'


class CheckpointModel(SpecSection):
    """A model trained elsewhere, scored at some of its checkpoints (`search: checkpoints`)."""
    hf: str = Field(min_length=1)
    """A hub id (`EleutherAI/pythia-70m-deduped`) or a local dir (a path: `./dir`, `/dir`) whose subdirs are
    the revisions, each a `save_pretrained` dir."""
    revisions: list[Annotated[str, Field(pattern=f"^{_NAME}$")]] = Field(min_length=1)
    """Hub branches or tags (Pythia's `step1000`), or the local dir's subdirs. The tokenizer is the first
    revision's; every revision must share it."""
    steps: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Training step of a revision whose name holds none (`main: 143000`); else the name's last number."""

    @field_validator("hf")
    @classmethod
    def _local_dir_or_hub_id(cls, hf: str) -> str:
        return _local_dir_or_hub_id(hf)

    def problems(self, where: str) -> list[str]:
        """Why the revisions do not each name one step (`where`: this entry's field path)."""
        problems = [f"{where}.steps.{name}: not in revisions {self.revisions!r}" for name in self.steps
                    if name not in self.revisions]
        if len(set(self.revisions)) != len(self.revisions):
            problems.append(f"{where}.revisions: duplicate values in {self.revisions!r}")
        steps = {}
        for i, revision in enumerate(self.revisions):
            step = self.step_of(revision)
            if step is None:
                problems.append(f"{where}.revisions[{i}]: {revision!r} names no step; give it in "
                                f"{where}.steps: {{{revision}: N}}")
            elif step in steps:
                problems.append(f"{where}.revisions[{i}]: {revision!r} is step {step}, as {steps[step]!r} is; "
                                "score each step once")
            else:
                steps[step] = revision
        return problems

    def step_of(self, revision: str) -> Optional[int]:
        """The revision's training step: given in `steps`, else the number its name ends in after `step`,
        `checkpoint`, `ckpt` or `iter` (step1000, checkpoint-50, global_step3000, iter_0001000), else None
        (a commit hash's digits are not a step)."""
        if revision in self.steps:
            return self.steps[revision]
        named = re.search(r"(?:step|checkpoint|ckpt|iter)[-_]?(\d+)$", revision, re.IGNORECASE)
        return int(named.group(1)) if named else None


class CheckpointsConfig(SpecSection):
    """`search: checkpoints`: score models trained elsewhere; each (model, revision) is one trial that
    only evaluates, on the corpus's fixed eval sets tokenized with the model's own tokenizer."""
    models: dict[str, CheckpointModel] = Field(min_length=1)
    """Models by name (the name is their trial_id in every table): `{name: {hf, revisions, steps}}`."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and forward pass dtype (losses are always computed in float32)."""

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict) -> dict:
        for name in models:
            if not re.fullmatch(_NAME, name):
                raise PydanticCustomError("model_name", "{name}: a model's name is its trial_id; use letters, "
                                          "digits, '.', '_', '-'", {"name": repr(name)})
        return models

    @model_validator(mode="after")
    def _check(self) -> "CheckpointsConfig":
        problems = [p for name, entry in self.models.items() for p in entry.problems(f"checkpoints.models.{name}")]
        if problems:
            raise SpecError(problems)
        return self


class TrainConfig(SpecSection):
    """The recipe every trial trains with (a trial's point replaces its searched or grid fields)."""
    steps: int = Field(300, ge=1)
    """Optimizer steps per trial."""
    batch_size: int = Field(16, ge=1)
    """Sequences per step, summed over all workers of a trial."""
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate."""
    warmup_steps: int = Field(30, ge=0)
    """Linear warmup from lr 0 at the first step to `lr` at step `warmup_steps` (transformers' schedule)."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """Cosine decays from `lr` toward lr * min_lr_ratio, reached just after the last step (0: to zero;
    1: constant after warmup)."""
    beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW's first-moment decay."""
    beta2: float = Field(0.999, ge=0, lt=1)
    """AdamW's second-moment decay."""
    eps: float = Field(1e-8, gt=0)
    """AdamW's epsilon."""
    grad_clip: float = Field(1.0, ge=0)
    """Max global gradient norm; 0 disables clipping."""
    decay_policy: DecayPolicy = "all_matrices"
    """Which parameters decay: every matrix incl. embeddings, all but embeddings, or embeddings only.
    Norms and biases never decay. `grid.decay_policy` makes it an axis."""
    freq_decay_alpha: float = Field(0.0, ge=-4, le=4)
    """Frequency-aware decay: row i of the input and output embeddings decays with
    lambda * (count_i / median count) ** alpha (training counts, clipped to >= 1; median over the
    types seen in training). 0: plain AdamW; > 0 spares rare rows. `grid.freq_decay_alpha`: an axis."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Label smoothing of the training loss (evaluation always scores plain cross-entropy).
    `grid.label_smoothing` makes it an axis."""
    checkpoint_every: int = Field(100, ge=1)
    """Steps between checkpoints (the last step always checkpoints)."""
    keep_checkpoints: Union[Literal["all"], Annotated[int, Field(ge=1)]] = 2
    """Checkpoints a trial keeps, newest first (`all`: every one, e.g. to `raysweep export` each step)."""
    compile: bool = False
    """torch.compile each decoder block (inductor; on CPU it needs a C++ compiler). Steps get faster;
    the first worker group on a node compiles for tens of seconds, later ones reuse inductor's
    on-disk cache (seconds), and eval compiles its own graph once per group."""
    activation_checkpointing: Optional[int] = Field(None, ge=1)
    """Recompute every n-th decoder block's activations in the backward instead of keeping them
    (1: every block): memory for time, for the large presets' long sequences. None: off."""


class EvalConfig(SpecSection):
    """When and on what each trial writes its per-token evaluation shards."""
    every: Optional[int] = Field(100, ge=1)
    """Steps between per-token evaluations (the last step always evaluates); null: none but `at`,
    `log_spaced` and the last."""
    at: list[Annotated[int, Field(ge=0)]] = []
    """Steps that evaluate besides (0: the initialization, before any update, where learning speed is anchored)."""
    log_spaced: Optional[int] = Field(None, ge=2)
    """Up to this many steps spaced evenly in log between 1 and train.steps evaluate besides (rounding to
    whole steps merges the closest early ones), and step 0."""
    n_train_sequences: int = Field(64, ge=1)
    """Training sequences in the fixed train-sample eval set (what the paper measures)."""
    n_heldout_sequences: int = Field(64, ge=0)
    """Held-out sequences in the fixed held-out eval set."""
    batch_size: int = Field(16, ge=1)
    """Sequences per eval forward pass on each worker."""


class GridConfig(SpecSection):
    """The axes of `search: grid`: every combination is a trial."""
    weight_decay: list[float] = Field([0.0, 1.0], min_length=1)
    """AdamW decoupled weight decay values (lambda)."""
    scale: list[str] = Field(["tiny"], min_length=1)
    """Models: presets (see `raysweep.models.presets.PRESETS`) or names in `model.configs`."""
    seed: list[Annotated[int, Field(ge=0)]] = Field([0], min_length=1)
    """Seeds of model init and data order."""
    # The regularizer axes: left out, the single value of the train/model field of the same name.
    decay_policy: Optional[list[DecayPolicy]] = Field(None, min_length=1)
    """Decay policies to compare (train.decay_policy as an axis)."""
    freq_decay_alpha: Optional[list[Annotated[float, Field(ge=-4, le=4)]]] = Field(None, min_length=1)
    """Frequency-aware decay exponents (train.freq_decay_alpha as an axis)."""
    label_smoothing: Optional[list[Annotated[float, Field(ge=0, lt=1)]]] = Field(None, min_length=1)
    """Label smoothing values (train.label_smoothing as an axis)."""
    dropout: Optional[list[Annotated[float, Field(ge=0, lt=1)]]] = Field(None, min_length=1)
    """Dropout values (model.dropout as an axis)."""
    vocab_size: Optional[list[Annotated[int, Field(ge=260)]]] = Field(None, min_length=1)
    """BPE vocabulary sizes (data.tokenizer.vocab_size as an axis): one tokenizer and data dir
    per size, every other grid axis crossed with each."""

    @model_validator(mode="after")
    def _check(self) -> "GridConfig":
        problems = [f"grid.weight_decay[{i}]: must be a finite number >= 0, got {v!r}"
                    for i, v in enumerate(self.weight_decay) if not 0 <= v < math.inf]
        for field in ("weight_decay", "scale", "seed", "vocab_size", *REGULARIZER_AXES):
            values = getattr(self, field) or []
            if len(set(values)) != len(values):
                problems.append(f"grid.{field}: duplicate values in {values!r}")
        if problems:
            raise SpecError(problems)
        return self


def _bound_problem(name: str, value: float) -> Optional[str]:
    """Why `value` is not a valid value of the searched field `name` (None if it is), by the field's
    own constraints: a searched value must be one the spec would accept as a single value."""
    if name == "weight_decay":  # a grid list, checked by GridConfig
        return None if 0 <= value < math.inf else f"must be a finite number >= 0, got {value!r}"
    model = ModelConfig if name == "dropout" else TrainConfig
    try:
        TypeAdapter(Annotated[(float, *model.model_fields[name].metadata)]).validate_python(value)
    except ValidationError as exc:
        return describe_error(exc.errors()[0])
    return None


class SearchRange(SpecSection):
    low: float
    """The smallest value searched."""
    high: float
    """The largest value searched."""
    log: bool = False
    """Sample log-uniformly (needs low > 0), as for a learning rate."""


class OptunaConfig(SpecSection):
    """`search: optuna`: Optuna's sampler, through Ray Tune, picks each trial's point in `space`.
    Scale and seed take the grid's single value, and so does weight decay when not searched; every
    other field not in `space` keeps its single train/model value."""

    num_samples: int = Field(12, ge=1)
    """Trials to run."""
    objectives: list[Objective] = Field(["train_average_loss", "train_balanced_loss"], min_length=1)
    """Minimized together (two or more: multi-objective, and the catalog keeps the Pareto front);
    each names its eval split: `train` (the paper's train sample) or `heldout`."""
    space: dict[SearchParam, SearchRange] = {}
    """Field -> {low, high, log}: weight_decay, lr, freq_decay_alpha, label_smoothing, dropout."""
    n_startup_trials: int = Field(4, ge=1)
    """Random points before the TPE sampler starts modelling the results."""
    seed: int = 0
    """Seed of the sampler (the trials' own seed is grid.seed)."""
    points_to_evaluate: list[dict[SearchParam, float]] = []
    """Points run first, in order, before the sampler picks any (Ray Tune's `points_to_evaluate`): e.g.
    a known-good setting. Each gives a value for every field of `space`."""
    scheduler: Optional[Literal["asha"]] = None
    """`asha`: Ray Tune's ASHAScheduler stops a trial whose first objective, at an eval step, is in the
    worst 1 - 1/reduction_factor of the trials that reached that step (recorded as PRUNED, left out of
    the catalog's Pareto front; Ray's OptunaSearch tells the sampler the objectives it stopped at, as if
    final). None: every trial trains to the end."""
    grace_period: Optional[int] = Field(None, ge=1)
    """Steps every trial trains before ASHA may stop it (None: the first eval step after step 0)."""
    reduction_factor: float = Field(4.0, gt=1)
    """ASHA's rungs are at grace_period x reduction_factor^k steps; at each, it keeps the best
    1/reduction_factor (Ray's default, 4)."""

    @model_validator(mode="after")
    def _check(self) -> "OptunaConfig":
        problems = []
        for i, point in enumerate(self.points_to_evaluate):
            missing = [name for name in self.space if name not in point]
            if missing:
                problems.append(f"optuna.points_to_evaluate[{i}]: no {', '.join(missing)}; give every field of "
                                "optuna.space")
            for name, value in point.items():
                where, span = f"optuna.points_to_evaluate[{i}].{name}", self.space.get(name)
                if span is None:
                    problems.append(f"{where}: not a field of optuna.space; search it there or drop it")
                elif not span.low <= value <= span.high:
                    problems.append(f"{where}: {value!r} is outside optuna.space.{name} "
                                    f"[{span.low!r}, {span.high!r}]")
        if len(set(self.objectives)) != len(self.objectives):
            problems.append(f"optuna.objectives: duplicate values in {self.objectives!r}")
        for name, span in self.space.items():
            where = f"optuna.space.{name}"
            if not span.low < span.high:
                problems.append(f"{where}: low ({span.low!r}) must be < high ({span.high!r})")
            for end in ("low", "high"):
                reason = _bound_problem(name, getattr(span, end))
                if reason:
                    problems.append(f"{where}.{end}: {reason}")
            if span.log and span.low <= 0:
                problems.append(f"{where}: log needs low > 0, got {span.low!r}; raise low or set log: false")
        if problems:
            raise SpecError(problems)
        return self


class ResourcesConfig(SpecSection):
    """What each trial takes from the Ray cluster."""
    workers_per_trial: int = Field(1, ge=1)
    """Ray Train workers per trial. 1: a plain module on CPU (as many trials at once as the cores
    allow); 2 or more: FSDP2 ranks, one unit per decoder block (on GPUs, one GPU each)."""
    use_gpu: bool = False
    """One GPU per worker, NCCL and bf16 mixed precision; CPU uses gloo and float32."""
    cpus_per_worker: int = Field(1, ge=1)
    """CPUs reserved per worker; also its torch thread count."""
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    """None: as many as the cluster's scarcest resource allows."""


class FailureConfig(SpecSection):
    """How often a worker group, a trial's controller and a trial's driver are restarted before it fails."""
    max_failures: int = Field(3, ge=0)
    """Worker-group restarts per trial (Ray Train), each from the last checkpoint."""
    max_preemption_failures: int = Field(10, ge=-1)
    """Restarts after a node is drained for preemption (spot), counted apart from `max_failures`
    (Ray Train's `FailureConfig.max_preemption_failures`; -1: unlimited)."""
    controller_failure_limit: int = Field(3, ge=0)
    """Restarts of a trial's Train controller. Finite, so a deterministic bug fails the trial
    instead of retrying forever (Ray's default, -1, never gives up)."""
    trial_max_failures: int = Field(1, ge=0)
    """Trial-driver reruns (Ray Tune); the rerun finds its Train run by name and resumes."""
    inject_crash_at_step: Optional[int] = Field(None, ge=1)
    """Testing aid: rank 0 of each trial dies once when it reaches this step (None: never)."""


class CostConfig(SpecSection):
    """What `raysweep plan` prices the sweep at; nothing else reads it."""
    gpu: Optional[str] = None
    """The GPU each worker gets (with resources.use_gpu), by its name in raysweep.train.devices.GPUS
    (`H100-80GB`, `A100-80GB`, ...): the plan checks each worker's peak memory against it and turns FLOPs
    into GPU-hours at its datasheet bf16 peak. None: no fit check, GPU-hours or cost."""
    usd_per_gpu_hour: Optional[float] = Field(None, ge=0)
    """Price of one `gpu` for one hour, USD. None: GPU-hours without a cost."""
    default_mfu: float = Field(0.35, gt=0, le=1)
    """Model FLOPs utilization assumed for a model no earlier trial under `storage` measured on this kind
    of device (the plan uses the newest measured one's)."""

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, gpu: Optional[str]) -> Optional[str]:
        if gpu is not None and gpu not in GPUS:
            raise PydanticCustomError("gpu_name", "unknown GPU; valid: {valid}", {"valid": ", ".join(GPUS)})
        return gpu

    @model_validator(mode="after")
    def _check(self) -> "CostConfig":
        if self.usd_per_gpu_hour is not None and self.gpu is None:
            raise SpecError(["cost.usd_per_gpu_hour: a price per hour of cost.gpu, which is not set; name the "
                             "GPU, e.g. cost.gpu: H100-80GB"])
        return self


class SweepSpec(SpecSection):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Sweep name; the sweep lives in `<storage>/<name>/`."""
    storage: str = Field(default_factory=lambda: os.environ.get(STORAGE_ENV, "runs"), validate_default=True)
    """Root of all sweeps: a local or NFS path, or `s3://BUCKET/PREFIX` / `gs://BUCKET/PREFIX`. A
    relative path resolves against the working dir when the spec is loaded, so Ray workers (whose
    working dir differs) write to the same place. Left out: $RAYSWEEP_STORAGE (what a cluster's
    nodes name as shared storage), else `runs`."""
    search: Literal["grid", "optuna", "checkpoints"] = "grid"
    """`grid`: every point of `grid`; `optuna`: `optuna.num_samples` points chosen by Optuna; `checkpoints`:
    no training, each checkpoint of `checkpoints.models` scored."""
    optuna: OptunaConfig = OptunaConfig()
    checkpoints: Optional[CheckpointsConfig] = None
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    grid: GridConfig = GridConfig()
    resources: ResourcesConfig = ResourcesConfig()
    failure: FailureConfig = FailureConfig()
    cost: CostConfig = CostConfig()
    """What `raysweep plan` (and `sweep --dry-run`) prices the sweep at."""

    @field_validator("storage")
    @classmethod
    def _canonical_storage(cls, storage: str) -> str:
        try:
            return check_location(storage)
        except StorageError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        problems = []
        workers = self.resources.workers_per_trial
        if self.train.batch_size % workers:
            problems.append(f"train.batch_size: {self.train.batch_size} is not divisible by "
                            f"resources.workers_per_trial={workers}; e.g. --set train.batch_size="
                            f"{max(workers, self.train.batch_size // workers * workers)}")
        problems += [f"eval.at[{i}]: {s} is past train.steps={self.train.steps}"
                     for i, s in enumerate(self.eval.at) if s > self.train.steps]
        if self.train.warmup_steps >= self.train.steps:
            problems.append(f"train.warmup_steps: {self.train.warmup_steps} must be < train.steps="
                            f"{self.train.steps}")
        known = [*PRESETS, *self.model.configs]
        problems += [f"grid.scale[{i}]: unknown preset {v!r}; valid: {', '.join(known)} (or a name in model.configs)"
                     for i, v in enumerate(self.grid.scale) if v not in known]
        for i, scale in enumerate(self.grid.scale):
            if scale not in PRESETS:  # a config's context is known once transformers reads it (preflight)
                continue
            context = PRESETS[scale].max_position_embeddings
            if self.data.seq_len > context:
                problems.append(f"data.seq_len: {self.data.seq_len} exceeds the context of "
                                f"grid.scale[{i}]={scale!r} ({context}); use --set data.seq_len={context}")
        tok = self.data.tokenizer
        if self.data.hub != HubDatasetConfig() and not self.data.corpus.startswith("hf:"):
            problems.append("data.hub: read only with an hf: corpus (data.corpus: hf:<name or dir>); drop it")
        if tok.kind == "file" and not tok.path:
            problems.append("data.tokenizer.path: required when data.tokenizer.kind is 'file'")
        if (tok.kind == "hf") != bool(tok.name):
            problems.append("data.tokenizer.name: " + ("required when data.tokenizer.kind is 'hf'" if tok.kind == "hf"
                                                       else "read only with data.tokenizer.kind 'hf'"))
        if tok.revision is not None and (tok.kind != "hf" or is_local_path(tok.name or "/")):
            problems.append("data.tokenizer.revision: read only with kind 'hf' and a hub id as name; drop it")
        if self.data.counting_corpus is not None and self._uses_row_decay():
            problems.append("data.counting_corpus: frequency-aware decay (freq_decay_alpha) scales each row by the "
                            "counts token_freq holds, which would be the counting corpus's; drop one of the two")
        if tok.kind == "hf" and tok.path:
            problems.append("data.tokenizer.path: read only with data.tokenizer.kind 'file'; kind 'hf' takes name")
        if tok.kind == "bpe" and tok.path:
            problems.append("data.tokenizer.path: read only with data.tokenizer.kind 'file' (kind 'bpe' trains "
                            "its own); set kind: file, or drop path")
        for axis, (section, field) in REGULARIZER_AXES.items():
            single = getattr(getattr(self, section), field)
            default = type(getattr(self, section)).model_fields[field].default
            # A non-default single value beside the axis is a contradiction, not an override.
            # (Not model_fields_set: the spec travels to workers and spec.yaml as a full dump.)
            if getattr(self.grid, axis) is not None and single != default:
                problems.append(f"grid.{axis}: {section}.{field} is set too ({single!r}); keep one of "
                                f"them (the grid's list, or {section}.{field} for a single value)")
        if self.grid.vocab_size is not None:
            if tok.kind != "bpe":
                problems.append("grid.vocab_size: needs data.tokenizer.kind 'bpe' (a tokenizer file has "
                                "one fixed vocabulary)")
            elif tok.vocab_size != TokenizerConfig.model_fields["vocab_size"].default:
                problems.append(f"grid.vocab_size: data.tokenizer.vocab_size is set too ({tok.vocab_size}); "
                                "keep one of them")
        problems += self._search_problems()
        problems += self._checkpoint_problems()
        if self.cost.gpu is not None and not self.resources.use_gpu:
            problems.append(f"cost.gpu: names a GPU ({self.cost.gpu}) but resources.use_gpu is false; "
                            "--set resources.use_gpu=true, or drop cost.gpu")
        policies = self.grid.decay_policy or [self.train.decay_policy]
        alphas = self.grid.freq_decay_alpha or [self.train.freq_decay_alpha]
        if "freq_decay_alpha" in self.optuna.space:
            alphas = [self.optuna.space["freq_decay_alpha"].low, self.optuna.space["freq_decay_alpha"].high]
        if "no_embeddings" in policies and any(alphas):
            field = ("optuna.space.freq_decay_alpha" if "freq_decay_alpha" in self.optuna.space
                     else "grid.freq_decay_alpha" if self.grid.freq_decay_alpha else "train.freq_decay_alpha")
            problems.append(f"{field}: acts on the embedding rows, which decay policy "
                            "'no_embeddings' never decays; drop one of the two from the spec")
        if problems:
            raise SpecError(problems)
        return self

    def _uses_row_decay(self) -> bool:
        alphas = self.grid.freq_decay_alpha or [self.train.freq_decay_alpha]
        return any(alphas) or "freq_decay_alpha" in self.optuna.space

    def _checkpoint_problems(self) -> list[str]:
        if self.search != "checkpoints":
            return ["checkpoints: is set but search is not 'checkpoints'; add `search: checkpoints` or drop "
                    "the checkpoints section"] if self.checkpoints is not None else []
        if self.checkpoints is None:
            return ["checkpoints: required with search: checkpoints ({models: {name: {hf, revisions}}})"]
        # What trains a model means nothing here; a spec that sets it expects something that will not happen.
        problems = [f"{section}: not read with search: checkpoints (nothing trains); drop it"
                    for section, default in (("grid", GridConfig()), ("optuna", OptunaConfig()),
                                             ("model", ModelConfig()))
                    if getattr(self, section) != default]
        if self.data.tokenizer != TokenizerConfig():
            problems.append("data.tokenizer: each checkpoint is scored with its model's own tokenizer; drop "
                            "data.tokenizer")
        if self.resources.workers_per_trial != 1:
            problems.append("resources.workers_per_trial: a checkpoint is scored by one worker (one GPU or "
                            "CPU); set it to 1")
        return problems

    def _search_problems(self) -> list[str]:
        if self.search == "checkpoints":
            return []
        if self.search == "grid":
            if self.optuna != OptunaConfig():
                return ["optuna: is set but search is 'grid'; add `search: optuna` or drop the optuna section"]
            return []
        problems = []
        grace, rungs = self.optuna.grace_period, self.pruning_steps()
        if self.optuna.scheduler and grace is not None and rungs and grace > rungs[-1]:
            problems.append(f"optuna.grace_period: {grace} is past the last eval step before the end ({rungs[-1]}), "
                            "so ASHA could never stop a trial; lower it or evaluate later")
        if len(self.optuna.points_to_evaluate) > self.optuna.num_samples:
            problems.append(f"optuna.points_to_evaluate: {len(self.optuna.points_to_evaluate)} points but "
                            f"optuna.num_samples={self.optuna.num_samples}; the extra ones would never run")
        if self.optuna.scheduler and not rungs:
            problems.append("optuna.scheduler: asha acts on the objectives of eval steps before the last, and "
                            f"there are none; set eval.every below train.steps={self.train.steps}")
        heldout = [o for o in self.optuna.objectives if o.startswith("heldout_")]
        if heldout and self.eval.n_heldout_sequences == 0:
            problems.append(f"optuna.objectives: {heldout[0]} needs eval.n_heldout_sequences > 0; evaluate "
                            "held-out sequences or use train_ objectives")
        if not self.optuna.space:
            problems.append("optuna.space: empty; give at least one field to search, e.g. "
                            "weight_decay: {low: 0.0, high: 1.0}")
        fixed = ["scale", "seed"] + ([] if "weight_decay" in self.optuna.space else ["weight_decay"])
        for axis in fixed:
            values = getattr(self.grid, axis)
            if len(values) != 1:
                problems.append(f"grid.{axis}: search: optuna runs one value of it, got {values!r}; give one "
                                "value (one search per value)" + (", or search it in optuna.space"
                                                                  if axis == "weight_decay" else ""))
        for axis in (*REGULARIZER_AXES, "vocab_size"):
            if getattr(self.grid, axis) is not None:
                problems.append(f"grid.{axis}: axes are for search: grid; with search: optuna give a single "
                                "value in its train/model/data field, or search it in optuna.space")
        return problems

    @property
    def layout(self) -> SweepLayout:
        """Every path inside this sweep's directory, `<storage>/<name>/`."""
        return SweepLayout.of(self.storage, self.name)

    def eval_steps(self) -> list[int]:
        """Steps whose model every trial scores per token (0 = before the first update), the last included."""
        steps, cfg = self.train.steps, self.eval
        chosen = set(range(cfg.every, steps + 1, cfg.every)) if cfg.every else set()
        if cfg.log_spaced:
            chosen |= {0} | {round(steps ** (i / (cfg.log_spaced - 1))) for i in range(cfg.log_spaced)}
        return sorted(chosen | set(cfg.at) | {steps})

    def pruning_steps(self) -> list[int]:
        """Eval steps at which a search trial reports its objectives, so a scheduler can stop it: after the
        first update and before the last (the last one's come from the finished trial's driver)."""
        return [step for step in self.eval_steps() if 0 < step < self.train.steps]

    def checkpoint_steps(self) -> list[int]:
        """Steps whose model and optimizer every trial checkpoints, the last included."""
        return sorted(set(range(self.train.checkpoint_every, self.train.steps + 1, self.train.checkpoint_every))
                      | {self.train.steps})


class TrialTrainConfig(TrainConfig):
    """One trial's train settings: the spec's `train`, with the trial's point in place (its lambda,
    regularizer axes and a searched lr). The worker builds its optimizer from this alone."""

    weight_decay: float = Field(0.0, ge=0)
    """AdamW's decoupled weight decay (lambda), the variable under study."""

    @property
    def uses_row_decay(self) -> bool:
        """Frequency-aware decay is on: the embedding rows leave AdamW's own decay and decay each by
        its own strength. Needs a nonzero lambda and alpha, and a policy that decays the embeddings."""
        return bool(self.weight_decay and self.freq_decay_alpha and self.decay_policy != "no_embeddings")
