"""fslearn: few-shot learning in PyTorch, and the library of the fslearn course book.

Chapters and users import the top level::

    import fslearn as fsl
    background = fsl.load_embedded("background")
"""

from .backbones import Classifier, Conv4, TaskBatchNorm2d, conv_block, seeded
from .data import FewShotDataset, to_float, with_rotations
from .device import default_device, model_device
from .datasets import DATASETS, load_dataset
from .embedded import load_embedded
from .episodes import Episode, EpisodeSampler, EpisodeSet
from .episodic import StepHistory, train_steps
from .evaluate import Accuracy, confidence_interval, evaluate
from .io import atomic_path, cache_dir
from .memory import activation_bytes
from .archives import extract_zip
from .omniglot import download_omniglot, load_omniglot, omniglot_split
from .checkpoint import Checkpoint, read_checkpoint
from .learners import build_learner, load_learner
from .recipes import train_maml, train_pretrained, train_protonet, train_siamese, train_triplet
from .maml import MAML, check_batch_norm, maml_classifier, per_task_meta_loss
from .adaptation import GradientLearner
from .finetune import FineTune
from .siamese import PairSampler, SiameseNet, contrastive_loss, max_per_class
from .triplet import NearestNeighbourLearner, PKSampler, mine_triplets, triplet_batch_loss, triplet_loss
from .runs import OneShotRun, download_runs, evaluate_runs, load_runs
from .miniimagenet import MINIIMAGENET_SPLIT_SIZES, load_miniimagenet
from .prototypes import NearestPrototype, ProtoNet, class_prototypes, cosine_similarity, squared_euclidean
from .plot import image_grid, plot_embeddings, plot_epochs, plot_history, project_2d, show_images
from .train import History, evaluate_classifier, fit, iterations_per_epoch

__version__ = "0.1.0"

__all__ = [
    "Accuracy",
    "Checkpoint",
    "Classifier",
    "Conv4",
    "DATASETS",
    "Episode",
    "EpisodeSampler",
    "EpisodeSet",
    "FewShotDataset",
    "FineTune",
    "GradientLearner",
    "History",
    "MAML",
    "MINIIMAGENET_SPLIT_SIZES",
    "NearestNeighbourLearner",
    "NearestPrototype",
    "OneShotRun",
    "PKSampler",
    "PairSampler",
    "ProtoNet",
    "SiameseNet",
    "StepHistory",
    "TaskBatchNorm2d",
    "activation_bytes",
    "atomic_path",
    "build_learner",
    "cache_dir",
    "check_batch_norm",
    "class_prototypes",
    "confidence_interval",
    "contrastive_loss",
    "conv_block",
    "cosine_similarity",
    "default_device",
    "download_omniglot",
    "download_runs",
    "evaluate",
    "evaluate_classifier",
    "evaluate_runs",
    "extract_zip",
    "fit",
    "image_grid",
    "iterations_per_epoch",
    "load_dataset",
    "load_embedded",
    "load_learner",
    "load_miniimagenet",
    "load_omniglot",
    "load_runs",
    "maml_classifier",
    "max_per_class",
    "mine_triplets",
    "model_device",
    "omniglot_split",
    "per_task_meta_loss",
    "plot_embeddings",
    "plot_epochs",
    "plot_history",
    "project_2d",
    "read_checkpoint",
    "seeded",
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
    "with_rotations",
]
