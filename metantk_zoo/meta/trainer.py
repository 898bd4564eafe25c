"""The episodic meta-trainer: :func:`train_meta` on the generic epoch loop, and the registration of every
meta-learning method (MAML, FO-MAML, HF-MAML, ANIL, FO-B-MAML) as a ``metantk-zoo train --method``.

The algorithms are in :mod:`.algorithms`, the outer optimisers in :mod:`.optim`, the settings in :mod:`.config`.
MAML: https://arxiv.org/abs/1703.03400; MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..train.loop import TrainResult, run_method
from ..train.methods import TrainingMethod, register_method
from ..utils.progress import progress
from .algorithms import Episode, adapted_accuracies, meta_step
from .config import METHODS, PRESETS, MetaConfig, make_meta_config
from .optim import make_outer_optimizer

__all__ = ["EpisodeFn", "train_meta"]

logger = logging.getLogger(__name__)


#: ``episodes(i) -> (x_spt, y_spt, x_qry, y_qry)``: episode number ``i`` as tensors (a pure function of ``i``).
EpisodeFn = Callable[[int], Episode]


def train_meta(
    model: nn.Module,
    data: EpisodeFn,
    cfg: MetaConfig,
    *,
    run_dir: str | os.PathLike,
    architecture: str = "?",
    resume: bool = False,
    device: torch.device | str | None = None,
    extra_config: dict[str, Any] | None = None,
    val_data: EpisodeFn | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Meta-train ``model`` with ``cfg.method``, checkpointing every ``cfg.steps_per_epoch`` meta-steps.

    Meta-step ``t`` (0-based) uses episodes ``t * meta_batch ... t * meta_batch + meta_batch - 1`` of ``data``, so
    the data order is a pure function of the step and a resumed run sees the same episodes. The run directory,
    checkpoints (weights, outer-optimiser state, RNG), ``resume``, ``metrics.jsonl`` and the plot are
    :func:`metantk_zoo.train.run_epochs`'.

    Args:
        model: a timm-style classifier with an ``n_way``-way head (``get_classifier``, ``forward_head``).
        data: meta-train episodes (:data:`EpisodeFn`).
        cfg: method and settings.
        run_dir: the run directory (:mod:`metantk_zoo.rundir`).
        architecture: the model's architecture name, stored in checkpoints and weights.
        resume: continue from the run's last checkpoint.
        device: defaults to CPU.
        extra_config: more entries for ``config.json``.
        val_data: validation episodes; with ``cfg.val_episodes > 0`` each epoch reports ``val_acc``, the mean
            query accuracy after ``inner_steps_test`` adaptation steps on episodes ``0 .. val_episodes-1``.

    Returns:
        The :class:`~metantk_zoo.train.TrainResult`.

    Raises:
        ConfigError: a head that is not ``n_way``-way, a non-empty run directory without ``resume``, a resumed run
            with another config, or a diverged run.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if getattr(model, "num_classes", None) != cfg.n_way:
        raise ConfigError(f"meta-training {cfg.n_way}-way episodes needs a {cfg.n_way}-way head; the model has "
                          f"{getattr(model, 'num_classes', '?')} outputs (create it with num_classes={cfg.n_way})")
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = make_outer_optimizer(model, cfg)

    def batch(t: int) -> list[Episode]:
        return [tuple(x.to(device) for x in data(t * cfg.meta_batch + i)) for i in range(cfg.meta_batch)]

    def epoch_fn(epoch: int) -> dict[str, float]:
        first, last = (epoch - 1) * cfg.steps_per_epoch, min(epoch * cfg.steps_per_epoch, cfg.meta_steps)
        start = time.perf_counter()
        stats = [meta_step(model, batch(t), optimizer, cfg)
                 for t in progress(range(first, last), desc=f"epoch {epoch}", unit="step")]
        loss = sum(s["loss"] for s in stats) / len(stats)
        if not math.isfinite(loss):
            raise ConfigError(f"meta-training diverged at epoch {epoch} (query loss {loss}); lower --outer-lr or "
                              f"--inner-lr")
        out = {"loss": loss, "acc": sum(s["acc"] for s in stats) / len(stats), "meta_steps": last,
               "sec_per_step": (time.perf_counter() - start) / len(stats)}
        if val_data is not None and cfg.val_episodes:
            accs = adapted_accuracies(model, (val_data(i) for i in range(cfg.val_episodes)), method=cfg.method,
                                      lr=cfg.inner_lr, steps=cfg.inner_steps_test, device=device)
            out["val_acc"] = float(accs.mean())
        return out

    return run_method(
        cfg.method, cfg, model=model, optimizer=optimizer, epoch_fn=epoch_fn, run_dir=run_dir,
        architecture=architecture, resume=resume, extra_config=extra_config, on_epoch_end=on_epoch_end,
        data_state_fn=lambda e: {"order": "episode = step * meta_batch + task", "seed": cfg.seed,
                                 "next_step": min(e * cfg.steps_per_epoch, cfg.meta_steps)},
        plot_keys=(("loss", "query loss after adaptation"), ("acc", "query accuracy after adaptation")),
    )


_DESCRIPTIONS = {
    "maml": "MAML: second-order meta-gradient through the inner loop (Finn et al. 2017)",
    "fomaml": "first-order MAML: inner-loop Jacobian dropped",
    "hfmaml": "Hessian-free MAML: Hessian-vector products by finite differences (Fallah et al. 2020)",
    "anil": "ANIL: only the head adapts in the inner loop (Raghu et al. 2020)",
    "fobmaml": "FO-B-MAML: finite-difference meta-gradient, normalised outer step (Chayti & Jaggi 2024)",
}

def _config_from_cli(method: str, preset: str, num_cells: int | None, overrides: dict[str, Any]) -> MetaConfig:
    """``metantk-zoo train --method M``'s generic flags mapped onto :class:`MetaConfig` fields.

    ``--lr`` is the outer lr, ``--batch-size`` the meta-batch (tasks per outer step), ``--epochs`` sets
    ``meta_steps = epochs * steps_per_epoch``; ``--workers`` does not apply (episodes are read in-process).
    """
    o = dict(overrides)
    o.pop("num_workers", None)
    for flag, name in (("lr", "outer_lr"), ("batch_size", "meta_batch")):
        if flag in o:
            o[name] = o.pop(flag)
    if "epochs" in o:
        spe = o.get("steps_per_epoch", PRESETS.get(preset, {}).get("steps_per_epoch", MetaConfig.steps_per_epoch))
        o["meta_steps"] = int(o.pop("epochs")) * int(spe)
    known = {f.name for f in fields(MetaConfig)} - {"method"}
    unknown = sorted(set(o) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for --method {method}; MetaConfig fields: "
                          f"{', '.join(sorted(known))}")
    return make_meta_config(method, preset, **o)


for _m in METHODS:
    register_method(TrainingMethod(
        name=_m,
        config_cls=MetaConfig,
        presets=tuple(PRESETS),
        make_config=lambda preset, num_cells, overrides, _m=_m: _config_from_cli(_m, preset, num_cells, overrides),
        train=train_meta,
        data_kind="episodes",
        description=_DESCRIPTIONS[_m],
    ))
