"""`search: checkpoints`: models trained elsewhere, each (model, revision) one Tune trial that only evaluates.

A model is what a training trial is to the catalog: its name is the `trial_id` of its shards and of its
row in `trials`, and each revision's step is an eval step, so the SQL library (bin loss, learning speed)
reads a Pythia run's checkpoints as it reads a trial's evals. The Tune trial of one checkpoint is named
`<model>@<revision>`; its done and point files are under that name, so a resumed sweep skips the
checkpoints already scored.
"""

from __future__ import annotations

from raysweep.spec.schema import CheckpointModel, DataConfig, SpecSection, SweepSpec, TokenizerConfig, is_local_path
from raysweep.trials.source import TrialSource


class CheckpointPoint(SpecSection):
    model: str
    """The model's name in `checkpoints.models`."""
    revision: str
    step: int

    @property
    def trial_id(self) -> str:
        return f"{self.model}@{self.revision}"

    @property
    def table_id(self) -> str:
        """The trial_id its shards and its trials row carry: the model's (one run, many steps)."""
        return self.model

    @property
    def data_slot(self) -> str:
        """Its data dir: the model's (the eval sets in the model's tokenizer, one per model)."""
        return self.model

    # What status and summaries show for any trial: a checkpoint's weight decay and seed are unknown here.
    scale = property(lambda self: self.model)
    weight_decay = property(lambda self: None)
    seed = property(lambda self: None)


def checkpoint_dir(entry: CheckpointModel, revision: str) -> tuple[str, str | None]:
    """(what from_pretrained loads, the hub revision): a local model's revision is its subdir (a plain
    name, so always inside it), a hub model's a branch, tag or commit."""
    if is_local_path(entry.hf):
        return f"{entry.hf}/{revision}", None
    return entry.hf, revision


def model_data_config(spec: SweepSpec, model: str) -> DataConfig:
    """The spec's data, tokenized with the model's own tokenizer (that of its first revision)."""
    entry = spec.checkpoints.models[model]
    name, revision = checkpoint_dir(entry, entry.revisions[0])
    tokenizer = TokenizerConfig(kind="hf", name=name, revision=revision)
    return spec.data.model_copy(update={"tokenizer": tokenizer})


class CheckpointSource(TrialSource):
    """Every (model, revision) of `checkpoints.models`, known up front (Tune's grid over one axis)."""

    # More models or revisions extend the sweep; the checkpoints scored keep their results.
    extensible_prefixes = ("checkpoints.models.",)
    trains = False

    def extension_problems(self, old: dict) -> list[str]:
        """More models, or revisions appended to a model's list, continue the sweep. A scored model's source,
        its earlier revisions (in order: the first gives the tokenizer) and their steps stay as they were, or
        its shards would mix two models, or two steps."""
        problems = []
        for name, before in ((old.get("checkpoints") or {}).get("models") or {}).items():
            now, where = self.spec.checkpoints.models.get(name), f"checkpoints.models.{name}"
            if now is None:
                continue  # left out now: its results stay in the sweep
            earlier = CheckpointModel.model_validate(before)
            if now.hf != earlier.hf:
                problems.append(f"{where}.hf: {earlier.hf!r} -> {now.hf!r} (this sweep scored the other model under "
                                "this name; give the new one its own name)")
            if now.revisions[:len(earlier.revisions)] != earlier.revisions:
                problems.append(f"{where}.revisions: {earlier.revisions!r} -> {now.revisions!r} (append new "
                                "revisions after the scored ones)")
            problems += [f"{where}.steps.{r}: {earlier.step_of(r)} -> {now.step_of(r)}" for r in earlier.revisions
                         if r in now.revisions and now.step_of(r) != earlier.step_of(r)]
        return problems

    def param_space(self) -> dict:
        from ray import tune

        return {"checkpoint": tune.grid_search([[p.model, p.revision] for p in self.points()])}

    def point_of(self, config: dict) -> CheckpointPoint:
        model, revision = config["checkpoint"]
        return CheckpointPoint(model=model, revision=revision,
                               step=self.spec.checkpoints.models[model].step_of(revision))

    def points(self) -> list[CheckpointPoint]:
        return [CheckpointPoint(model=name, revision=revision, step=entry.step_of(revision))
                for name, entry in self.spec.checkpoints.models.items() for revision in entry.revisions]

    def bounding_points(self) -> list:
        return []  # the spec checks that need data are about training (row decay): none applies

    def data_configs(self) -> dict[str, DataConfig]:
        return {name: model_data_config(self.spec, name) for name in self.spec.checkpoints.models}

    def eval_steps(self, point: CheckpointPoint) -> list[int]:
        return [point.step]

    def report_steps(self, point: CheckpointPoint) -> list[int]:
        return []

    def final_checkpoint_step(self, point: CheckpointPoint) -> int | None:
        return None
