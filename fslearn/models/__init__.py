"""Stage 3: the networks — Conv4, ResNet-12 and backbones by name, per-task batch norm, a
classifier head (chapters 2 and 7)."""
