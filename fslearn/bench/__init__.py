"""Speed benchmarks, each against a baseline timed in the same run, and the results files.

Ratios against a baseline measured in the same process mean something on a noisy
or shared machine, where absolute times do not. The benchmarks:

* :func:`sampler_speed`: :class:`~fslearn.EpisodeSampler` against the DataLoader +
  task batch-sampler pipeline of easyfsl and torchmeta (:func:`dataloader_episodes`).
* :func:`maml_speed`: meta-iterations per second of second-order MAML on the paper's
  Omniglot and miniImageNet settings, for the per-task loop most libraries run
  (:func:`per_task_meta_loss`), fslearn's batched :class:`~fslearn.MAML` in eager
  mode (``strategy="vmap"``), and the same under ``torch.compile`` as
  ``train_maml(compile=True)`` runs it.
* :func:`maml_strategy_speed`: ``fsl.MAML``'s two strategies, ``"loop"`` and ``"vmap"``,
  against a per-task loop written with ``higher`` (when it is installed), interleaved.

``benchmarks/bench_sampler.py``, ``benchmarks/bench_maml.py`` and ``fslearn bench``
print their rows with :func:`format_table`; :func:`write_results` writes a results
file and :func:`recorded_maml_speed` reads the measurement that ships with fslearn;
``speed_table()`` and ``provenance_table()`` show a record as tables for a reader, and
``reference_maml_speed()`` with ``reference_table()`` the speeds of other libraries
measured with their own code; :func:`recorded_gpu_validation` reads the record of
``make gpu-check`` (``None`` until a GPU run has written one) and :func:`format_validation`
prints it.
None of this is part of ``fslearn.__all__``: ``from fslearn import bench``.
"""

from .baselines import dataloader_episodes, per_task_meta_loss
from .maml import BASELINE, COMPILED, EAGER, MAML_COLUMNS, MAML_SETTINGS, maml_speed
from .minimal import ABLATION_COLUMNS, DROPPED, KEPT, SETTING, minimal_ablation
from .minimal_followup import (
    FOLLOW_UP,
    RECIPE_NETWORK,
    RECIPE_ROW,
    followup_ablation,
    merged_rows,
)
from .report import (
    command_line,
    format_table,
    recorded_followup_ablation,
    recorded_maml_speed,
    recorded_minimal_ablation,
    results_record,
    write_results,
)
from .sampler import SAMPLER_COLUMNS, sampler_speed
from .strategies import HIGHER, LOOP, STRATEGY_COLUMNS, VMAP, higher_available, maml_strategy_speed
from .tables import (
    ablation_table,
    paired_difference,
    provenance_table,
    reference_maml_speed,
    reference_table,
    speed_table,
)
from .timing import device_name
from .validation import format_validation, recorded_gpu_validation, write_validation

__all__ = [
    "ABLATION_COLUMNS",
    "FOLLOW_UP",
    "RECIPE_NETWORK",
    "RECIPE_ROW",
    "followup_ablation",
    "merged_rows",
    "BASELINE",
    "HIGHER",
    "LOOP",
    "STRATEGY_COLUMNS",
    "VMAP",
    "higher_available",
    "maml_strategy_speed",
    "COMPILED",
    "DROPPED",
    "EAGER",
    "KEPT",
    "MAML_COLUMNS",
    "MAML_SETTINGS",
    "SAMPLER_COLUMNS",
    "SETTING",
    "ablation_table",
    "command_line",
    "dataloader_episodes",
    "device_name",
    "format_table",
    "format_validation",
    "maml_speed",
    "minimal_ablation",
    "paired_difference",
    "per_task_meta_loss",
    "provenance_table",
    "recorded_gpu_validation",
    "recorded_maml_speed",
    "recorded_followup_ablation",
    "recorded_minimal_ablation",
    "reference_maml_speed",
    "reference_table",
    "results_record",
    "sampler_speed",
    "speed_table",
    "write_results",
    "write_validation",
]
