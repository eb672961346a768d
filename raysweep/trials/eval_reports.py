"""What a search trial's Train run tells Tune at each eval: its objectives, so a Tune scheduler can act on them.

A Ray Train callback: it runs in the Train run's controller, after every worker has reported a step (so that
step's token shards are complete on every rank).
"""

from __future__ import annotations

from typing import Callable

from ray.tune.integration.ray_train import TuneReportCallback


class EvalObjectives(TuneReportCallback):
    """Forwards the workers' reports at `steps` to Tune with the trial's objectives at that step (the SQL
    library's `trial_objectives` on the step's shards); drops every other report, since Tune requires the
    searcher's metrics in each result it sees. The last step's objectives come from the trial's driver once
    the trial has finished (OptunaSource.final_report)."""

    def __init__(self, objectives: Callable[[int | None], dict], steps: list[int]):
        super().__init__()
        self.objectives, self.steps = objectives, frozenset(steps)

    def after_report(self, run_context, metrics, checkpoint):
        step = metrics[0].get("step")
        if step in self.steps:
            super().after_report(run_context, [metrics[0] | self.objectives(step)], None)
