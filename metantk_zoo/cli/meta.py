"""Meta-learning in the CLI: episode data for ``train --method maml|fomaml|hfmaml|anil|fobmaml`` and
``eval --adapt`` (the algorithm's own inner-loop adaptation as the classifier)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import meta as _meta  # registers the meta-learning methods in TRAINING_METHODS
from ..data import EpisodeSampler, FewShotDataset, eval_transform, load_fewshot, load_images
from ..evaluate import EvalResult, mean_confidence_interval, protocol_config
from ..io import read_json
from ..progress import progress
from ..rundir import is_run_dir
from .train import DATA_BUILDERS, model_input_size

__all__ = ["episode_fn", "run_adapted_eval"]

Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def episode_fn(fs: FewShotDataset, split: str, n_way: int, n_shot: int, n_query: int, *, seed: int,
               size: int = 84, n_episodes: int = 1000) -> Callable[[int], Episode]:
    """``i -> (x_spt, y_spt, x_qry, y_qry)``: episode ``i`` of ``split`` (a pure function of ``seed`` and ``i``).

    The sampler is the one ``metantk-zoo eval`` uses, so the same seed and shape give the same episodes. Images go
    through the evaluation transform (resize to ``size``, normalise); one batched read per episode.
    """
    sampler = EpisodeSampler(fs.labels(split), n_way, n_shot, n_query, seed=seed, n_episodes=n_episodes,
                             class_names=fs.class_names(split))
    ds, tf = fs.split(split), eval_transform(size)

    def get(i: int) -> Episode:
        ep = sampler.episode(i)
        x = load_images(ds, np.concatenate([ep.support, ep.query]), tf)  # (N*(K+Q), C, H, W)
        ns = len(ep.support)
        return x[:ns], torch.as_tensor(ep.y_support), x[ns:], torch.as_tensor(ep.y_query)

    get.sampler = sampler  # type: ignore[attr-defined]
    return get


def _episodes_builder(fs: FewShotDataset, cfg: _meta.MetaConfig, image_size: int):
    """``DATA_BUILDERS['episodes']``: meta-train episodes of ``cfg``'s shape, and the head width ``n_way``."""
    return episode_fn(fs, "train", cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed, size=image_size), cfg.n_way


DATA_BUILDERS["episodes"] = _episodes_builder


def run_adapted_eval(model: torch.nn.Module, model_ref: str, dataset: str, *, split: str = "test",
                     protocol: str = "rfs", image_size: int | None = None, device: str | None = None,
                     **overrides: Any) -> EvalResult:
    """Few-shot accuracy with the meta-learning algorithm's own adaptation as the classifier.

    Episodes are drawn exactly as :func:`metantk_zoo.cli.evaluate.run_eval` draws them for the same protocol, seed
    and shape (the manifest hash is the same), so the result compares episode for episode with the linear probe.
    The method, inner lr and test-time inner steps are the run's (``config.json``) when ``model_ref`` is a
    meta-training run directory, else MAML's (full adaptation, lr 0.01, 10 steps).
    """
    cfg = protocol_config(protocol, **overrides)
    run_cfg = read_json(Path(model_ref) / "config.json", what="run config") if is_run_dir(model_ref) else {}
    method = run_cfg.get("method") if run_cfg.get("method") in _meta.METHODS else "maml"
    saved = run_cfg.get("config", {}) if method == run_cfg.get("method") else {}
    lr, steps = saved.get("inner_lr", 0.01), saved.get("inner_steps_test", 10)
    fs = load_fewshot(dataset)
    get = episode_fn(fs, split, cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed, n_episodes=cfg.n_episodes,
                     size=image_size or model_input_size(model))
    manifest = get.sampler.manifest(dataset=fs.spec, fingerprint=fs.fingerprint, split=split)
    dev = torch.device(device) if device else torch.device("cpu")
    model.to(dev)
    episodes = (get(i) for i in progress(range(cfg.n_episodes), desc="eval (adapt)", unit="episode"))
    accs = _meta.adapted_accuracies(model, episodes, method=method, lr=lr, steps=steps, device=dev)
    mean, ci = mean_confidence_interval(accs)
    return EvalResult(mean=mean, ci95=ci, n_episodes=cfg.n_episodes, n_way=cfg.n_way, n_shot=cfg.n_shot,
                      n_query=cfg.n_query, n_aug_support=0, protocol=f"{protocol}+adapt:{method}(lr={lr},steps={steps})",
                      manifest_hash=manifest.sha256, model=model_ref, dataset=fs.spec, split=split,
                      accuracies=accs.tolist())
