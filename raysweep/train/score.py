"""[1] The per-worker function of a trial that scores a checkpoint trained elsewhere (`search: checkpoints`):
load it with transformers, score the fixed eval sets per token at the revision's step, report once.

The shards are the training trials' own (raysweep.train.hooks.EvalHook), under the model's name and the
revision's step, so the catalog and the SQL library read them unchanged.
"""

from __future__ import annotations

import ray.train
import torch

from raysweep.data.prepare import PreparedData, eval_sets
from raysweep.spec.schema import SweepSpec
from raysweep.store.layout import DATA_MARKER
from raysweep.store.storage import local_copy, location
from raysweep.train.hooks import EvalHook
from raysweep.train.parallel import worker_device
from raysweep.trials.checkpoints import CheckpointPoint, checkpoint_dir


def load_checkpoint_model(spec: SweepSpec, point: CheckpointPoint, device: torch.device) -> torch.nn.Module:
    """The revision's weights through AutoModelForCausalLM (no code from the repo runs; a .bin file is
    read with torch.load(weights_only=True), as transformers does)."""
    from transformers import AutoModelForCausalLM

    source, revision = checkpoint_dir(spec.checkpoints.models[point.model], point.revision)
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, trust_remote_code=False,
                                                 dtype=getattr(torch, spec.checkpoints.dtype))
    return model.to(device).eval()


def score_loop_per_worker(config: dict) -> None:
    spec = SweepSpec.model_validate(config["spec"])
    point = CheckpointPoint.model_validate(config["trial"])
    data = PreparedData.load(location(config["data_dir"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(spec.resources.cpus_per_worker)
    device = worker_device(spec.resources.use_gpu)

    model = load_checkpoint_model(spec, point, device)
    arrays_dir = local_copy(data.data_dir, data.data_key, DATA_MARKER)  # memmap needs a local file
    evaluation = EvalHook(spec.layout, point.table_id, eval_sets(data, arrays_dir), [point.step],
                          spec.eval.batch_size, rank, world, device)
    ray.train.report({"step": point.step} | evaluation(model, point.step))
