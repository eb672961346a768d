"""`search: optuna`: Optuna's sampler, through Ray Tune's OptunaSearch, picks each trial's point; with
`optuna.scheduler: asha`, Ray Tune's ASHAScheduler stops the trials that fall behind at an eval step.

A grid sweep knows its trials from the spec; a search learns them as it goes, so its trials are the
points their drivers recorded (`train/<trial_id>/point.json`). Sampled values are rounded to
`SIGNIFICANT_DIGITS` (and kept inside the space) before they become a trial: the point that ran,
its id and the row in `trials` are then one and the same. Two samples that round alike are one
trial id: run one after the other, the second finds the first's results; run at the same time (a
1e-4 coincidence), both would train into the same dir, with identical results.
"""

from __future__ import annotations

import itertools
from typing import Callable

from raysweep.spec.schema import SweepSpec
from raysweep.trials.point import TrialPoint, regularizer_axes
from raysweep.trials.source import TrialSource, read_point

SIGNIFICANT_DIGITS = 4


def fixed_values(spec: SweepSpec) -> dict:
    """Every TrialPoint field a search does not vary: the grid's single values, the spec's fields."""
    values = {"scale": spec.grid.scale[0], "seed": spec.grid.seed[0], "weight_decay": spec.grid.weight_decay[0]}
    values |= {axis: single for axis, (single,) in regularizer_axes(spec).items()}  # a search refuses axes
    return {name: value for name, value in values.items() if name not in spec.optuna.space}


def _rounded(value: float, low: float, high: float) -> float:
    """`value` to SIGNIFICANT_DIGITS, clamped to [low, high]: rounding must not leave the space
    (0.999991 in a dropout space ending at 0.99999 would round to 1.0)."""
    return min(high, max(low, float(f"{value:.{SIGNIFICANT_DIGITS}g}")))


class OptunaSource(TrialSource):
    """`optuna.num_samples` trials, each reporting its objectives to Tune at every eval step (EvalObjectives)
    and once more when finished."""

    reports_objectives = True

    def mutable_prefixes(self) -> tuple[str, ...]:
        # A search continues only under its own spec: its searcher's state is restored, not rebuilt
        # (`cost` is read by `raysweep plan` alone).
        return ("cost.",)

    def param_space(self) -> dict:
        """A distribution per searched field, constants otherwise."""
        from ray import tune

        space = {name: (tune.loguniform if span.log else tune.uniform)(span.low, span.high)
                 for name, span in self.spec.optuna.space.items()}
        return space | fixed_values(self.spec)

    def tune_options(self) -> dict:
        """Ray Tune's OptunaSearch over the spec's objectives, all minimized, with a seeded TPE sampler; and
        ASHAScheduler on the first objective when the spec names it."""
        import optuna
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        settings = self.spec.optuna
        sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.n_startup_trials)
        objectives = list(settings.objectives)
        metric, mode = (objectives[0], "min") if len(objectives) == 1 else (objectives, ["min"] * len(objectives))
        searcher = OptunaSearch(metric=metric, mode=mode, sampler=sampler,
                                points_to_evaluate=[dict(p) for p in settings.points_to_evaluate] or None)
        options = {"search_alg": searcher, "num_samples": settings.num_samples}
        if settings.scheduler == "asha":
            options["scheduler"] = ASHAScheduler(
                time_attr="step", metric=objectives[0], mode="min", max_t=self.spec.train.steps,
                grace_period=settings.grace_period or self.spec.pruning_steps()[0],
                reduction_factor=settings.reduction_factor)
            # A stopped trial's driver actor must exit, taking its Train run (controller and workers) with
            # it; Tune would otherwise keep the actor for a later trial, and the run would train on.
            options["reuse_actors"] = False
        return options

    def point_of(self, config: dict) -> TrialPoint:
        """Searched values rounded, see the module docstring."""
        values = {k: v for k, v in config.items() if k in TrialPoint.model_fields}
        for name, span in self.spec.optuna.space.items():
            if name in values:
                values[name] = _rounded(values[name], span.low, span.high)
        return TrialPoint.model_validate(values)

    def points(self) -> list[TrialPoint]:
        return [read_point(f) for f in self.spec.layout.recorded_points()]

    def bounding_points(self) -> list[TrialPoint]:
        """The corners of the search box: each searched field moves the row-decay factor
        monotonically, so its extremes are at corners."""
        space = self.spec.optuna.space
        names = list(space)
        corners = itertools.product(*((space[n].low, space[n].high) for n in names))
        return [TrialPoint.model_validate(fixed_values(self.spec) | dict(zip(names, values))) for values in corners]

    def train_callbacks(self, objectives: Callable[[int | None], dict]) -> list:
        from raysweep.trials.eval_reports import EvalObjectives

        return [EvalObjectives(objectives, self.spec.pruning_steps())]

    def pruned(self, last_result: dict | None) -> bool:
        """Tune marks `done` the result at which its scheduler stops a trial; a trial that ran to the end
        reported its last step, and a Ctrl-C'd one's last result is not `done`."""
        return bool(self.spec.optuna.scheduler and last_result and last_result.get("done")
                    and last_result.get("step", self.spec.train.steps) < self.spec.train.steps)

    def final_report(self, trial: TrialPoint, objectives: Callable[[int | None], dict], final: dict) -> dict:
        scores = objectives()
        missing = [o for o in self.spec.optuna.objectives if o not in scores]
        if missing:
            raise ValueError(f"optuna.objectives: trial {trial.trial_id} has no final-step shards to score "
                             f"{missing[0]}; use objectives of a split the data has")
        return final | scores

