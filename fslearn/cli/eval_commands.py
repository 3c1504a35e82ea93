"""``fslearn eval`` and ``fslearn eval-runs``: a checkpoint's accuracy on fixed test episodes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..data.dataset import FewShotDataset
from ..data.lake_runs import load_runs
from ..distributed import SINGLE, World
from ..evaluation import batch_norm_mode, evaluate, evaluate_within_groups
from ..evaluation.groups import check_groups
from ..methods.adaptation import GradientLearner
from ..methods.one_shot_runs import evaluate_runs
from ..sampling.episode_set import EpisodeSet
from ..training.checkpoint_file import read_checkpoint
from ..training.specs import load_learner
from .support import UsageError, dataset_for, image_options, parse_device
from .test_time import as_tested, check_test_time, how_tested, test_fields


def _task_batch(learner) -> int | None:
    """Episodes to give ``learner`` at once: 50 for the learners that take task batches."""
    return 50 if isinstance(learner, GradientLearner) else None


def _learner(checkpoint, test_bn: str | None, *, n_way: int, image_shape, device):
    """The checkpoint's learner, its test-time batch norm set to ``test_bn`` (None: its own)."""
    learner = load_learner(checkpoint, n_way=n_way, image_shape=image_shape, device=device)
    if test_bn is None:
        return learner
    if hasattr(learner, "test_bn"):
        try:
            learner.test_bn = test_bn
        except ValueError as error:
            raise UsageError(f"--test-bn {test_bn}: {error}") from None
    elif batch_norm_mode(learner) != test_bn:
        method = read_checkpoint(checkpoint)["spec"]["method"]
        raise UsageError(
            f"--test-bn {test_bn}: {checkpoint} holds a {method} learner "
            f"({type(learner).__name__}), which embeds test images with "
            f"{batch_norm_mode(learner) or 'no batch norm'} statistics only; --test-bn applies "
            f"to maml, fomaml, anil and pretrain learners: leave it out"
        )
    return learner


def test_checkpoint(
    checkpoint: Path,
    *,
    test: FewShotDataset,
    dataset: str,
    n_way: int,
    n_shot: int,
    n_query: int,
    episodes: int,
    seed: int,
    device,
    progress: bool,
    world: World = SINGLE,
    test_views: int = 1,
    test_bn: str | None = None,
    transductive_steps: int = 0,
) -> dict:
    """Accuracy ± 95% CI of a checkpoint's learner on fixed, seeded episodes of ``test``, the
    test split of ``dataset`` (shared by ``world``'s processes), with ``test_views`` views of
    every image (:func:`~fslearn.with_test_views`; 1: the image alone), its test-time
    batch norm set to ``test_bn`` (None: the learner's own) and its prototypes refined with
    the queries in ``transductive_steps`` steps (0: none)."""
    learner = _learner(
        checkpoint, test_bn, n_way=n_way, image_shape=test.image_shape, device=device
    )
    learner = as_tested(
        learner,
        checkpoint,
        test_views=test_views,
        transductive_steps=transductive_steps,
        image_shape=test.image_shape,
        n_images=n_way * max(n_shot, n_query),  # the support and the queries embed apart
        device=device,
    )
    episode_set = EpisodeSet(test, n_way, n_shot, n_query, episodes, seed=seed)
    start = time.perf_counter()
    accuracy = evaluate(
        learner,
        episode_set,
        batch_size=_task_batch(learner),
        progress=progress,
        desc="testing",
        world=world,
    )
    return {
        "checkpoint": str(checkpoint),
        "method": read_checkpoint(checkpoint)["spec"]["method"],
        "dataset": dataset,
        "split": "test",
        "n_way": n_way,
        "n_shot": n_shot,
        "n_query": n_query,
        "episodes": episodes,
        "seed": seed,
        **test_fields(test_views, transductive_steps),
        "accuracy": accuracy.mean,
        "ci95": accuracy.ci95,
        "test_bn": accuracy.test_bn,
        "seconds": time.perf_counter() - start,
    }


def describe(result: dict) -> str:
    views = how_tested(result.get("test_views", 1), result.get("transductive_steps", 0))
    bn = f" (batch norm: {result['test_bn']})" if result.get("test_bn") else ""
    return (
        f"{result['dataset']} test, {result['n_way']}-way {result['n_shot']}-shot, "
        f"{result['episodes']} episodes "
        f"of {result['n_query']} queries per class{views}: {100 * result['accuracy']:.2f} ± "
        f"{100 * result['ci95']:.2f}%{bn}"
    )


def _learner_checkpoint(path) -> dict:
    """The checkpoint at ``path``, checked to hold a learner that can be rebuilt from its spec."""
    if Path(path).is_dir():
        raise UsageError(
            f"{path} is a folder: pass the checkpoint in it, e.g. {path}/checkpoint.pt"
        )
    payload = read_checkpoint(path)
    spec = payload["spec"]
    # A spec names its backbone, or it is Conv4 of a width.
    network = "backbone" if "backbone" in spec else "hidden_channels"
    missing = [f for f in ("method", "image_shape", network) if f not in spec]
    if missing:
        raise UsageError(
            f"{path} holds no learner to evaluate: its spec lacks {missing} (a training loop "
            "run without a recipe saves none); use a checkpoint of fslearn train or a recipe"
        )
    return payload


