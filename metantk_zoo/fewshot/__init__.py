"""Few-shot evaluation: frozen features, the batched logistic-regression probe, and protocols that turn
episodes into an accuracy with its 95% confidence interval.
"""

from __future__ import annotations

from .evaluate import (
    PROTOCOLS,
    Episodes,
    EvalConfig,
    EvalResult,
    ImageSource,
    episode_accuracies,
    evaluate_features,
    evaluate_fewshot,
    mean_confidence_interval,
    protocol_config,
    save_eval_result,
)
from .features import extract_features, pre_logits_fn
from .probe import fit_logistic_regression, probe_predict

__all__ = [
    "EvalConfig",
    "PROTOCOLS",
    "protocol_config",
    "Episodes",
    "ImageSource",
    "EvalResult",
    "pre_logits_fn",
    "extract_features",
    "fit_logistic_regression",
    "probe_predict",
    "episode_accuracies",
    "mean_confidence_interval",
    "evaluate_features",
    "evaluate_fewshot",
    "save_eval_result",
]
