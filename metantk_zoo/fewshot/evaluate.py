"""Few-shot evaluation protocols: episodes of a frozen backbone's features -> mean accuracy ± 95% CI.

The protocol of RFS (Tian et al., ECCV 2020, https://arxiv.org/abs/2003.11539) as run by MetaNTK-NAS
(https://arxiv.org/abs/2203.09137, method-facts §8): for every episode, fit an L2-regularised multinomial logistic
regression (scikit-learn's ``LogisticRegression(C=1.0)``) on the L2-normalised pre-logit features of the support
images (each repeated as ``n_aug_support`` augmented copies) and score it on the queries. The result is the mean
accuracy over episodes and its 95% confidence half-width (Student t).

What differs from the reference is how, not what: every image's features are computed once per evaluation (and
each support image's augmented copies once), not once per episode, and the per-episode problems are solved
together in float64 by a batched Newton-CG on exactly scikit-learn's objective
``sum_i log-loss_i + ||W||^2 / (2C)`` (intercept unpenalised), on the GPU when there is one.

Features: :mod:`.features`; the probe: :mod:`.probe`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ConfigError, DatasetError
from ..utils.io import read_json, write_json
from ..utils.progress import progress
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

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class EvalConfig:
    """A few-shot evaluation protocol. Defaults are the paper's (method-facts §8).

    Args:
        protocol: the protocol's name (recorded in results).
        n_way: classes per episode.
        n_shot: support images per class.
        n_query: query images per class (paper 50, RFS 15).
        n_episodes: episodes (paper 1000, RFS 600).
        n_aug_support: augmented copies of each support image (5; 0 uses the plain, un-augmented support).
        C: inverse L2 strength of the logistic regression (scikit-learn's C; 1.0).
        seed: seeds the augmentation of the support copies.
        batch_size: images per forward pass when extracting features.
    """

    protocol: str = "paper"
    n_way: int = 5
    n_shot: int = 1
    n_query: int = 50
    n_episodes: int = 1000
    n_aug_support: int = 5
    C: float = 1.0
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot", "n_query", "n_episodes", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.n_way < 2:
            raise ConfigError(f"n_way must be >= 2 for a classifier, found {self.n_way}")
        if self.n_aug_support < 0:
            raise ConfigError(f"n_aug_support must be >= 0, found {self.n_aug_support}")
        if not self.C > 0:
            raise ConfigError(f"C must be > 0, found {self.C}")


#: named protocols: ``paper`` (MetaNTK-NAS ``fewshot_test.py``) and ``rfs`` (RFS ``eval_fewshot.py`` defaults).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": dict(n_episodes=1000, n_query=50, n_aug_support=5),
    "rfs": dict(n_episodes=600, n_query=15, n_aug_support=5),
}


def protocol_config(protocol: str = "paper", **overrides: Any) -> EvalConfig:
    """The named protocol with any field overridden (``None`` values are ignored).

    Raises:
        ConfigError: unknown protocol or field, or an invalid value.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; known protocols: {', '.join(PROTOCOLS)}")
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown evaluation option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return EvalConfig(protocol=protocol, **{**PROTOCOLS[protocol], **given})


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes as global image indices with episode-local labels 0..n_way-1.

    Attributes:
        support: (T, n_way*n_shot) image indices.
        y_support: (T, n_way*n_shot) labels.
        query: (T, n_way*n_query) image indices.
        y_query: (T, n_way*n_query) labels.
        manifest_hash: identifies the episode set (same hash = identical episodes).
    """

    support: torch.Tensor
    y_support: torch.Tensor
    query: torch.Tensor
    y_query: torch.Tensor
    manifest_hash: str = ""

    def __len__(self) -> int:
        return len(self.support)


class ImageSource(Protocol):
    """Images by index: ``load(indices, augment) -> (B, C, H, W)`` float, normalised, at the model's input size.

    ``augment=True`` applies the support augmentation (RFS transform A) drawing from torch's RNG.
    """

    def load(self, indices: Sequence[int], augment: bool) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class EvalResult:
    """Mean accuracy (fraction) over episodes and its 95% confidence half-width ``t_{0.975,n-1} * std / sqrt(n)``."""

    mean: float
    ci95: float
    n_episodes: int
    n_way: int
    n_shot: int
    n_query: int
    n_aug_support: int
    protocol: str
    manifest_hash: str
    C: float = 1.0
    ci_formula: str = "t.ppf(0.975, n-1) * std(ddof=1) / sqrt(n)"
    model: str | None = None
    dataset: str | None = None
    split: str | None = None
    accuracies: list[float] | None = dataclasses.field(default=None, repr=False)

    def to_dict(self, with_accuracies: bool = False) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not with_accuracies:
            d.pop("accuracies")
        return d

    def summary(self) -> str:
        return (f"{self.n_way}-way {self.n_shot}-shot ({self.protocol}, {self.n_episodes} episodes): "
                f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f} %")


def mean_confidence_interval(accuracies: torch.Tensor | Sequence[float],
                             confidence: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t confidence half-width ``t_{(1+c)/2, n-1} * std(ddof=1) / sqrt(n)`` (RFS's formula)."""
    from scipy.stats import t

    a = torch.as_tensor(accuracies, dtype=torch.float64)
    n = a.numel()
    if n == 0:
        raise ConfigError("no episodes to summarise")
    mean = a.mean().item()
    if n == 1:
        return mean, float("nan")
    return mean, float(t.ppf((1 + confidence) / 2, n - 1)) * a.std(unbiased=True).item() / math.sqrt(n)


def save_eval_result(path: str | os.PathLike, result: EvalResult) -> list[dict[str, Any]]:
    """Merge ``result`` into the JSON list at ``path`` (e.g. ``RUN_DIR/eval.json``), replacing the same setting."""
    path = Path(path)
    rows = read_json(path, what="evaluation results") if path.exists() else []
    if not isinstance(rows, list):
        rows = [rows]
    new = result.to_dict()
    key = ("dataset", "split", "protocol", "n_way", "n_shot", "n_query", "n_episodes", "n_aug_support")
    rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(new.get(k) for k in key)] + [new]
    write_json(path, rows)
    return rows