def evaluate_command(args) -> int:
    device = parse_device(args.device)
    payload = _learner_checkpoint(args.checkpoint)
    config = payload["config"]
    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        raise UsageError(f"{args.checkpoint} does not record its dataset: pass --dataset")
    progress = not args.json and not args.no_progress
    test = dataset_for(
        dataset,
        "test",
        method=config.get("method"),
        root=args.data_root,
        device=device,
        progress=progress,
        **image_options(args, dataset, payload["spec"]["image_shape"]),
    )
    if args.within_alphabet:
        try:
            check_groups(test)
        except ValueError:
            raise UsageError(
                f"--within-alphabet: {dataset} has no alphabets (the {test.n_classes} classes "
                f"of its test split are in one group, {test.groups[0]!r}), so its accuracy "
                "within one alphabet would be its ordinary accuracy; leave --within-alphabet "
                "out, or test a character set (omniglot, omniglot-small, embedded)"
            ) from None
        return _within_alphabet(args, test, dataset, device, progress)
    result = test_checkpoint(
        Path(args.checkpoint),
        test=test,
        dataset=dataset,
        n_way=args.n_way,
        n_shot=args.n_shot,
        n_query=args.n_query,
        episodes=args.episodes,
        seed=args.seed,
        device=device,
        progress=progress,
        test_views=args.test_views,
        test_bn=args.test_bn,
        transductive_steps=args.transductive_steps,
    )
    print(json.dumps(result, indent=2) if args.json else describe(result))
    return 0


def _within_alphabet(args, test: FewShotDataset, dataset: str, device, progress: bool) -> int:
    """``fslearn eval --within-alphabet``: every episode's classes from one alphabet."""
    learner = _learner(
        args.checkpoint, args.test_bn, n_way=args.n_way, image_shape=test.image_shape, device=device
    )
    learner = as_tested(
        learner,
        args.checkpoint,
        test_views=args.test_views,
        transductive_steps=args.transductive_steps,
        image_shape=test.image_shape,
        n_images=args.n_way * max(args.n_shot, args.n_query),
        device=device,
    )
    start = time.perf_counter()
    scores = evaluate_within_groups(
        learner,
        test,
        args.n_way,
        args.n_shot,
        args.n_query,
        args.episodes,
        seed=args.seed,
        batch_size=_task_batch(learner),
        progress=progress,
    )
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": dataset,
        "split": "test",
        "within": "alphabet",
        **{k: getattr(args, k) for k in ("n_way", "n_shot", "n_query", "episodes", "seed")},
        **test_fields(args.test_views, args.transductive_steps),
        "accuracy": scores.overall.mean,
        "ci95": scores.overall.ci95,
        "test_bn": scores.overall.test_bn,
        "alphabets": {
            name: {"accuracy": a.mean, "ci95": a.ci95} for name, a in scores.groups.items()
        },
        "left_out": scores.left_out,
        "seconds": time.perf_counter() - start,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    setting = f"{args.n_way}-way {args.n_shot}-shot, {args.episodes} episodes per alphabet"
    setting += how_tested(args.test_views, args.transductive_steps)
    for name, accuracy in scores.groups.items():
        print(f"{name}: {accuracy}")
    for name, size in scores.left_out.items():
        print(f"{name}: left out ({size} characters, fewer than {args.n_way})")
    print(f"{dataset} test within one alphabet, {setting}: {scores.overall}")
    return 0


def eval_runs(args) -> int:
    device = parse_device(args.device)
    spec = _learner_checkpoint(args.checkpoint)["spec"]
    runs = load_runs(args.runs, image_size=spec["image_shape"][-1], progress=False)
    learner = load_learner(
        args.checkpoint, n_way=20, image_shape=(1, *runs[0].support_x.shape[-2:]), device=device
    )
    check_test_time(  # evaluate_runs then wraps the learner so
        learner,
        args.checkpoint,
        test_views=args.test_views,
        transductive_steps=args.transductive_steps,
        image_shape=(1, *runs[0].support_x.shape[-2:]),
        n_images=20,  # the 20 training images, then the 20 test images, embed apart
        device=device,
    )
    scores = evaluate_runs(
        runs,
        learner=learner,
        test_views=args.test_views,
        transductive_steps=args.transductive_steps,
    )
    if args.json:
        print(
            json.dumps(
                {"checkpoint": str(args.checkpoint), "runs": [r.name for r in runs], **scores},
                indent=2,
            )
        )
        return 0
    for run, error in zip(runs, scores["errors"], strict=True):
        print(f"{run.name}: {error:5.1f}% error")
    views = how_tested(args.test_views, args.transductive_steps)
    print(
        f"mean error over {len(runs)} runs{views}: {scores['mean_error']:.2f}% (Lake et al. "
        "2015: people 4.5%, BPL 3.3%)"
    )
    return 0
