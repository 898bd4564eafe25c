"""Frozen pre-logit features of a timm-style backbone: :func:`pre_logits_fn` and :func:`extract_features`.

As RFS (https://arxiv.org/abs/2003.11539): eval mode (BatchNorm running statistics), L2-normalised per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["pre_logits_fn", "extract_features"]


def pre_logits_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function ``(B, C, H, W) -> (B, D)`` giving a model's pre-logit features (timm's contract).

    Raises:
        ConfigError: the model has no ``forward_features`` / ``forward_head(pre_logits=True)``.
    """
    ff, fh = getattr(model, "forward_features", None), getattr(model, "forward_head", None)
    if not (callable(ff) and callable(fh)):
        raise ConfigError(
            f"cannot find the pre-logit features of {type(model).__name__}: few-shot evaluation needs a timm-style "
            f"model with forward_features() and forward_head(x, pre_logits=True) (any timm.create_model() model)"
        )

    def features(x: torch.Tensor) -> torch.Tensor:
        return fh(ff(x), pre_logits=True)

    return features


@torch.no_grad()
def extract_features(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | str | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Pre-logit features of every image, in eval mode (BatchNorm running statistics), L2-normalised per image.

    Args:
        model: a timm-style model (see :func:`pre_logits_fn`).
        batches: iterable of (B, C, H, W) float image batches.
        device: where the model runs (default: the model's device).
        normalize: L2-normalise each feature vector (the reference's default).

    Returns:
        (N, D) float32 features on the CPU.

    Raises:
        ConfigError: no pre-logit features, or features that are not (B, D) vectors.
    """
    fn = pre_logits_fn(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for x in batches:
            f = fn(x.to(device, non_blocking=True)).float()
            if f.dim() != 2:
                raise ConfigError(f"pre-logit features of {type(model).__name__} have shape {tuple(f.shape)}, expected "
                                  f"(B, D); create the model with global pooling (e.g. global_pool='avg')")
            if normalize:
                f = nn.functional.normalize(f, dim=1)
            out.append(f.cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ConfigError("no images to extract features from")
    return torch.cat(out)
