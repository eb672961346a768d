"""The per-worker training loop, its optimizer and its checkpoints."""
