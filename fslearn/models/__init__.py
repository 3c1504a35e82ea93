"""Stage 3: the networks — Conv4, its task batch norm, a classifier head (chapters 2 and 7)."""
