"""Model cost, the one counter: parameters, multiply-adds, the evaluation network's complexity per genotype, and one
row per registered zoo architecture (name, cells, parameter count and provenance)."""

from __future__ import annotations

import functools
from typing import Any

import timm
import torch

from ..genotype import Genotype
from ._registry import ZOO_ENTRIES
from .conv4 import CONV4_DESCRIPTION, CONV4_WIDTH
from .network import FewShotNetwork

__all__ = ["zoo_table", "count_parameters", "count_macs", "complexity"]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (the reference's 20 unused dummy scalars are not part of our models)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, input_size: tuple[int, ...] = (1, 3, 84, 84)) -> int:
    """Multiply-adds of one forward pass per image, counted with forward hooks on Conv2d and Linear.

    A convolution costs ``out_elements * in_chs / groups * kh * kw``, a linear layer ``in * out`` per row;
    BatchNorm, pooling and additions are not counted (the usual convention of ptflops / thop).
    Runs on the ``meta`` device when the model is there (no memory, no arithmetic).
    """
    total = 0

    def conv_hook(mod: torch.nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: torch.nn.Linear, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    device = next(model.parameters()).device
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=device))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total


def complexity(genotype: Genotype, cells: tuple[int, ...] = (5, 8), num_classes: int = 64) -> list[dict[str, Any]]:
    """Parameters and multiply-adds at 84x84 of the evaluation network (C=48) for each cell count."""
    return [dict(row) for row in _complexity(genotype, tuple(cells), num_classes)]


@functools.lru_cache(maxsize=64)
def _complexity(genotype: Genotype, cells: tuple[int, ...], num_classes: int) -> tuple[dict[str, Any], ...]:
    rows = []
    for num_cells in cells:
        with torch.device("meta"):
            model = FewShotNetwork(genotype, num_cells=num_cells, init_channels=48, num_classes=num_classes)
        rows.append({"num_cells": num_cells, "init_channels": 48, "num_classes": num_classes, "input_size": 84,
                     "params": count_parameters(model), "macs": count_macs(model)})
    return tuple(rows)


def zoo_table(num_classes: int = 64, image_size: int = 84) -> list[dict[str, Any]]:
    """One row per registered zoo architecture (every ``metantk_*`` entry, ``metantk_conv4`` included).

    Each model is built with its registered defaults through ``timm.create_model(..., device="meta")`` (no memory,
    no initialisation; ``metantk_cell`` with its default genotype) and measured with :func:`count_parameters` and
    :func:`count_macs`, the one counter.

    Returns:
        Rows ``{"name", "cells", "init_channels", "params", "macs", "input_size", "source"}``; ``cells`` is
        ``None`` for Conv4 (``init_channels`` is then its width).
    """
    entries = [(name, cells, chs, source) for name, (_, cells, chs, source) in ZOO_ENTRIES.items()]
    entries.append(("metantk_conv4", None, CONV4_WIDTH, CONV4_DESCRIPTION))
    rows = []
    for name, cells, chs, source in entries:
        params, macs = _entry_counts(name, num_classes, image_size)
        rows.append({"name": name, "cells": cells, "init_channels": chs, "params": params, "macs": macs,
                     "input_size": image_size, "source": source})
    return rows


@functools.lru_cache(maxsize=256)
def _entry_counts(name: str, num_classes: int, image_size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of one registered entry; an entry's architecture is fixed at registration, so the
    counts are kept for the process (the ``models`` table and its tests count each entry once)."""
    model = timm.create_model(name, num_classes=num_classes, device="meta")
    return count_parameters(model), count_macs(model, (1, 3, image_size, image_size))
