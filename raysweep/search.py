"""`search: optuna`: Optuna's sampler, through Ray Tune's OptunaSearch, picks each trial's point.

A grid sweep knows its trials from the spec; a search learns them as it goes, so each trial's
driver records its point as `train/<trial_id>/point.json` before training, and `sweep_points`
reads those back for the trials table, verify and the exit status. Sampled values are rounded to
`SIGNIFICANT_DIGITS` (and kept inside the space) before they become a trial: the point that ran,
its id and the row in `trials` are then one and the same. Two samples that round alike are one
trial id: run one after the other, the second finds the first's results; run at the same time (a
1e-4 coincidence), both would train into the same dir, with identical results.
"""

from __future__ import annotations

import json

from raysweep.config import SweepSpec, TrialPoint, grid_points, regularizer_axes
from raysweep.storage import atomic_write_text, ensure_dir
from raysweep.train.checkpoint import trial_run_dir

SIGNIFICANT_DIGITS = 4
POINT_FILE = "point.json"


def is_search(spec: SweepSpec) -> bool:
    return spec.search == "optuna"


def fixed_values(spec: SweepSpec) -> dict:
    """Every TrialPoint field a search does not vary: the grid's single values, the spec's fields."""
    values = {"scale": spec.grid.scale[0], "seed": spec.grid.seed[0], "weight_decay": spec.grid.weight_decay[0]}
    values |= {axis: single for axis, (single,) in regularizer_axes(spec).items()}  # a search refuses axes
    return {name: value for name, value in values.items() if name not in spec.optuna.space}


def param_space(spec: SweepSpec) -> dict:
    """Tune's param_space for the search: a distribution per searched field, constants otherwise."""
    from ray import tune

    space = {name: (tune.loguniform if span.log else tune.uniform)(span.low, span.high)
             for name, span in spec.optuna.space.items()}
    return space | fixed_values(spec)


def _rounded(value: float, low: float, high: float) -> float:
    """`value` to SIGNIFICANT_DIGITS, clamped to [low, high]: rounding must not leave the space
    (0.999991 in a dropout space ending at 0.99999 would round to 1.0)."""
    return min(high, max(low, float(f"{value:.{SIGNIFICANT_DIGITS}g}")))


def point_from_config(spec: SweepSpec, config: dict) -> TrialPoint:
    """The trial a Tune config stands for (searched values rounded, see the module docstring)."""
    values = {k: v for k, v in config.items() if k in TrialPoint.model_fields}
    for name, span in spec.optuna.space.items():
        if name in values:
            values[name] = _rounded(values[name], span.low, span.high)
    return TrialPoint.model_validate(values)


def searcher(spec: SweepSpec):
    """Ray Tune's OptunaSearch over the spec's objectives, all minimized, with a seeded TPE sampler."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    objectives = spec.optuna.objectives
    sampler = optuna.samplers.TPESampler(seed=spec.optuna.seed, n_startup_trials=spec.optuna.n_startup_trials)
    if len(objectives) == 1:
        return OptunaSearch(metric=objectives[0], mode="min", sampler=sampler)
    return OptunaSearch(metric=list(objectives), mode=["min"] * len(objectives), sampler=sampler)


def record_point(spec: SweepSpec, point: TrialPoint) -> None:
    run_dir = trial_run_dir(spec.sweep_dir, point.trial_id)
    ensure_dir(run_dir)
    atomic_write_text(run_dir / POINT_FILE, point.model_dump_json())


def sweep_points(spec: SweepSpec) -> list[TrialPoint]:
    """Every trial of the sweep: the grid's points, or the points a search has started so far."""
    if not is_search(spec):
        return grid_points(spec)
    files = sorted((spec.sweep_dir / "train").glob(f"*/{POINT_FILE}"))
    return [TrialPoint.model_validate(json.loads(f.read_text())) for f in files]


def corner_points(spec: SweepSpec) -> list[TrialPoint]:
    """The corners of the search box: where a bound on the product of searched fields is reached
    (each field moves the row-decay factor monotonically, so its extremes are at corners)."""
    import itertools

    names = list(spec.optuna.space)
    corners = itertools.product(*((spec.optuna.space[n].low, spec.optuna.space[n].high) for n in names))
    return [TrialPoint.model_validate(fixed_values(spec) | dict(zip(names, values))) for values in corners]
