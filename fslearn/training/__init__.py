"""Stage 5: the loop, checkpoints, and the recipes that train each method (chapters 1, 4–8)."""
