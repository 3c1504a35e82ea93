"""Speed benchmarks of episode sampling and of MAML, each against a baseline timed in the same run.

Ratios against a baseline measured in the same process mean something on a noisy
or shared machine, where absolute times do not. Two benchmarks:

* :func:`sampler_speed`: :class:`~fslearn.EpisodeSampler` against the DataLoader +
  task batch-sampler pipeline of easyfsl and torchmeta.
* :func:`maml_speed`: meta-iterations per second of second-order MAML on the paper's
  Omniglot and miniImageNet settings, for the per-task loop most libraries run
  (:func:`~fslearn.per_task_meta_loss`), fslearn's batched :class:`~fslearn.MAML`
  in eager mode, and the same under ``torch.compile`` as ``train_maml(compile=True)`` runs it.

``benchmarks/bench_sampler.py``, ``benchmarks/bench_maml.py`` and ``fslearn bench`` print
their rows with :func:`format_table`; :func:`results_record` is the results-file format, :func:`write_results`
writes it, and :func:`recorded_maml_speed` reads the measurement that ships with the package.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shlex
import time
from importlib import resources

import torch
from torch.utils.data import DataLoader, TensorDataset

from .data import FewShotDataset
from .device import default_device
from .embedded import load_embedded
from .io import atomic_path
from .episodes import EpisodeSampler
from .maml import MAML, maml_classifier, per_task_meta_loss
from .train import check_positive_int, progress_bar

N_WAY, N_SHOT, N_QUERY = 5, 1, 15
# The paper's settings (Finn et al. 2017). Synthetic classes have Omniglot's 20 images
# each: sampling cost hardly depends on it, and it keeps miniImageNet's data small.
_OMNIGLOT = dict(name="Omniglot Conv4-64 28px", image_shape=(1, 28, 28), n_classes=964, hidden_channels=64,
                 meta_batch=32, inner_lr=0.4, rotate=True)
MAML_SETTINGS = {
    "omniglot-1": {**_OMNIGLOT, "inner_steps": 1},
    "omniglot-5": {**_OMNIGLOT, "inner_steps": 5},
    "miniimagenet-5": dict(name="miniImageNet Conv4-32 84px", image_shape=(3, 84, 84), n_classes=64,
                           hidden_channels=32, meta_batch=4, inner_steps=5, inner_lr=0.01, rotate=False),
}
IMAGES_PER_CLASS = 20
# Inside the package, not beside it, so that chapters 7 and 8 find it in a pip install and in Colab.
RESULTS_FILE = "results/maml_speed.json"
BASELINE, EAGER, COMPILED = "per-task loop (baseline)", "fslearn eager (vmap)", "fslearn compiled"

SAMPLER_COLUMNS = [
    ("setting", "episode shape", "{}"), ("fslearn_ms", "fslearn ms/batch", "{:.3f}"),
    ("dataloader_ms", "DataLoader ms/batch", "{:.2f}"), ("episodes_per_s", "episodes/s (fslearn)", "{:,.0f}"),
    ("speedup", "speed-up", "{:.1f}×"),
]
MAML_COLUMNS = [
    ("setting", "setting", "{}"), ("implementation", "implementation", "{}"), ("inner_steps", "steps", "{}"),
    ("meta_iterations_per_s", "meta-it/s", "{:.2f}"), ("ms_per_iteration", "ms/it", "{:.1f}"),
    ("first_iteration_s", "1st it (s)", "{:.1f}"), ("peak_memory_mb", "peak MB", "{:,.0f}"),
    ("speedup", "speed-up", "{:.1f}×"),
]


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without this the clock stops before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    """The GPU's name, or ``"CPU, N threads"``."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def _seconds_per_call(fn, device: torch.device, repeats: int) -> float:
    """Mean wall-clock seconds of ``repeats`` calls of ``fn``, including the device's queued work."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _episode_indices(dataset: FewShotDataset, n_way: int, n_items: int, seed: int):
    """Endless flat index lists of N-way (K+Q)-shot episodes: easyfsl's TaskSampler, as a batch sampler."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        classes = torch.randperm(dataset.n_classes, generator=generator)[:n_way]
        yield [
            int(c) * dataset.n_per_class + int(i)
            for c in classes
            for i in torch.randperm(dataset.n_per_class, generator=generator)[:n_items]
        ]