def episode_accuracies(
    x_spt: torch.Tensor, y_spt: torch.Tensor, x_qry: torch.Tensor, y_qry: torch.Tensor, n_way: int, C: float = 1.0
) -> torch.Tensor:
    """Per-episode query accuracy (T,) of the logistic-regression probe fitted on each episode's support."""
    w, b = fit_logistic_regression(x_spt, y_spt, n_way, C)
    return (probe_predict(w, b, x_qry) == y_qry.to(w.device)).double().mean(1)


def _probe_device(device: torch.device | str | None) -> torch.device:
    """``device``, or CUDA when there is one, else the CPU."""
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_episodes(episodes: Episodes, cfg: EvalConfig, n_images: int | None = None) -> None:
    t = len(episodes)
    want = {"support": (t, cfg.n_way * cfg.n_shot), "query": (t, cfg.n_way * cfg.n_query)}
    for name, shape in want.items():
        found = tuple(getattr(episodes, name).shape)
        if found != shape:
            raise DatasetError(f"episodes' {name} has shape {found}, expected {shape} for "
                               f"{cfg.n_way}-way {cfg.n_shot}-shot {cfg.n_query}-query")
    if n_images is not None:
        hi = max(int(episodes.support.max()), int(episodes.query.max()))
        if hi >= n_images:
            raise DatasetError(f"episodes index image {hi}, but the image set has only {n_images} images")


