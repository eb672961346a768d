"""Model scale presets: named, frozen shapes built as transformers causal LMs with random init.

Single-device code only: FSDP2, Ray and storage are applied from outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config


@dataclass(frozen=True)
class ModelPreset:
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int
    tie_embeddings: bool = False
    head_dim: Optional[int] = None
    """None: hidden_size // n_heads."""
    family: Optional[str] = None
    """None: the spec's `model.family` decides (CPU presets); GPU shapes fix their own."""


# CPU sizes stay under ~5M parameters at a 4k vocabulary. The GPU shapes follow the published
# configs; OpenELM varies heads and FFN width per layer, which a Llama config cannot, so its
# presets use the per-layer averages (parameter counts land within a few % of the originals).
PRESETS: dict[str, ModelPreset] = {
    "nano": ModelPreset(32, 1, 2, 2, 64, 512),
    "tiny": ModelPreset(64, 2, 4, 4, 256, 512),
    "small": ModelPreset(128, 2, 4, 4, 512, 1024),
    "base": ModelPreset(256, 3, 4, 4, 768, 1024),
    "openelm-270m": ModelPreset(1280, 16, 16, 4, 2880, 2048, tie_embeddings=True, head_dim=64,
                                family="llama"),
    "qwen2-0.5b": ModelPreset(896, 24, 14, 2, 4864, 32768, tie_embeddings=True, family="qwen2"),
    "qwen2-1.5b": ModelPreset(1536, 28, 12, 2, 8960, 32768, tie_embeddings=True, family="qwen2"),
    "openelm-3b": ModelPreset(3072, 36, 16, 4, 7168, 2048, tie_embeddings=True, head_dim=128,
                              family="llama"),
}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown model scale {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


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
