"""Checks before a sweep starts Ray, each failing in one line that names the field or file and the fix:
the sweep dir's earlier spec, storage, the cluster's capacity, the data on disk; then the data itself.

Bad input leaves storage as it was (`run_sweep` removes a sweep dir it created when a check fails)."""

from __future__ import annotations

import errno
import json
import os
import uuid

import yaml

from raysweep.data.prepare import PreparedData, data_key, prepare_data
from raysweep.data.tokenizer import load_tokenizer_file, tokenizer_fingerprint
from raysweep.run.migrations import check_ids_unchanged, check_trained_by_this_version
from raysweep.spec.data_checks import check_spec_against_data
from raysweep.errors import first_line
from raysweep.spec.errors import SpecError, SweepDirError
from raysweep.spec.load import parse_spec
from raysweep.spec.schema import SweepSpec, is_local_path
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import atomic_write_text, ensure_dir, is_remote
from raysweep.trials.source import trial_source


def preflight(spec: SweepSpec) -> tuple[bool, dict]:
    """Every check that can fail on bad input, then the data: (same spec as the sweep dir holds, the
    PreparedData of each vocab-axis point). The caller has checked the storage and holds the writer lock."""
    same_spec = check_existing_sweep(spec)
    if not os.environ.get("RAY_ADDRESS"):
        check_capacity(spec, local_resources())
    check_model_configs(spec)
    checkpoint_configs = check_checkpoints(spec)
    check_data_unchanged(spec)
    datas = prepare(spec)
    check_spec_against_data(spec, datas)
    check_checkpoint_vocabularies(checkpoint_configs, datas)
    store_model_configs(spec, checkpoint_configs)
    return same_spec, datas


def check_model_configs(spec: SweepSpec) -> None:
    """Each `model.configs` model the grid uses: transformers reads its config (errors name the entry),
    it is the one the sweep stored if it has started, it fits data.seq_len, and it has decoder blocks to
    shard (built on the meta device: no memory)."""
    used = [scale for scale in spec.grid.scale if scale in spec.model.configs]
    if not used:
        return
    from raysweep.models.build import build_config, decoder_blocks, hf_config_fields

    vocab_size = spec.data.tokenizer.vocab_size  # the shape checks hold at any vocabulary
    for scale in used:
        field = f"model.configs.{scale}"
        stored = spec.layout.model_config_file(scale)
        if stored.exists():
            try:
                source = hf_config_fields(spec.model.configs[scale].hf, f"{field}.hf")
            except SpecError:
                source = None  # gone (another machine, offline): the stored copy is the sweep's model
            if source is not None and source != json.loads(stored.read_text()):
                raise SpecError([f"{field}.hf: the config differs from the one this sweep trained with ({stored}); "
                                 f"restore {spec.model.configs[scale].hf}, or start a new sweep under another name"])
        config = build_config(scale, vocab_size, spec.model, spec.model.dropout, layout=spec.layout)
        model = causal_lm_on_meta(config, field, spec.data.seq_len, "or override max_position_embeddings")
        try:
            decoder_blocks(model)
        except ValueError as exc:
            raise SpecError([f"{field}.hf: {str(exc).removeprefix('model: ')}"]) from None


def check_checkpoints(spec: SweepSpec) -> dict[str, dict]:
    """Each checkpoint of `checkpoints.models` is there and transformers reads its config as a causal LM
    whose context fits data.seq_len. Returns each model's config fields (its first revision's)."""
    if spec.search != "checkpoints":
        return {}
    from transformers import AutoConfig, PretrainedConfig

    from raysweep.models.build import hf_config_fields
    from raysweep.trials.checkpoints import checkpoint_dir

    configs = {}
    for name, entry in spec.checkpoints.models.items():
        for i, revision in enumerate(entry.revisions):
            field = f"checkpoints.models.{name}.revisions[{i}]"
            source, hub_revision = checkpoint_dir(entry, revision)
            if is_local_path(entry.hf) and not os.path.isdir(source):
                raise SpecError([f"{field}: {revision!r} is not there (no dir {source}); name subdirs of "
                                 f"{entry.hf} that hold save_pretrained checkpoints"])
            try:  # read before hf_config_fields so that a missing revision is named as one
                PretrainedConfig.get_config_dict(source, revision=hub_revision)
            except (OSError, ValueError) as exc:
                raise SpecError([f"{field}: {revision!r} of {entry.hf!r} cannot be read ({first_line(exc)}); "
                                 "name a branch, tag or commit the model has (a hub id needs internet or "
                                 "the hub cache), or a subdir with a config.json"]) from None
            if name not in configs:  # the architecture and vocabulary checked: the first revision's
                configs[name] = hf_config_fields(source, field, hub_revision)
        fields = dict(configs[name])
        causal_lm_on_meta(AutoConfig.for_model(fields.pop("model_type"), **fields), f"checkpoints.models.{name}",
                          spec.data.seq_len, "or a shorter eval sequence")
    return configs


