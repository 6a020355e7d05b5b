"""One strategy per tier kind (pytest, torchrun)."""
