"""Gradient-based meta-learning (MAML, FO-MAML, HF-MAML, ANIL, FO-B-MAML): meta-gradients as pure functions,
normalised SGD, episode batching and the episodic trainer.
"""

from __future__ import annotations

from .algorithms import (
    Episode,
    MetaStep,
    adapt,
    adapted_accuracies,
    adapted_logits,
    head_names,
    meta_gradient,
    meta_step,
)
from .config import METHODS, PRESETS, SNGDM_OUTER_LR, MetaConfig, make_meta_config, meta_presets
from .optim import NormalizedSGD, make_outer_optimizer
from .trainer import EpisodeFn, train_meta

__all__ = [
    "METHODS",
    "PRESETS",
    "SNGDM_OUTER_LR",
    "MetaConfig",
    "make_meta_config",
    "meta_presets",
    "Episode",
    "MetaStep",
    "adapt",
    "head_names",
    "meta_gradient",
    "meta_step",
    "adapted_logits",
    "adapted_accuracies",
    "NormalizedSGD",
    "make_outer_optimizer",
    "EpisodeFn",
    "train_meta",
]
