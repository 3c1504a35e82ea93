"""Stage 4: the learners and their losses — metric methods, MAML, fine-tuning (chapters 4–7)."""
