"""The kernel both ``scheduler`` and ``runners`` may import: outcome, events, errors, clock."""