def _collate(n_way: int, n_shot: int):
    """Stack one episode's images, remap its labels to 0..n_way-1 and split support from query."""

    def collate(batch):
        images = torch.stack([image for image, _ in batch]).float().div_(255)
        _, labels = torch.unique(torch.stack([label for _, label in batch]), return_inverse=True)
        x, y = images.view(n_way, -1, *images.shape[1:]), labels.view(n_way, -1)
        support, query = (x[:, :n_shot], y[:, :n_shot]), (x[:, n_shot:], y[:, n_shot:])
        return support[0].flatten(0, 1), support[1].flatten(), query[0].flatten(0, 1), query[1].flatten()

    return collate


def sampler_speed(device=None, *, n_tasks: int = 32, repeats: int = 20, progress: bool = False) -> list[dict]:
    """Milliseconds per batch of ``n_tasks`` episodes: EpisodeSampler vs DataLoader + TaskSampler.

    Both draw from the embedded background set (964 classes). fslearn samples with
    index arithmetic on ``device``, where the whole set lives; the baseline, like
    easyfsl and torchmeta, indexes single images, collates each episode on the host
    and copies the stacked batch to ``device``.

    Returns:
        One row per episode shape, a dict with ``setting``, ``fslearn_ms``, ``dataloader_ms``,
        ``episodes_per_s`` (fslearn) and ``speedup``.
    """
    device = default_device() if device is None else torch.device(device)
    check_positive_int("n_tasks", n_tasks)
    check_positive_int("repeats", repeats)
    dataset = load_embedded("background", progress=False)
    on_device, (images, labels) = dataset.to(device), dataset.flat(float_images=False)
    shapes = [(5, 1, 15), (5, 5, 15), (20, 1, 15), (20, 5, 5)]
    rows, bar = [], progress_bar(len(shapes), "sampler speed", progress)
    for n_way, n_shot, n_query in shapes:
        sampler = EpisodeSampler(on_device, n_way, n_shot, n_query, seed=0)
        sampler.sample(n_tasks)  # warm-up: allocations, kernel launches
        ours = _seconds_per_call(lambda: sampler.sample(n_tasks), device, repeats)
        episodes = _episode_indices(dataset, n_way, n_shot + n_query, seed=0)
        loader = DataLoader(TensorDataset(images, labels), batch_sampler=episodes, collate_fn=_collate(n_way, n_shot))
        batches = iter(loader)
        next(batches)

        def baseline_batch():
            tasks = [next(batches) for _ in range(n_tasks)]
            return [torch.stack(part).to(device, non_blocking=True) for part in zip(*tasks)]

        base = _seconds_per_call(baseline_batch, device, repeats)
        rows.append(dict(setting=f"{n_way}-way {n_shot}-shot {n_query}-query", fslearn_ms=ours * 1e3,
                         dataloader_ms=base * 1e3, episodes_per_s=n_tasks / ours, speedup=base / ours))
        bar.update()
    bar.close()
    return rows


def _synthetic(spec: dict, device: torch.device) -> FewShotDataset:
    """Random uint8 images with the setting's shape, drawn on the CPU so every device sees the same data."""
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
            per_task_meta_loss(model, tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y,
                               inner_lr=spec["inner_lr"], steps=spec["inner_steps"])
    else:
        learner = MAML(model, inner_lr=spec["inner_lr"], inner_steps=spec["inner_steps"])
        meta_loss = learner.meta_loss
        if implementation == COMPILED:
            torch.compiler.reset()  # forget earlier compilations, so the first iteration pays in full
            meta_loss = torch.compile(meta_loss, mode="reduce-overhead" if device.type == "cuda" else "default")

        def loss_backward(tasks):
            meta_loss(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)[0].backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_backward(sampler.sample(meta_batch))
        optimizer.step()

    return step