def causal_lm_on_meta(config, field: str, seq_len: int, other_fix: str):
    """The config's causal LM on the meta device (no memory), once its context fits data.seq_len; each check
    fails in one line naming `field`."""
    import torch
    from transformers import AutoModelForCausalLM

    context = getattr(config, "max_position_embeddings", None)
    if context is not None and seq_len > context:
        raise SpecError([f"data.seq_len: {seq_len} exceeds the context of {field} ({context}); use "
                         f"--set data.seq_len={context}, {other_fix}"])
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except ValueError:  # transformers has the architecture, but no causal LM of it (e.g. t5)
        raise SpecError([f"{field}.hf: transformers has no causal LM for architecture {config.model_type!r}; "
                         "use a decoder-only architecture"]) from None


def check_checkpoint_vocabularies(configs: dict[str, dict], datas: dict) -> None:
    """Every id of a model's tokenizer has a row in its embeddings (more rows is fine: padding)."""
    for name, fields in configs.items():
        rows, ids = fields.get("vocab_size"), datas[name].vocab_size
        if rows is not None and ids > rows:
            raise SpecError([f"checkpoints.models.{name}: its tokenizer has {ids} token ids but the model's "
                             f"embeddings have {rows} rows; the first revision's tokenizer must be the one "
                             "the model was trained with"])


def store_model_configs(spec: SweepSpec, checkpoint_configs: dict[str, dict]) -> None:
    """Keep each used `model.configs` config (and each scored model's) in the sweep, once: workers on other
    nodes and later resumes build from this copy, whatever happens to the source dir or hub repo."""
    from raysweep.models.build import hf_config_fields

    for name, fields in checkpoint_configs.items():
        stored = spec.layout.model_config_file(name)
        if not stored.exists():
            ensure_dir(stored.parent)
            atomic_write_text(stored, json.dumps(fields, indent=1))
    for scale in spec.grid.scale if trial_source(spec).trains else []:
        stored = spec.layout.model_config_file(scale)
        if scale in spec.model.configs and not stored.exists():
            ensure_dir(stored.parent)
            atomic_write_text(stored, json.dumps(hf_config_fields(spec.model.configs[scale].hf,
                                                                  f"model.configs.{scale}.hf"), indent=1))


def spec_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`path: old -> new` for every field that differs between two spec dumps."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += spec_differences(a, b, path + ".")
        elif a != b:
            diffs.append(f"{path}: {a!r} -> {b!r}")
    return diffs


def check_existing_sweep(spec: SweepSpec) -> bool:
    """True if this sweep dir already ran exactly this spec (so it resumes).

    Fields the trial source lets change (a grid's grid, and how steps run) continue the sweep; any
    other difference is refused, because the trials would no longer be comparable.
    """
    layout = spec.layout
    if not layout.spec_file.exists():
        return False
    raw = yaml.safe_load(layout.spec_file.read_text())
    if not isinstance(raw, dict):
        raise SweepDirError(f"{layout.spec_file}: not a raysweep spec (a YAML mapping); the sweep dir is damaged")
    # Where the dir is now, under its name now, as load_sweep_spec reads it: a moved or renamed sweep extends.
    raw |= {"storage": str(spec.storage), "name": spec.name}
    check_ids_unchanged(layout, raw)
    check_trained_by_this_version(layout)
    try:  # fields added since the sweep was written take their defaults on both sides
        old = SweepSpec.model_validate(raw).model_dump(mode="json")
    except (ValueError, TypeError):
        old = raw
    new = spec.model_dump(mode="json")
    source = trial_source(spec)
    may_differ = source.mutable_prefixes()
    diffs = [d for d in spec_differences(old, new) if not d.split(":", 1)[0].startswith(may_differ)]
    diffs += source.extension_problems(old)
    if diffs:
        raise SweepDirError(f"{layout.root}: holds a sweep with a different spec ({'; '.join(diffs)}); "
                            f"use another `name` or `storage`, or the original values")
    return old == new


def load_sweep_spec(sweep_dir) -> SweepSpec:
    """The spec a sweep dir was run with, with `storage` pointing where the dir is now."""
    layout = SweepLayout.at(sweep_dir)
    if not layout.spec_file.exists():
        raise SweepDirError(f"{layout.root}: not a sweep directory (no spec.yaml); "
                            "run `raysweep sweep SPEC.yaml` first")
    raw = yaml.safe_load(layout.spec_file.read_text())
    if not isinstance(raw, dict):
        raise SweepDirError(f"{layout.spec_file}: not a raysweep spec (a YAML mapping); the sweep dir is damaged")
    # Where the dir is now, under the name it has now: a sweep may be moved or renamed.
    raw |= {"storage": str(layout.root.parent), "name": layout.name}
    return parse_spec(raw, source=str(layout.spec_file))


