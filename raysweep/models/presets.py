"""Model scale presets: named, frozen shapes. Plain data, no torch: a spec names its scales here and
is validated without importing torch or transformers (raysweep.models.build turns a preset into a model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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

    def config_fields(self) -> dict:
        """The preset as transformers config fields: a named config of the same kind as a spec's
        `model.configs` entries (a base architecture plus fields)."""
        return {"hidden_size": self.hidden_size, "num_hidden_layers": self.n_layers,
                "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
                "intermediate_size": self.intermediate_size, "max_position_embeddings": self.max_position_embeddings,
                "tie_word_embeddings": self.tie_embeddings,
                "head_dim": self.head_dim or self.hidden_size // self.n_heads}


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
