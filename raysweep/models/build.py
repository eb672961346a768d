"""Presets built as transformers causal LMs with random init, and their parameter and FLOP counts.

Single-device code only: FSDP2, Ray and storage are applied from outside.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config

from raysweep.models.presets import get_preset


def build_config(scale: str, vocab_size: int, family: str = "llama", dropout: float = 0.0,
                 eos_token_id: Optional[int] = None) -> PretrainedConfig:
    """The transformers config of a preset for a given vocabulary."""
    preset = get_preset(scale)
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[preset.family or family]
    return config_cls(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.n_layers,
        num_attention_heads=preset.n_heads,
        num_key_value_heads=preset.n_kv_heads,
        head_dim=preset.head_dim or preset.hidden_size // preset.n_heads,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=preset.tie_embeddings,
        attention_dropout=dropout,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=None,
        use_cache=False,
    )


def build_model(config: PretrainedConfig, seed: int) -> torch.nn.Module:
    """A randomly initialised causal LM; the same (config, seed) gives the same weights."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.float()


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


def flops_per_token(config: PretrainedConfig, seq_len: int) -> int:
    """Training FLOPs per token: 6 x matmul params + attention, PaLM (Chowdhery et al. 2022) App. B.

    The input embedding is a lookup, not a matmul, so it is left out; the output projection is
    a matmul even when tied to it.
    """
    embedding = config.vocab_size * config.hidden_size
    matmul_params = count_params(config) - embedding + (embedding if config.tie_word_embeddings else 0)
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq_len
    return 6 * matmul_params + attention
