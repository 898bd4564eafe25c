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
    extract_features,
    fit_logistic_regression,
    mean_confidence_interval,
    pre_logits_fn,
    probe_predict,
    protocol_config,
    save_eval_result,
)

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
