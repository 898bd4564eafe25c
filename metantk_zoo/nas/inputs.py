"""Tensor-level input transforms of the search, as MetaNTK-NAS feeds its kernels and region counter.

``reference/method-facts.md`` §4.2 and §5: every search input is first resized to 32x32 (bilinear, like PIL's
antialiased resize of uint8 images). Kernel inputs are normalised with the CIFAR statistics; supports get the
TE-NAS augmentation (horizontal flip with p=0.5, then a random 32x32 crop of the 4-pixel zero-padded image),
queries none. Linear-region inputs are random 3x3 crops normalised with the mini-ImageNet statistics, of which
one random colour channel is kept. All functions are pure and take a ``torch.Generator`` for their draws.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.constants import CIFAR_MEAN, CIFAR_STD, MINI_IMAGENET_MEAN, MINI_IMAGENET_STD
from ..data.transforms import normalize, to_float
from ..errors import ConfigError

__all__ = [
    "resize_uint8",
    "normalize_uint8",
    "tenas_augment",
    "kernel_inputs",
    "region_patches",
]



def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ConfigError(f"expected uint8 images (N, 3, H, W), found {images.dtype} {tuple(images.shape)}")


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) uint8, bilinear with antialiasing (PIL's resize), rounded."""
    _check_images(images)
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def normalize_uint8(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 ``(x/255 - mean) / std`` per channel (the data layer's ``normalize``)."""
    return normalize(to_float(images), mean, std)


def tenas_augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """TE-NAS support augmentation on uint8 (N, 3, H, W): random horizontal flip, then pad-``padding`` random crop."""
    _check_images(images)
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    images = torch.where(flip.to(images.device).view(n, 1, 1, 1), images.flip(-1), images)
    padded = F.pad(images, (padding, padding, padding, padding))  # zero fill, as torchvision's RandomCrop
    rows = (offsets[:, 0].view(n, 1) + torch.arange(h)).to(images.device)  # (N, H)
    cols = (offsets[:, 1].view(n, 1) + torch.arange(w)).to(images.device)  # (N, W)
    idx_n = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    idx_c = torch.arange(3, device=images.device).view(1, 3, 1, 1)
    return padded[idx_n, idx_c, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def kernel_inputs(
    x_qry: torch.Tensor, x_spt: torch.Tensor, generator: torch.Generator, resolution: int = 32, augment: bool = True
) -> torch.Tensor:
    """The MetaNTK batch: resized, supports augmented, CIFAR-normalised, queries first.

    Args:
        x_qry: uint8 (T*Q, 3, H, W) task-major queries; x_spt: uint8 (T*S, 3, H, W) task-major supports.
        generator: draws the support augmentation.
        resolution: search resolution (32 in the reference).
        augment: apply the TE-NAS augmentation to the supports.

    Returns:
        float32 (T*(Q+S), 3, resolution, resolution).
    """
    q = resize_uint8(x_qry, resolution)
    s = resize_uint8(x_spt, resolution)
    if augment:
        s = tenas_augment(s, generator)
    return normalize_uint8(torch.cat([q, s]), CIFAR_MEAN, CIFAR_STD)


def region_patches(images: torch.Tensor, generator: torch.Generator, resolution: int = 32, size: int = 3):
    """Linear-region inputs: one random ``size`` x ``size`` crop per image, mini-normalised, one random channel.

    Args:
        images: uint8 (N, 3, H, W), resized to ``resolution`` first.
        generator: draws crop positions and channels.

    Returns:
        float32 (N, 1, size, size).
    """
    images = resize_uint8(images, resolution)
    n = images.shape[0]
    top = torch.randint(0, resolution - size + 1, (n,), generator=generator)
    left = torch.randint(0, resolution - size + 1, (n,), generator=generator)
    channel = torch.randint(0, 3, (n,), generator=generator)
    dev = images.device
    r = (top.view(n, 1) + torch.arange(size)).to(dev)  # (N, size)
    c = (left.view(n, 1) + torch.arange(size)).to(dev)
    idx_n = torch.arange(n, device=dev).view(n, 1, 1)
    patches = images[idx_n, channel.to(dev).view(n, 1, 1), r.view(n, size, 1), c.view(n, 1, size)]  # (N, s, s)
    mean = torch.tensor(MINI_IMAGENET_MEAN, device=dev)[channel.to(dev)].view(n, 1, 1)
    std = torch.tensor(MINI_IMAGENET_STD, device=dev)[channel.to(dev)].view(n, 1, 1)
    return ((patches.float() / 255 - mean) / std).unsqueeze(1)
