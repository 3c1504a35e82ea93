"""MAML speed: meta-iterations per second of the per-task loop, batched MAML, and compiled MAML."""

from __future__ import annotations

import torch

from ..common import check_positive_int, default_device, progress_bar
from ..data.dataset import FewShotDataset
from ..methods.maml import MAML, maml_classifier
from ..sampling.episodes import EpisodeSampler
from ..training.presets import maml_paper_settings
from .baselines import per_task_meta_loss
from .timing import seconds_per_call, tf32

N_WAY, N_SHOT, N_QUERY = 5, 1, 15
_OMNIGLOT = maml_paper_settings("omniglot", N_WAY, N_SHOT)
_MINI = maml_paper_settings("miniimagenet", N_WAY, N_SHOT)
#: The benchmark's settings: the paper's (:data:`~fslearn.training.presets.MAML_PAPER`) on
#: images of Omniglot's and miniImageNet's shapes, and Omniglot's with 5 inner steps.
MAML_SETTINGS = {
    "omniglot-1": dict(
        name="Omniglot Conv4-64 28px", image_shape=(1, 28, 28), n_classes=964, **_OMNIGLOT
    ),
    "omniglot-5": dict(
        name="Omniglot Conv4-64 28px",
        image_shape=(1, 28, 28),
        n_classes=964,
        **{**_OMNIGLOT, "inner_steps": 5},
    ),
    "miniimagenet-5": dict(
        name="miniImageNet Conv4-32 84px", image_shape=(3, 84, 84), n_classes=64, **_MINI
    ),
}
# Synthetic classes have Omniglot's 20 images each: sampling cost hardly depends on
# it, and it keeps miniImageNet's data small.
IMAGES_PER_CLASS = 20
BASELINE, EAGER, COMPILED = "per-task loop (baseline)", "fslearn eager (vmap)", "fslearn compiled"
#: The columns of :func:`maml_speed`'s table: ``(key, header, format)``.
MAML_COLUMNS = [
    ("setting", "setting", "{}"),
    ("implementation", "implementation", "{}"),
    ("inner_steps", "steps", "{}"),
    ("meta_iterations_per_s", "meta-it/s", "{:.2f}"),
    ("ms_per_iteration", "ms/it", "{:.1f}"),
    ("first_iteration_s", "1st it (s)", "{:.1f}"),
    ("peak_memory_mb", "peak MB", "{:,.0f}"),
    ("speedup", "speed-up", "{:.1f}×"),
]


def _synthetic(spec: dict, device: torch.device) -> FewShotDataset:
    """Random uint8 images with the setting's shape, drawn on the CPU so every device sees the
    same data."""
    generator = torch.Generator().manual_seed(0)
    shape = (spec["n_classes"], IMAGES_PER_CLASS, *spec["image_shape"])
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    names = [f"class{i:04d}" for i in range(spec["n_classes"])]
    return FewShotDataset(images, names, ["synthetic"] * len(names), spec["name"]).to(device)


