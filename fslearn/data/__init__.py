"""Stage 1 of the pipeline: datasets, as images grouped by class (chapter 3)."""
