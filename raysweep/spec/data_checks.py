"""Spec checks that need the prepared data (its token counts and eval sets): run after data prep,
before any trial starts. Each raises SpecError naming the field, as the schema's own checks do."""

from __future__ import annotations

from raysweep.data.frequency import max_row_decay_factor, read_token_counts
from raysweep.spec.errors import SpecError
from raysweep.spec.schema import SweepSpec
from raysweep.trials.source import trial_source


def check_spec_against_data(spec: SweepSpec, datas: dict) -> None:
    """`datas`: the PreparedData of each point of the vocab axis."""
    check_row_decay(spec, datas)
    check_search_split(spec, datas)


def check_row_decay(spec: SweepSpec, datas: dict) -> None:
    """Frequency-aware decay must shrink every embedding row: lr x lambda x (count / median) **
    alpha >= 1 for the most frequent type would flip its row each step."""
    points = [p for p in trial_source(spec).bounding_points() if p.train_config(spec.train).uses_row_decay]
    if not points:
        return
    searched = "freq_decay_alpha" in spec.optuna.space
    field = ("optuna.space.freq_decay_alpha (at a corner of optuna.space)" if searched else
             "grid.freq_decay_alpha" if spec.grid.freq_decay_alpha else "train.freq_decay_alpha")
    counts = {}  # one read per data dir
    for point in points:
        data = datas[point.data_slot]
        if data.data_key not in counts:
            counts[data.data_key] = read_token_counts(data.data_dir, data.vocab_size)
        lr = point.peak_lr(spec.train)
        factor = max_row_decay_factor(counts[data.data_key], point.freq_decay_alpha, lr, point.weight_decay)
        if factor >= 1:
            raise SpecError([f"{field}: alpha {point.freq_decay_alpha!r} with weight decay "
                             f"{point.weight_decay!r} and lr {lr!r} decays the most frequent "
                             f"type's embedding rows by {factor:.3g} per step (>= 1 flips them); lower alpha, "
                             "the weight decay or the lr"])


def check_search_split(spec: SweepSpec, datas: dict) -> None:
    """The split a search scores must have eval sequences (a small corpus may pack no held-out one)."""
    objectives = spec.optuna.objectives if spec.search == "optuna" else []
    for objective in objectives:
        split = objective.split("_", 1)[0]
        if not all(d.n_eval_sequences[split] for d in datas.values()):
            raise SpecError([f"optuna.objectives: the data has no {split!r} eval sequences to score {objective}; "
                             "use a larger corpus or data.heldout_fraction, or objectives of the other split"])
