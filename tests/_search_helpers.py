"""Shared pieces of the search tests: a small random image source and a CPU-sized config."""

from __future__ import annotations

import dataclasses

import torch

from metantk_zoo.nas import SearchConfig, TensorSource

#: 2 candidate ops, C=4, 3 cells, 8x8 inputs, 2 tasks x 2 ways: 36 + 14 candidates in seconds.
NANO = SearchConfig(channels=4, num_cells=3, resolution=8, repeats=1, n_tasks=2, n_way=2, region_patches=50,
                    region_batches=1, ops=("skip_connect", "max_pool_3x3BN"), episode_pool=50)


#: the smallest search the two-process (gloo) test runs on both sides: every stage still has candidates on both
#: ranks, 1 repeat of both scores
DIST_CONFIG = dict(region_patches=20, resolution=6)


def nano_config(**overrides) -> SearchConfig:
    return dataclasses.replace(NANO, **overrides)


def nano_source(n_classes: int = 6, per_class: int = 4, size: int = 12, seed: int = 0) -> TensorSource:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_classes * per_class, 3, size, size), dtype=torch.uint8, generator=g)
    return TensorSource(images, torch.arange(n_classes * per_class) % n_classes)
