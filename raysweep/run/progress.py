"""What the sweep's console shows while it runs: one line per running trial (step of steps, training loss,
tokens/s, ETA), printed as a block at a trial's first report and then at most every `every_s` seconds, and a
line as each trial ends.

A Tune callback in the sweep driver: every report a trial's workers make reaches Tune (TuneReportCallback),
so the lines come from results Tune already has. Ray's own per-trial table and the workers' log lines are
shown with `raysweep -v` instead.
"""

from __future__ import annotations

import time

from ray import tune

from raysweep.ops.status import format_duration
from raysweep.spec.schema import SweepSpec
from raysweep.trials.source import trial_source


class ProgressLines(tune.Callback):
    source = None  # a sweep started before pruning restores its callback without one (Tune unpickles, no __init__)

    def __init__(self, spec: SweepSpec, every_s: float = 15.0):
        self.source = trial_source(spec)
        self.steps = spec.train.steps  # every training trial's last step
        self.every_s = every_s
        self.latest: dict[str, dict] = {}  # trial name -> {step, loss, tokens_per_s, eta_s}
        self.pace: dict[str, tuple[float, int]] = {}  # trial name -> (time, step) of its previous result
        self.printed_at = 0.0
        self.shown: set[str] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name, step, now = str(trial), result.get("step"), time.time()
        if not isinstance(step, int) or "loss" not in result:
            return  # a search's final objectives, or a scored checkpoint: no training progress
        steps = max(self.steps, step)
        seconds_per_step = result.get("step_time_s", float("nan"))
        if name in self.pace and step > self.pace[name][1]:  # wall clock between reports: eval and checkpoints too
            seconds_per_step = (now - self.pace[name][0]) / (step - self.pace[name][1])
        self.pace[name] = (now, step)
        self.latest[name] = {"step": step, "steps": steps, "loss": result["loss"],
                             "tokens_per_s": result.get("tokens_per_s", float("nan")),
                             "eta_s": max(0, steps - step) * seconds_per_step}
        if now - self.printed_at >= self.every_s or name not in self.shown:  # every trial shows from its first report
            self.printed_at = now
            self.shown |= set(self.latest)
            print("\n".join(self.line(n, p) for n, p in sorted(self.latest.items())), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.latest.pop(str(trial), None)
        if self.source is not None and self.source.pruned(trial.last_result):
            print(f"{trial}: pruned at step {trial.last_result['step']} by the search's scheduler", flush=True)
        else:
            print(f"{trial}: finished", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.latest.pop(str(trial), None)
        print(f"{trial}: failed (`raysweep status` says why)", flush=True)

    @staticmethod
    def line(name: str, progress: dict) -> str:
        return (f"{name}  step {progress['step']}/{progress['steps']}  loss {progress['loss']:.4f}  "
                f"{progress['tokens_per_s']:,.0f} tok/s  ETA {format_duration(progress['eta_s'])}")
