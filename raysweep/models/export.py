"""Models out: a trained trial's checkpoint as a transformers model dir (`save_pretrained`, safetensors)
with its tokenizer, so `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` open it
anywhere, without raysweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from raysweep.errors import first_line
from raysweep.spec.errors import SweepDirError
from raysweep.store.layout import step_of_checkpoint, tokenizer_file
from raysweep.store.storage import durable_replace, fetch_file, fsync_tree, temporary_sibling

EXPORT_RECORD = "raysweep_export.json"


def export_trial(sweep_dir, trial_id: str, out_dir, step: Optional[int] = None) -> Path:
    """Write trial `trial_id`'s model at `step` (default: its newest complete checkpoint) to `out_dir`, a
    new or empty local dir. The dir appears whole or not at all."""
    from torch.distributed.checkpoint.api import CheckpointException
    from transformers import PreTrainedTokenizerFast

    from raysweep.models.build import build_config, build_model
    from raysweep.run.preflight import load_prepared, load_sweep_spec
    from raysweep.train.checkpoint import is_whole, load_model_weights
    from raysweep.trials.source import trial_source

    spec = load_sweep_spec(sweep_dir)
    layout = spec.layout
    source = trial_source(spec)
    if not source.trains:
        raise SweepDirError(f"SWEEP: {layout.root} scored models trained elsewhere (search: checkpoints); "
                            "nothing to export: load them from where checkpoints.models names them")
    points = {p.trial_id: p for p in source.points()}
    if trial_id not in points:  # also keeps a crafted id from naming paths outside the sweep
        raise SweepDirError(f"TRIAL: {trial_id!r} is not a trial of {layout.root}; its trials: "
                            f"{', '.join(sorted(points))}")
    trial = points[trial_id]
    complete = {step_of_checkpoint(c): c for c in layout.checkpoint_dirs(trial_id)
                if is_whole(c)}
    if not complete:
        raise SweepDirError(f"TRIAL: {trial_id} has no complete checkpoint yet; `raysweep status "
                            f"{layout.root}` shows how far it got")
    step = max(complete) if step is None else step
    if step not in complete:
        raise SweepDirError(f"--step: {trial_id} has no complete checkpoint at step {step}; complete ones: "
                            f"{', '.join(str(s) for s in sorted(complete))}")
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SweepDirError(f"OUT_DIR: {out} exists and is not an empty dir; name a new one")

    data = load_prepared(spec)[trial.data_slot]
    model = build_model(build_config(trial.scale, data.vocab_size, spec.model, trial.dropout, data.eos_id,
                                     layout), trial.seed)
    try:
        load_model_weights(model, complete[step])
    except (Exception, CheckpointException) as exc:  # DCP's wraps every read failure (a BaseException)
        raise SweepDirError(f"TRIAL: {complete[step]} is not a checkpoint raysweep can read safely "
                            f"({first_line(exc)[-300:]})") from None
    model.config.use_cache = True  # off in training; generation wants it
    tokenizer_json = fetch_file(tokenizer_file(data.data_dir), f"tokenizer-{data.data_key}.json")  # not the arrays
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json))
    if data.eos_id is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(data.eos_id)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(out)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / EXPORT_RECORD).write_text(json.dumps(
            {"sweep": str(layout.root), "trial_id": trial_id, "step": step, "data_key": data.data_key}, indent=1))
        if out.exists():
            out.rmdir()  # empty, checked above
        fsync_tree(staging)
        durable_replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
