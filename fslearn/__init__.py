"""fslearn: few-shot learning in PyTorch, and the library of the fslearn course book.

Chapters and users import the top level::

    import fslearn as fsl
    background = fsl.load_embedded("background")

The package is laid out as the pipeline the book teaches, one folder per stage:
``data/`` (datasets) → ``sampling/`` (episodes, pairs, P×K batches) → ``models/``
(Conv4) → ``methods/`` (learners and their losses) → ``training/`` (the loop,
checkpoints, recipes) → ``evaluation`` (accuracy ± 95% CI); ``plot`` and ``cli`` read
from all of them, ``common`` serves all of them, ``bench`` times them, and ``book`` holds
what the chapters share (their set-up line, and ``fslearn.book.glue`` for the numbers their
prose quotes).
"""

from .book import ChapterSetup, setup_chapter
from .common import atomic_path, cache_dir, default_device, model_device, seeded
from .data.archives import extract_zip
from .data.catalog import DATASETS, load_dataset
from .data.dataset import FewShotDataset, to_float
from .data.embedded import load_embedded
from .data.folder import load_folder
from .data.image_files import ImageFolderError
from .data.lake_runs import OneShotRun, download_runs, load_runs
from .data.miniimagenet import MINIIMAGENET_SPLIT_SIZES, load_miniimagenet
from .data.omniglot import download_omniglot, load_omniglot
from .data.omniglot_splits import omniglot_split
from .data.split_files import load_split_file
from .data.symmetries import with_reflections, with_rotations
from .data.torch_datasets import from_dataset
from .evaluation import (
    Accuracy,
    GroupAccuracy,
    confidence_interval,
    evaluate,
    evaluate_classifier,
    evaluate_within_groups,
    paired_difference,
    separation,
)
from .methods.adaptation import GradientLearner
from .methods.baseline_pp import BaselinePP, CosineHead
from .methods.finetune import FineTune
from .methods.maml import MAML, check_batch_norm, maml_classifier
from .methods.metric import class_prototypes, cosine_similarity, max_per_class, squared_euclidean
from .methods.nearest_neighbour import NearestNeighbourLearner
from .methods.one_shot_runs import evaluate_runs
from .methods.prototypes import NearestPrototype, ProtoNet
from .methods.siamese import SiameseNet, contrastive_loss
from .methods.simpleshot import SimpleShot, mean_embedding
from .methods.transductive import TransductivePrototypes, with_transductive_prototypes
from .methods.triplet import mine_triplets, triplet_batch_loss, triplet_loss
from .methods.views import AveragedViews, with_test_views
from .models.classifier import Classifier
from .models.conv4 import Conv4, conv_block
from .models.registry import (
    UnknownBackboneError,
    backbone_names,
    build_backbone,
    register_backbone,
)
from .models.resnet12 import ResNet12
from .models.task_batch_norm import TaskBatchNorm2d
from .plot import (
    image_grid,
    plot_embeddings,
    plot_episode,
    plot_epochs,
    plot_history,
    project_2d,
    show_images,
)
from .sampling.augment import random_affine
from .sampling.episode_set import EpisodeSet
from .sampling.episodes import Episode, EpisodeSampler
from .sampling.normalize import Normalize, channel_stats
from .sampling.pairs import PairSampler
from .sampling.pk_batches import PKSampler
from .sampling.strokes import StrokeWidth, random_stroke_width
from .sampling.transforms import Augment, color_jitter, random_flip, random_resized_crop
from .training.batches import History, fit, iterations_per_epoch
from .training.checkpoint import Checkpoint
from .training.checkpoint_file import DamagedCheckpointError, read_checkpoint
from .training.gradient_recipes import train_maml, train_pretrained
from .training.memory import activation_bytes
from .training.metric_recipes import train_protonet, train_siamese
from .training.specs import build_learner, load_learner
from .training.steps import StepHistory, train_steps
from .training.triplet_recipe import train_triplet

__version__ = "0.1.0"

__all__ = [
    "Accuracy",
    "Augment",
    "AveragedViews",
    "BaselinePP",
    "Checkpoint",
    "ChapterSetup",
    "Classifier",
    "Conv4",
    "CosineHead",
    "DATASETS",
    "Episode",
    "EpisodeSampler",
    "EpisodeSet",
    "FewShotDataset",
    "FineTune",
    "GroupAccuracy",
    "GradientLearner",
    "History",
    "ImageFolderError",
    "MAML",
    "MINIIMAGENET_SPLIT_SIZES",
    "Normalize",
    "NearestNeighbourLearner",
    "NearestPrototype",
    "OneShotRun",
    "PKSampler",
    "PairSampler",
    "ProtoNet",
    "ResNet12",
    "SiameseNet",
    "SimpleShot",
    "StepHistory",
    "StrokeWidth",
    "TaskBatchNorm2d",
    "TransductivePrototypes",
    "UnknownBackboneError",
    "activation_bytes",
    "atomic_path",
    "backbone_names",
    "build_backbone",
    "build_learner",
    "cache_dir",
    "check_batch_norm",
    "channel_stats",
    "class_prototypes",
    "color_jitter",
    "confidence_interval",
    "contrastive_loss",
    "conv_block",
    "cosine_similarity",
    "default_device",
    "download_omniglot",
    "download_runs",
    "evaluate",
    "evaluate_classifier",
    "evaluate_within_groups",
    "evaluate_runs",
    "extract_zip",
    "fit",
    "from_dataset",
    "image_grid",
    "iterations_per_epoch",
    "load_dataset",
    "load_embedded",
    "load_folder",
    "load_learner",
    "load_miniimagenet",
    "load_omniglot",
    "load_runs",
    "load_split_file",
    "maml_classifier",
    "mean_embedding",
    "max_per_class",
    "mine_triplets",
    "model_device",
    "omniglot_split",
    "paired_difference",
    "plot_embeddings",
    "plot_episode",
    "plot_epochs",
    "plot_history",
    "project_2d",
    "separation",
    "random_affine",
    "random_stroke_width",
    "register_backbone",
    "random_flip",
    "random_resized_crop",
    "read_checkpoint",
    "DamagedCheckpointError",
    "seeded",
    "setup_chapter",
    "show_images",
    "squared_euclidean",
    "to_float",
    "train_maml",
    "train_pretrained",
    "train_protonet",
    "train_siamese",
    "train_steps",
    "train_triplet",
    "triplet_batch_loss",
    "triplet_loss",
    "with_reflections",
    "with_rotations",
    "with_test_views",
    "with_transductive_prototypes",
]


def __getattr__(name: str):
    # glue serves the book's chapters, not users: it left the top level in 0.2.
    if name == "glue":
        from .book import glue
        from .deprecation import warn_renamed

        warn_renamed("fslearn.glue", "fslearn.book.glue (from fslearn.book import glue)")
        return glue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
