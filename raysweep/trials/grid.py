"""`search: grid`: every point of the spec's grid, each one Tune trial (Tune's own grid_search)."""

from __future__ import annotations

import itertools

from raysweep.spec.schema import SweepSpec
from raysweep.trials.point import TrialPoint, regularizer_axes, vocab_axis
from raysweep.trials.source import TrialSource


def grid_points(spec: SweepSpec) -> list[TrialPoint]:
    """Every trial of the spec's grid (scale x weight decay x seed x vocab x regularizer axes)."""
    axes = regularizer_axes(spec)
    points = []
    for scale in spec.grid.scale:
        for wd in spec.grid.weight_decay:
            for seed in spec.grid.seed:
                for vocab in vocab_axis(spec):
                    for values in itertools.product(*axes.values()):
                        points.append(TrialPoint(weight_decay=wd, scale=scale, seed=seed, vocab_size=vocab,
                                                 **dict(zip(axes, values))))
    return points


class GridSource(TrialSource):
    """Trials are known up front: Tune runs one per grid point, each reporting at every eval."""

    # A spec that differs only in its grid extends the sweep: the finished trials keep their ids.
    extensible_prefixes = ("grid.",)

    def param_space(self) -> dict:
        from ray import tune

        spec = self.spec
        axes = {"weight_decay": spec.grid.weight_decay, "scale": spec.grid.scale, "seed": spec.grid.seed,
                **regularizer_axes(spec)}
        if spec.grid.vocab_size:  # absent otherwise: trial configs (and ids) of sweeps without the axis stay as they were
            axes["vocab_size"] = spec.grid.vocab_size
        return {name: tune.grid_search(list(values)) for name, values in axes.items()}

    def point_of(self, config: dict) -> TrialPoint:
        # Configs of sweeps from before an axis existed lack its key: the default, plain AdamW's, applies.
        return TrialPoint.model_validate({k: v for k, v in config.items() if k in TrialPoint.model_fields})

    def points(self) -> list[TrialPoint]:
        return grid_points(self.spec)

    def bounding_points(self) -> list[TrialPoint]:
        return grid_points(self.spec)
