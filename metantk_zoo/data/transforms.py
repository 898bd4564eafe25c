"""Image transforms as MetaNTK-NAS / RFS use them, batched over uint8 (N, 3, H, W) tensors.

* :func:`train_transform` — RFS augmentation "A" (method-facts §7): random crop with 8-pixel zero padding, colour
  jitter (brightness, contrast, saturation 0.4, applied in a random order per image as torchvision's
  ``ColorJitter`` does), horizontal flip, then normalisation with the mini-ImageNet statistics.
* :func:`eval_transform` — resize when needed, normalise (RFS test transform).
* :func:`kernel_inputs`, :func:`tenas_augment`, :func:`region_patches` — the search's 32x32 inputs (CIFAR
  statistics, TE-NAS augmentation on supports only) and linear-region patches, re-exported from
  :mod:`metantk_zoo.search_inputs` (method-facts §4.2, §5).
* :func:`augment_support` — the ``n_aug_support_samples`` copies of every support image used in evaluation
  (method-facts §8: 5 copies through transform A).

Randomness comes from an explicit ``torch.Generator`` (or a seed), never from the global RNG, and every image of a
batch gets its own crop, jitter and flip in one vectorised call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import DatasetError
from .constants import CIFAR_MEAN, CIFAR_STD, MINI_IMAGENET_MEAN, MINI_IMAGENET_STD

__all__ = [
    "MINI_IMAGENET_MEAN",
    "MINI_IMAGENET_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "TrainTransform",
    "EvalTransform",
    "train_transform",
    "eval_transform",
    "augment_support",
    "normalize",
    "to_float",
]



def _check_batch(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DatasetError(f"expected an image tensor (3, H, W) or (N, 3, H, W), found {shape}")
    return x


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (float inputs are returned as float32 unchanged)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def normalize(x: torch.Tensor, mean=MINI_IMAGENET_MEAN, std=MINI_IMAGENET_STD) -> torch.Tensor:
    """(x - mean) / std per channel on a float (…, 3, H, W) tensor."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _grey(x: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W), ITU-R 601 luma like torchvision
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


class EvalTransform:
    """Resize to ``size`` x ``size`` if needed, scale to [0, 1], normalise (RFS test transform)."""

    def __init__(self, size: int = 84, mean=MINI_IMAGENET_MEAN, std=MINI_IMAGENET_STD) -> None:
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_batch(x)
        single = x.ndim == 3
        x = to_float(x[None] if single else x)
        x = normalize(_resize(x, self.size), self.mean, self.std)
        return x[0] if single else x

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


class TrainTransform:
    """RFS augmentation "A", batched: per-image random crop (pad 8), colour jitter 0.4/0.4/0.4, flip, normalise.

    Args:
        size: output side (84).
        padding: zero padding before the random crop (8).
        jitter: (brightness, contrast, saturation) strengths (0.4 each).
        flip: apply a random horizontal flip.
        generator / seed: the source of randomness (a fresh ``torch.Generator`` seeded with ``seed`` if no
            generator is given; the global RNG is never used).
    """

    def __init__(self, size: int = 84, padding: int = 8, jitter: tuple[float, float, float] = (0.4, 0.4, 0.4),
                 flip: bool = True, mean=MINI_IMAGENET_MEAN, std=MINI_IMAGENET_STD, *,
                 generator: torch.Generator | None = None, seed: int = 0) -> None:
        self.size, self.padding, self.jitter, self.flip = size, padding, tuple(jitter), flip
        self.mean, self.std = tuple(mean), tuple(std)
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_batch(x)
        single = x.ndim == 3
        x = _resize(to_float(x[None] if single else x), self.size)  # (N, 3, S, S)
        n, s, p = x.shape[0], self.size, self.padding
        if p:
            padded = F.pad(x, (p, p, p, p))  # zero fill like RandomCrop(padding=8)
            oy = torch.randint(0, 2 * p + 1, (n,), generator=self.generator)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=self.generator)
            cols = (ox[:, None] + torch.arange(s))[:, None, None, :].expand(n, 3, s, s)
            x = padded.gather(2, _rows(padded, oy, s)).gather(3, cols)  # (N, 3, S, S)
        x = self._colour_jitter(x)
        if self.flip:
            flip = torch.rand(n, generator=self.generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = normalize(x, self.mean, self.std)
        return x[0] if single else x

    def _colour_jitter(self, x: torch.Tensor) -> torch.Tensor:
        # Each op blends the image with a reference: black (brightness), its mean grey level (contrast) or its grey
        # image (saturation), x <- clamp(f x + (1 - f) ref), with f ~ U[1 - s, 1 + s]; the op order is random per image.
        n = x.shape[0]
        strengths = torch.tensor(self.jitter, dtype=x.dtype)
        factors = 1 + (torch.rand(n, 3, generator=self.generator) * 2 - 1) * strengths  # (N, 3)
        factors = torch.maximum(factors, torch.zeros(()))
        order = torch.argsort(torch.rand(n, 3, generator=self.generator), dim=1)  # (N, 3) op per step
        for step in range(3):
            op = order[:, step]
            f = factors.gather(1, op[:, None]).view(n, 1, 1, 1)
            grey = _grey(x)  # (N, 1, H, W)
            ref = torch.where((op == 1).view(n, 1, 1, 1), grey.mean(dim=(1, 2, 3), keepdim=True), grey)
            ref = torch.where((op == 0).view(n, 1, 1, 1), torch.zeros(()), ref)
            x = (f * x + (1 - f) * ref).clamp_(0.0, 1.0)
        return x

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.size}, padding={self.padding}, jitter={self.jitter}, flip={self.flip})"


def _rows(padded: torch.Tensor, oy: torch.Tensor, s: int) -> torch.Tensor:
    """Index tensor selecting rows ``oy .. oy+s`` of every padded image: (N, 3, S, W+2p)."""
    n, c, _, w = padded.shape
    rows = oy[:, None] + torch.arange(s)
    return rows[:, None, :, None].expand(n, c, s, w)


def train_transform(size: int = 84, *, seed: int = 0, generator: torch.Generator | None = None,
                    **kwargs) -> TrainTransform:
    """The RFS training augmentation "A" at ``size`` x ``size`` (see :class:`TrainTransform`)."""
    return TrainTransform(size, generator=generator, seed=seed, **kwargs)


def eval_transform(size: int = 84, **kwargs) -> EvalTransform:
    """The RFS evaluation transform at ``size`` x ``size`` (see :class:`EvalTransform`)."""
    return EvalTransform(size, **kwargs)


def augment_support(x_spt: torch.Tensor, y_spt: torch.Tensor, n_aug: int = 5,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_aug`` augmented copies of every support image, as RFS evaluation does (``n_aug_support_samples``).

    Args:
        x_spt: uint8 (N*K, 3, H, W) support images.
        y_spt: (N*K,) labels.
        n_aug: copies per image (5 in RFS / MetaNTK-NAS).
        transform: the augmentation (default: :func:`train_transform` at the input size with ``seed``).
    Returns:
        (x, y): (N*K*n_aug, 3, H, W) float images (copies of one image are adjacent) and (N*K*n_aug,) labels.
    """
    if n_aug < 1:
        raise DatasetError(f"n_aug must be >= 1, got {n_aug}")
    x_spt = _check_batch(x_spt)
    if transform is None:
        transform = train_transform(x_spt.shape[-1], seed=seed)
    y = torch.as_tensor(y_spt)
    return transform(x_spt.repeat_interleave(n_aug, dim=0)), y.repeat_interleave(n_aug, dim=0)
