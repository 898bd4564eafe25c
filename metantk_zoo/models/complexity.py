"""One row per registered zoo architecture: name, cells, parameter count and provenance."""

from __future__ import annotations

from typing import Any

import torch

from ._registry import ZOO_ENTRIES
from .genotypes import NAMED
from .network import FewShotNetwork

__all__ = ["zoo_table", "count_parameters"]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (the reference's 20 unused dummy scalars are not part of our models)."""
    return sum(p.numel() for p in model.parameters())


def zoo_table(num_classes: int = 64) -> list[dict[str, Any]]:
    """Rows for every zoo entry with a fixed genotype (``metantk_cell`` needs one, so it has no count).

    Parameters are counted on a model built on the ``meta`` device: no memory, no initialisation.
    """
    rows = []
    for name, (key, cells, chs, source) in ZOO_ENTRIES.items():
        params = None
        if key is not None:
            with torch.device("meta"):
                model = FewShotNetwork(NAMED[key], num_cells=cells, init_channels=chs, num_classes=num_classes)
            params = count_parameters(model)
        rows.append({"name": name, "cells": cells, "init_channels": chs, "params": params, "source": source})
    return rows
