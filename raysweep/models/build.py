"""Presets built as transformers causal LMs with random init, and their parameter and FLOP counts.

Single-device code only: FSDP2, Ray and storage are applied from outside.
"""

from __future__ import annotations

import copy
import json
from typing import Optional

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from raysweep.errors import first_line
from raysweep.models.presets import get_preset
from raysweep.spec.errors import SpecError
from raysweep.spec.schema import ModelConfig
from raysweep.store.layout import SweepLayout

def is_dropout_field(name: str) -> bool:
    """attention_dropout, hidden_dropout, resid_pdrop, embd_pdrop, ...: what model.dropout sets."""
    return name.endswith(("dropout", "pdrop")) and name != "classifier_dropout"


def build_config(scale: str, vocab_size: int, model: Optional[ModelConfig] = None, dropout: float = 0.0,
                 eos_token_id: Optional[int] = None, layout: Optional[SweepLayout] = None) -> PretrainedConfig:
    """The transformers config of a `grid.scale` entry for a vocabulary: a preset (its family from
    `model.family` unless it fixes its own), or a `model.configs` name (a Hugging Face config plus
    overrides; with `layout`, the copy the sweep stored when it started, so every node and every resume
    trains the same architecture). Either way a base architecture plus fields; the tokenizer's vocabulary
    and ids replace the config's, and `dropout` sets every dropout the overrides leave alone."""
    model = model or ModelConfig()
    overridden = set()
    if scale in model.configs:
        entry, field = model.configs[scale], f"model.configs.{scale}"
        stored = layout.model_config_file(scale) if layout is not None else None
        fields = (json.loads(stored.read_text()) if stored is not None and stored.exists()
                  else hf_config_fields(entry.hf, f"{field}.hf"))
        model_type = fields.pop("model_type")
        fields = _canonical(model_type, fields, "")
        overrides = _canonical(model_type, entry.overrides, f"{field}.overrides")
        overridden = set(overrides)
        fields |= overrides
    else:
        preset = get_preset(scale)
        model_type, fields = preset.family or model.family, preset.config_fields()
    fixed = {"vocab_size": vocab_size, "bos_token_id": None, "eos_token_id": eos_token_id, "pad_token_id": None,
             "use_cache": False}
    fields |= _canonical(model_type, fixed, "")
    fields |= {name: dropout for name in CONFIG_MAPPING[model_type]().to_dict()
               if is_dropout_field(name) and name not in overridden}
    return AutoConfig.for_model(model_type, **fields)


def hf_config_fields(hf: str, field: str, revision: Optional[str] = None) -> dict:
    """The fields of a Hugging Face config.json (local dir, or hub id at `revision`), read as data: no code runs."""
    try:
        fields, _ = PretrainedConfig.get_config_dict(hf, revision=revision)
    except (OSError, ValueError) as exc:
        raise SpecError([f"{field}: no config.json could be read from {hf!r} ({first_line(exc)}); name a local "
                         "dir holding one, or a hub id (with internet)"]) from None
    model_type = fields.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise SpecError([f"{field}: architecture {model_type!r} ({hf}) is unknown to transformers "
                         f"{transformers.__version__}, and raysweep runs no code from a config; use an "
                         "architecture transformers ships"])
    return {k: v for k, v in fields.items() if k not in ("architectures", "auto_map", "transformers_version")}


def stored_config(layout: SweepLayout, name: str) -> PretrainedConfig:
    """The config a sweep stored for a model it scores from checkpoints (raysweep.run.preflight)."""
    fields = json.loads(layout.model_config_file(name).read_text())
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def _canonical(model_type: str, fields: dict, field: str) -> dict:
    """Fields under the config class's own names (gpt2's `num_hidden_layers` is `n_layer`); with `field`,
    an unknown name or the vocabulary is refused (a typo would otherwise be stored and ignored)."""
    config_cls = CONFIG_MAPPING[model_type]
    canonical = {}
    for original, value in fields.items():
        name = config_cls.attribute_map.get(original, original)
        if name in canonical:
            raise SpecError([f"{field or 'config.json'}.{original}: names the same field as another key "
                             f"({name}); keep one"])
        canonical[name] = value
    if field:
        known = set(config_cls().to_dict())
        for original in fields:
            name = config_cls.attribute_map.get(original, original)
            if name == "vocab_size":
                raise SpecError([f"{field}.{original}: the vocabulary comes from the sweep's tokenizer "
                                 "(data.tokenizer.vocab_size); drop it here"])
            if name not in known:
                raise SpecError([f"{field}.{original}: not a field of {config_cls.__name__}; check the spelling "
                                 "against the config.json"])
    return canonical


def build_model(config: PretrainedConfig, seed: int) -> torch.nn.Module:
    """A randomly initialised causal LM in one process: the same (config, seed) gives the same weights as
    a sharded build on any number of ranks (raysweep.models.init)."""
    from raysweep.models.init import materialize, meta_model

    model = meta_model(config)
    materialize(model, copy.deepcopy(model), seed, torch.device("cpu"))
    return model


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks, found as transformers marks them for any architecture: the modules
    whose class is in `_no_split_modules` (the units FSDP2 shards, checkpoints and compiles)."""
    block_classes = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in block_classes]
    if not blocks:
        raise ValueError(f"model: {type(model).__name__} names no decoder blocks in _no_split_modules "
                         f"({sorted(block_classes)}), so there is nothing to shard block by block; "
                         "use a transformers causal LM that declares them")
    return blocks


def count_params(config: PretrainedConfig) -> int:
    """Exact parameter count (tied embeddings counted once), built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def head_dim(config: PretrainedConfig) -> int:
    """Each attention head's width, which a preset may set apart from hidden_size / heads (OpenELM)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def flops_per_token(config: PretrainedConfig, seq_len: int) -> int:
    """Training FLOPs per token: 6 x matmul params + attention, PaLM (Chowdhery et al. 2022) App. B.

    The input embedding is a lookup, not a matmul, so it is left out; the output projection is
    a matmul even when tied to it.
    """
    embedding = config.vocab_size * config.hidden_size
    matmul_params = count_params(config) - embedding + (embedding if config.tie_word_embeddings else 0)
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * head_dim(config) * seq_len
    return 6 * matmul_params + attention