@contextlib.contextmanager
def _tf32(device: torch.device):
    """TF32 matmuls on a GPU (cuDNN convolutions use TF32 by default), as the figures of the design notes."""
    saved = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def _time_one(setting: str, implementation: str, spec: dict, dataset: FewShotDataset, meta_batch: int,
              iterations: int) -> dict:
    """One row (without ``speedup``): the first iteration timed alone, untimed warm-ups, then ``iterations`` timed."""
    device = dataset.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = _meta_iteration(implementation, spec, dataset, meta_batch)
    first = _seconds_per_call(step, device, 1)
    # CUDA graph trees record on the second call and replay from the third; the CPU needs one warm-up.
    for _ in range(2 if device.type == "cuda" else 1):
        step()
    seconds = _seconds_per_call(step, device, iterations)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return dict(setting=setting, implementation=implementation, inner_steps=spec["inner_steps"],
                meta_iterations_per_s=round(1 / seconds, 4), ms_per_iteration=round(seconds * 1e3, 2),
                first_iteration_s=round(first, 3), peak_memory_mb=None if peak is None else round(peak, 1))


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
        settings: keys of :data:`~fslearn.speed.MAML_SETTINGS`.
        iterations: timed meta-iterations (default 50 on CUDA, 5 on CPU).
        meta_batch: overrides every setting's meta-batch (e.g. for a quick CPU run).
        compile: also time ``torch.compile(learner.meta_loss)`` as ``train_maml(compile=True)`` does.
        baseline: also time the per-task loop, :func:`~fslearn.per_task_meta_loss`.

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
    check_positive_int("iterations", iterations)
    if meta_batch is not None:
        check_positive_int("meta_batch", meta_batch)
    implementations = [BASELINE] * baseline + [EAGER] + [COMPILED] * compile
    rows, bar = [], progress_bar(len(settings) * len(implementations), "MAML speed", progress)
    with _tf32(device):
        for key in settings:
            spec = MAML_SETTINGS[key]
            batch = spec["meta_batch"] if meta_batch is None else meta_batch
            dataset = _synthetic(spec, device)
            name, first_row = f"{spec['name']} {N_WAY}w{N_SHOT}s mb{batch}", len(rows)
            for implementation in implementations:
                bar.set_postfix_str(f"{key}: {implementation}")
                rows.append(_time_one(name, implementation, spec, dataset, batch, iterations))
                rows[-1]["speedup"] = round(rows[first_row]["ms_per_iteration"] / rows[-1]["ms_per_iteration"], 2)
                bar.update()
    bar.close()
    return rows


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``: one column per ``(key, header, format string)``; ``None`` prints as "—"."""
    headers = [header for _, header, _ in columns]
    cells = [["—" if row[key] is None else fmt.format(row[key]) for key, _, fmt in columns] for row in rows]
    widths = [max([len(header)] + [len(line[i]) for line in cells]) for i, header in enumerate(headers)]
    # Text columns read best left-aligned, numbers right-aligned so their digits line up.
    left = [bool(rows) and isinstance(rows[0][key], str) for key, _, _ in columns]

    def line(values):
        return "| " + " | ".join(v.ljust(w) if l else v.rjust(w) for v, w, l in zip(values, widths, left)) + " |"

    rule = "|" + "|".join("-" * (w + 2) if l else "-" * (w + 1) + ":" for w, l in zip(widths, left)) + "|"
    return "\n".join([line(headers), rule, *map(line, cells)])


def command_line(argv: list[str]) -> str:
    """``argv`` as one shell line without ``--notes TEXT``: the command that reproduces the rows.

    The notes are stored in the record apart from the command, so they are left out of it.
    """
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--notes":
            skip = True
        elif not arg.startswith("--notes="):
            kept.append(arg)
    return shlex.join(kept)


def results_record(rows: list[dict], *, command: str, device, notes: str) -> dict:
    """The results file's content: the rows with the command, date, device and torch version behind them."""
    return {"command": command, "date": datetime.date.today().isoformat(), "device": device_name(device),
            "torch": torch.__version__, "notes": notes, "rows": rows}


def write_results(path, rows: list[dict], *, argv: list[str], device, notes: str) -> dict:
    """Write :func:`results_record` of ``rows`` to ``path`` as JSON, atomically; return the record.

    ``argv`` is the command that produced the rows, as :func:`command_line` records it.
    """
    record = results_record(rows, command=command_line(argv), device=device, notes=notes)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def recorded_maml_speed() -> dict:
    """The MAML speed measurement shipped with fslearn, as :func:`results_record` wrote it.

    It lives in ``fslearn/results/maml_speed.json``; chapters 7 and 8 print it. Replace it with
    a measurement of your own GPU by
    ``python benchmarks/bench_maml.py --device cuda --out fslearn/results/maml_speed.json``.
    """
    return json.loads(resources.files(__package__).joinpath(RESULTS_FILE).read_text(encoding="utf-8"))