def evaluate_features(
    feats: torch.Tensor,
    episodes: Episodes,
    cfg: EvalConfig,
    *,
    support_feats: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    chunk: int = 200,
) -> EvalResult:
    """Score episodes on precomputed features.

    Args:
        feats: (N_img, D) plain features of every image the episodes index (queries always use these).
        episodes: the episodes.
        cfg: the protocol.
        support_feats: (N_img, A, D) augmented support copies; without it, the plain features are the support.
        device: where the probe is solved (default CUDA when available).
        chunk: episodes solved together.

    Returns:
        The :class:`EvalResult` (with per-episode ``accuracies``).
    """
    _check_episodes(episodes, cfg, len(feats))
    device = _probe_device(device)
    accs = []
    for lo in progress(range(0, len(episodes), chunk), desc="probe", unit="chunk"):
        s = episodes.support[lo:lo + chunk]  # (t, W*S)
        ys = episodes.y_support[lo:lo + chunk]
        if support_feats is not None:
            a = support_feats.shape[1]
            x_spt = support_feats[s].flatten(1, 2)  # (t, W*S*A, D)
            ys = ys.repeat_interleave(a, dim=1)
        else:
            x_spt = feats[s]
        x_qry = feats[episodes.query[lo:lo + chunk]]  # (t, W*Q, D)
        accs.append(episode_accuracies(x_spt.to(device), ys.to(device), x_qry.to(device),
                                       episodes.y_query[lo:lo + chunk].to(device), cfg.n_way, cfg.C).cpu())
    acc = torch.cat(accs)
    mean, h = mean_confidence_interval(acc)
    return EvalResult(mean=mean, ci95=h, n_episodes=len(acc), n_way=cfg.n_way, n_shot=cfg.n_shot,
                      n_query=cfg.n_query, n_aug_support=cfg.n_aug_support, protocol=cfg.protocol,
                      manifest_hash=episodes.manifest_hash, C=cfg.C, accuracies=acc.tolist())


def evaluate_fewshot(
    model: nn.Module,
    images: ImageSource,
    episodes: Episodes,
    cfg: EvalConfig,
    *,
    device: torch.device | str | None = None,
) -> EvalResult:
    """Evaluate a frozen backbone on episodes: features of each image once, augmented support copies once each.

    Queries use the plain images; each image that appears as a support gets ``cfg.n_aug_support`` augmented copies
    (drawn once per evaluation, seeded by ``cfg.seed``, reused by every episode that holds the image).

    Args:
        model: a timm-style backbone (pre-logit features, see :func:`pre_logits_fn`).
        images: the :class:`ImageSource` the episodes index.
        episodes: the episodes.
        cfg: the protocol.
        device: where the model and the probe run (default CUDA when available).

    Returns:
        The :class:`EvalResult`.

    Raises:
        ConfigError: the model has no pre-logit features.
        DatasetError: the episodes do not fit the protocol.
    """
    pre_logits_fn(model)  # fail before any work
    _check_episodes(episodes, cfg)
    device = _probe_device(device)
    model.to(device)
    query_ids = torch.unique(episodes.query)
    support_ids = torch.unique(episodes.support)
    plain_ids = query_ids if cfg.n_aug_support else torch.unique(torch.cat([query_ids, support_ids]))
    n_img = int(max(episodes.query.max(), episodes.support.max())) + 1

    def batches(ids: torch.Tensor, augment: bool, desc: str):
        for lo in progress(range(0, len(ids), cfg.batch_size), desc=desc, unit="batch"):
            yield images.load(ids[lo:lo + cfg.batch_size].tolist(), augment)

    plain = extract_features(model, batches(plain_ids, False, "features"), device=device)
    feats = plain.new_zeros(n_img, plain.shape[1])
    feats[plain_ids] = plain
    support_feats = None
    if cfg.n_aug_support:
        support_feats = plain.new_zeros(n_img, cfg.n_aug_support, plain.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for a in range(cfg.n_aug_support):
                support_feats[support_ids, a] = extract_features(
                    model, batches(support_ids, True, f"support copy {a + 1}"), device=device)
    logger.info("features: %d plain, %d x %d augmented support", len(plain_ids), len(support_ids), cfg.n_aug_support)
    result = evaluate_features(feats, episodes, cfg, support_feats=support_feats, device=device)
    logger.info("%s", result.summary())
    return result
