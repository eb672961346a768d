"""Hugging Face configs (presets and `model.configs`), models built on the meta device, export."""

# How a seed becomes initial weights (raysweep.models.init); a trial's attempts.jsonl records it, and a
# sweep whose trials were initialized otherwise is not continued (raysweep.run.migrations).
INIT_SCHEME = "units-v1"
