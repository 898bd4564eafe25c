"""Data wiring for meta-training and adaptation-based evaluation: episodes of a split as tensors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data import EpisodeSampler, FewShotDataset, eval_transform, load_images

__all__ = ["episode_fn"]

Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def episode_fn(fs: FewShotDataset, split: str, n_way: int, n_shot: int, n_query: int, *, seed: int,
               size: int = 84) -> Callable[[int], Episode]:
    """``i -> (x_spt, y_spt, x_qry, y_qry)``: episode ``i`` of ``split`` (a pure function of ``seed`` and ``i``).

    Images go through the evaluation transform (resize to ``size``, normalise); one batched read per episode.
    """
    sampler = EpisodeSampler(fs.labels(split), n_way, n_shot, n_query, seed=seed,
                             class_names=fs.class_names(split))
    ds, tf = fs.split(split), eval_transform(size)

    def get(i: int) -> Episode:
        ep = sampler.episode(i)
        x = load_images(ds, np.concatenate([ep.support, ep.query]), tf)  # (N*(K+Q), C, H, W)
        ns = len(ep.support)
        return x[:ns], torch.as_tensor(ep.y_support), x[ns:], torch.as_tensor(ep.y_query)

    return get
