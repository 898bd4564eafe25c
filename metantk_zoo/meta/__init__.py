"""Gradient-based meta-learning (MAML, FO-MAML, HF-MAML, ANIL, FO-B-MAML): meta-gradients as pure functions,
normalised SGD, episode batching and the episodic trainer.
"""

from __future__ import annotations

from .trainer import (
    METHODS,
    PRESETS,
    SNGDM_OUTER_LR,
    MetaConfig,
    MetaStep,
    NormalizedSGD,
    adapt,
    adapted_logits,
    head_names,
    meta_gradient,
    meta_presets,
    meta_step,
)

__all__ = [
    "METHODS",
    "PRESETS",
    "SNGDM_OUTER_LR",
    "MetaConfig",
    "MetaStep",
    "NormalizedSGD",
    "adapt",
    "head_names",
    "meta_gradient",
    "meta_presets",
    "meta_step",
    "adapted_logits",
]
