"""Stage 2: what one training step draws — episodes, pairs, P×K batches (chapters 3–5)."""
