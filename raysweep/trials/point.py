"""One trial's point: its weight decay, scale, seed and regularizer settings, and the id named after them."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from raysweep.spec.schema import (REGULARIZER_AXES, DataConfig, DecayPolicy, SweepSpec, TrainConfig,
                                  TrialTrainConfig, SpecSection)


class TrialPoint(SpecSection):
    """One point of the grid; its id is a pure function of the point, so retries find their files.
    The regularizer fields default to plain AdamW."""

    weight_decay: float = Field(ge=0)
    scale: str
    seed: int
    decay_policy: DecayPolicy = "all_matrices"
    freq_decay_alpha: float = 0.0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    vocab_size: Optional[int] = None
    """The BPE size asked of the grid's vocab axis; None: the spec's tokenizer (no axis)."""
    lr: Optional[float] = Field(None, gt=0)
    """A searched peak learning rate; None: train.lr."""

    def _regularizer_parts(self) -> list[tuple[str, str]]:
        """(id suffix, description) of each regularizer setting that is not plain AdamW's."""
        parts = []
        if self.decay_policy != "all_matrices":
            parts.append((self.decay_policy, self.decay_policy))
        for field, short in (("freq_decay_alpha", "fa"), ("label_smoothing", "ls"), ("dropout", "do")):
            if getattr(self, field):
                parts.append((f"{short}{getattr(self, field)!r}", f"{field}={getattr(self, field)!r}"))
        return parts

    @property
    def trial_id(self) -> str:
        vocab = f"-v{self.vocab_size}" if self.vocab_size is not None else ""
        suffix = "".join(f"-{short}" for short, _ in self._regularizer_parts())
        lr = f"-lr{self.lr!r}" if self.lr is not None else ""
        return f"{self.scale}-wd{self.weight_decay!r}-s{self.seed}{vocab}{suffix}{lr}"

    @property
    def table_id(self) -> str:
        """The trial_id its shards and its trials row carry: its own."""
        return self.trial_id

    @property
    def data_slot(self) -> Optional[int]:
        """Its data dir among the sweep's (TrialSource.data_configs): its point of the vocab axis."""
        return self.vocab_size

    @property
    def regularizer(self) -> str:
        """Everything but lambda that regularizes the trial, e.g. `adamw` or
        `adamw no_embeddings label_smoothing=0.1`: trials pair with their lambda = 0 baseline on it."""
        return " ".join(["adamw", *(text for _, text in self._regularizer_parts())])

    def peak_lr(self, train: TrainConfig) -> float:
        """The trial's peak learning rate: a searched lr, else the spec's."""
        return self.lr if self.lr is not None else train.lr

    def train_config(self, train: TrainConfig) -> TrialTrainConfig:
        """The spec's train settings with this point in place: what the trial's optimizer is built from."""
        return TrialTrainConfig(**(train.model_dump() | {
            "weight_decay": self.weight_decay, "lr": self.peak_lr(train), "decay_policy": self.decay_policy,
            "freq_decay_alpha": self.freq_decay_alpha, "label_smoothing": self.label_smoothing}))


def regularizer_axes(spec: SweepSpec) -> dict[str, list]:
    """Each regularizer axis's values: the grid's list, or the spec's single value."""
    return {axis: getattr(spec.grid, axis) or [getattr(getattr(spec, section), field)]
            for axis, (section, field) in REGULARIZER_AXES.items()}


def vocab_axis(spec: SweepSpec) -> list[Optional[int]]:
    """The grid's BPE sizes, or [None]: the spec's one tokenizer."""
    return list(spec.grid.vocab_size) if spec.grid.vocab_size else [None]


def data_config(spec: SweepSpec, vocab_size: Optional[int]) -> DataConfig:
    """The data settings of the trials at one point of the vocab axis."""
    if vocab_size is None:
        return spec.data
    tokenizer = spec.data.tokenizer.model_copy(update={"vocab_size": vocab_size})
    return spec.data.model_copy(update={"tokenizer": tokenizer})