def check_storage(layout: SweepLayout) -> None:
    """The sweep dir can be created and written: fail now, not in a worker an hour from now."""
    sweep_dir = layout.root
    probe = sweep_dir / f".write-probe-{uuid.uuid4().hex}"  # unique across hosts sharing NFS
    if is_remote(sweep_dir):
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except Exception as exc:  # botocore / gcsfs raise their own types for auth and missing buckets
            raise SweepDirError(f"storage: cannot write to {sweep_dir} ({first_line(exc)}); check the bucket "
                                "name and the credentials (AWS_* / GOOGLE_APPLICATION_CREDENTIALS), "
                                "or --set storage=PATH") from None
        return
    for path in (sweep_dir.parent, sweep_dir):
        if path.exists() and not path.is_dir():
            raise SweepDirError(f"storage: {path} is a file, not a directory; point storage at a "
                                "directory (--set storage=PATH)")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SweepDirError(f"storage: cannot write to {sweep_dir} ({exc.strerror or exc}); point "
                            "storage at a writable directory (--set storage=PATH)") from None


def local_resources() -> dict:
    """What an embedded Ray will have, known before starting it."""
    import torch

    return {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}


def check_capacity(spec: SweepSpec, cluster: dict) -> None:
    """One trial fits on the cluster (`cluster`: Ray's resource totals)."""
    need_cpu = spec.resources.workers_per_trial * spec.resources.cpus_per_worker
    problems = []
    if cluster.get("CPU", 0) < need_cpu:
        problems.append(f"resources.workers_per_trial: a trial needs {need_cpu} CPUs "
                        f"(workers_per_trial x cpus_per_worker) but the cluster has "
                        f"{cluster.get('CPU', 0):g}; lower resources.workers_per_trial or "
                        "resources.cpus_per_worker, or run on a larger cluster (RAY_ADDRESS)")
    if spec.resources.use_gpu and cluster.get("GPU", 0) < spec.resources.workers_per_trial:
        problems.append(f"resources.use_gpu: a trial needs {spec.resources.workers_per_trial} GPUs "
                        f"but the cluster has {cluster.get('GPU', 0):g}; use --set "
                        "resources.use_gpu=false or fewer workers")
    if problems:
        raise SpecError(problems)


def check_data_unchanged(spec: SweepSpec) -> None:
    """A resumed sweep must read the data its checkpoints were trained on. Its spec is the same,
    so a new data key means a corpus or tokenizer file changed on disk."""
    layout = spec.layout
    if not layout.spec_file.exists():
        return  # never started: a data dir left by a failed first attempt binds nothing
    built = sorted(layout.built_data_markers(), key=lambda m: m.stat().st_mtime)
    keys = {data_key(data, spec.eval) for data in trial_source(spec).data_configs().values()}
    if not built or any(meta.parent.name in keys for meta in built):
        return
    key = data_key(spec.data, spec.eval)
    old = json.loads(built[-1].read_text())  # the newest: what the sweep ran on last
    tok = spec.data.tokenizer
    if tok.kind == "file":
        vocab = load_tokenizer_file(tok.path).get_vocab_size(with_added_tokens=True)
        if vocab != old["vocab_size"]:
            raise SweepDirError(f"data.tokenizer.path: {tok.path} now has a vocabulary of {vocab}, but "
                                f"this sweep's data and checkpoints use {old['vocab_size']}; restore the "
                                "original file or start a new sweep under another name")
    tokenizer_field = {"file": "data.tokenizer.path", "hf": "data.tokenizer.name"}.get(tok.kind)
    changed = tokenizer_field if tokenizer_field and old.get("fingerprints", {}).get(
        "tokenizer") != tokenizer_fingerprint(tok) else "data.corpus"
    raise SweepDirError(f"{changed}: the file changed since this sweep's data was built (data key "
                        f"{old['data_key']} -> {key}); restore the original file or start a new "
                        "sweep under another name")


def prepare(spec: SweepSpec) -> dict:
    """Every data dir the trials read, by data slot ({None: data} for a grid without a vocab axis), built
    or reused."""
    layout = spec.layout
    source = trial_source(spec)
    min_sequences = spec.train.batch_size if source.trains else 1
    try:
        return {slot: prepare_data(data, spec.eval, layout, min_sequences=min_sequences)
                for slot, data in source.data_configs().items()}
    except OSError as exc:  # disk full, quota, file-size limit: nothing half-built is kept
        where = exc.filename or layout.data_root
        if is_remote(layout.root):  # s3fs / gcsfs raise OSErrors for refused or failed requests
            raise SweepDirError(f"storage: uploading the data dir to {where} failed "
                                f"({first_line(exc)}); check the credentials and the bucket's permissions") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise SweepDirError(f"storage: writing {where} failed ({exc.strerror}): the disk is full or a quota "
                                "or file-size limit was hit; free space or point storage elsewhere "
                                "(--set storage=PATH)") from None
        raise SweepDirError(f"storage: writing {where} failed ({exc.strerror or first_line(exc)}); check that "
                            "the directory is writable and the filesystem mounted, or point storage elsewhere "
                            "(--set storage=PATH)") from None


def load_prepared(spec: SweepSpec) -> dict:
    """The data dirs a sweep was run on ({data slot: PreparedData}), without building any."""
    return {slot: PreparedData.load(spec.layout.data_dir(data_key(data, spec.eval)))
            for slot, data in trial_source(spec).data_configs().items()}