def _meta_iteration(implementation: str, spec: dict, dataset: FewShotDataset, meta_batch: int):
    """A function running one meta-iteration: sample tasks, meta-loss, backward, Adam step."""
    device = dataset.device
    model = maml_classifier(N_WAY, spec["image_shape"], spec["hidden_channels"], seed=0).to(device)
    sampler = EpisodeSampler(dataset, N_WAY, N_SHOT, N_QUERY, seed=0, rotate=spec["rotate"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    if implementation == BASELINE:

        def loss_backward(tasks):  # per_task_meta_loss calls backward task by task itself
            per_task_meta_loss(
                model,
                tasks.support_x,
                tasks.support_y,
                tasks.query_x,
                tasks.query_y,
                inner_lr=spec["inner_lr"],
                steps=spec["inner_steps"],
            )
    else:
        learner = MAML(
            model, inner_lr=spec["inner_lr"], inner_steps=spec["inner_steps"], strategy="vmap"
        )
        meta_loss = learner.meta_loss
        if implementation == COMPILED:
            # forget earlier compilations, so the first iteration pays in full
            torch.compiler.reset()
            meta_loss = torch.compile(
                meta_loss, mode="reduce-overhead" if device.type == "cuda" else "default"
            )

        def loss_backward(tasks):
            meta_loss(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)[0].backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_backward(sampler.sample_tasks(meta_batch))
        optimizer.step()

    return step


def _time_one(
    setting: str,
    implementation: str,
    spec: dict,
    dataset: FewShotDataset,
    meta_batch: int,
    iterations: int,
) -> dict:
    """One row (without ``speedup``): the first iteration timed alone, untimed warm-ups, then
    ``iterations`` timed."""
    device = dataset.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = _meta_iteration(implementation, spec, dataset, meta_batch)
    first = seconds_per_call(step, device, 1)
    # CUDA graph trees record on the second call and replay from the third; the CPU needs one
    # warm-up.
    for _ in range(2 if device.type == "cuda" else 1):
        step()
    seconds = seconds_per_call(step, device, iterations)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return dict(
        setting=setting,
        implementation=implementation,
        inner_steps=spec["inner_steps"],
        meta_iterations_per_s=round(1 / seconds, 4),
        ms_per_iteration=round(seconds * 1e3, 2),
        first_iteration_s=round(first, 3),
        peak_memory_mb=None if peak is None else round(peak, 1),
    )


def maml_speed(
    device=None,
    *,
    settings=("omniglot-1", "omniglot-5", "miniimagenet-5"),
    iterations: int | None = None,
    meta_batch: int | None = None,
    compile: bool = True,
    baseline: bool = True,
    progress: bool = False,
) -> list[dict]:
    """Meta-iterations per second of second-order MAML, 5-way 1-shot 15-query, on synthetic data.

    A meta-iteration samples a meta-batch with an :class:`~fslearn.EpisodeSampler` on
    ``device``, computes the meta-loss, back-propagates and takes an Adam step (fused
    on CUDA), for every implementation alike. The first iteration is timed on its own
    (it includes compilation), then warm-up iterations run untimed (two on CUDA, one
    on CPU), then ``iterations`` timed ones.

    Args:
        settings: keys of :data:`~fslearn.bench.MAML_SETTINGS`.
        iterations: timed meta-iterations (default 50 on CUDA, 5 on CPU).
        meta_batch: overrides every setting's meta-batch (e.g. for a quick CPU run).
        compile: also time ``torch.compile(learner.meta_loss)`` as ``train_maml(compile=True)``
            does.
        baseline: also time the per-task loop, :func:`~fslearn.bench.per_task_meta_loss`.

    Returns:
        One row per setting and implementation, a dict with ``setting``, ``implementation``,
        ``inner_steps``, ``meta_iterations_per_s``, ``ms_per_iteration``,
        ``first_iteration_s``, ``peak_memory_mb`` (``None`` off CUDA) and ``speedup``
        over the setting's first row (the baseline, when it runs).
    """
    device = default_device() if device is None else torch.device(device)
    unknown = [s for s in settings if s not in MAML_SETTINGS]
    if unknown or not settings:
        raise ValueError(f"unknown MAML setting(s) {unknown}; choose from {list(MAML_SETTINGS)}")
    if iterations is None:
        iterations = 50 if device.type == "cuda" else 5
    iterations = check_positive_int("iterations", iterations)
    if meta_batch is not None:
        meta_batch = check_positive_int("meta_batch", meta_batch)
    implementations = [BASELINE] * baseline + [EAGER] + [COMPILED] * compile
    rows, bar = [], progress_bar(len(settings) * len(implementations), "MAML speed", progress)
    with tf32(device):
        for key in settings:
            spec = MAML_SETTINGS[key]
            batch = spec["meta_batch"] if meta_batch is None else meta_batch
            dataset = _synthetic(spec, device)
            name, first_row = f"{spec['name']} {N_WAY}w{N_SHOT}s mb{batch}", len(rows)
            for implementation in implementations:
                bar.set_postfix_str(f"{key}: {implementation}")
                rows.append(_time_one(name, implementation, spec, dataset, batch, iterations))
                rows[-1]["speedup"] = round(
                    rows[first_row]["ms_per_iteration"] / rows[-1]["ms_per_iteration"], 2
                )
                bar.update()
    bar.close()
    return rows
