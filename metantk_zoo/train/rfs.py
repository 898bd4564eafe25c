"""The RFS supervised pre-training recipe: :class:`RfsConfig`, its presets and schedules, and :func:`train_rfs`.

RFS (Tian et al., ECCV 2020, https://arxiv.org/abs/2003.11539) trains the backbone as an ordinary classifier on
the meta-train classes; MetaNTK-NAS (https://arxiv.org/abs/2203.09137) trains its searched cells that way
(method-facts §7): SGD, step decay, a linear drop-path ramp; bf16 autocast and channels_last on CUDA;
DistributedDataParallel under ``torchrun``. The epochs run on :func:`~metantk_zoo.train.loop.run_epochs`; the
recipe registers itself as the ``rfs`` training method.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..utils.distributed import DistInfo, setup_distributed
from ..utils.progress import progress
from .loop import BatchSource, TrainResult, batch_loader, epoch_batches, run_method
from .methods import TrainingMethod, register_method

__all__ = ["RfsConfig", "PRESETS", "preset_config", "lr_at_epoch", "drop_path_at_epoch", "train_rfs"]


@dataclass(frozen=True)
class RfsConfig:
    """The RFS supervised pre-training recipe as run by MetaNTK-NAS (method-facts §7).

    Defaults are the ``rfs-mini`` preset for a 5-cell network.

    Args:
        epochs: training epochs (mini 100, tiered 60).
        lr: initial SGD learning rate (mini 0.02, tiered 0.01).
        lr_decay_epochs: the lr is multiplied by ``lr_decay_rate`` after each of these epochs (mini 60, 80).
        lr_decay_rate: step-decay factor (0.1).
        momentum: SGD momentum (0.9, no Nesterov).
        weight_decay: L2 on all parameters (5e-4, no exclusions).
        batch_size: global batch size (64 for 5 cells; 40 mini / 56 tiered for 8 cells), split across DDP ranks.
        drop_path: final drop-path rate of the linear ramp ``drop_path * epoch / epochs`` (mini 0.2, tiered 0.1).
        seed: seeds the data order (one permutation per epoch, a function of ``seed`` and the epoch) and the
            initial torch RNG state (augmentation, drop-path masks).
        num_workers: data-loading worker processes (0: load in the main process).
        amp: bf16 autocast on CUDA (ignored on CPU).
        channels_last: channels_last memory format on CUDA (ignored on CPU).
        compile: wrap the model in ``torch.compile`` (off by default, see the README's benchmark).
    """

    epochs: int = 100
    lr: float = 0.02
    lr_decay_epochs: tuple[int, ...] = (60, 80)
    lr_decay_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    drop_path: float = 0.2
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in self.lr_decay_epochs))
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, found {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, found {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, found {self.lr}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path must be in [0, 1), found {self.drop_path}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, found {self.num_workers}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lr_decay_epochs": list(self.lr_decay_epochs)}


#: preset name -> (field overrides, batch size by cell count). RFS/MetaNTK-NAS values, method-facts §7. The
#: Table-1 recipes train in fp32 as the reference did (``amp=False``); bf16 autocast is an option (``amp=True``).
PRESETS: dict[str, tuple[dict[str, Any], dict[int, int]]] = {
    "rfs-mini": (dict(epochs=100, lr=0.02, lr_decay_epochs=(60, 80), drop_path=0.2, amp=False), {5: 64, 8: 40}),
    "rfs-tiered": (dict(epochs=60, lr=0.01, lr_decay_epochs=(30, 40, 50), drop_path=0.1, amp=False),
                   {5: 64, 8: 56}),
}


def preset_config(preset: str = "rfs-mini", *, num_cells: int | None = None, **overrides: Any) -> RfsConfig:
    """Resolve a preset for a network of ``num_cells`` cells (batch size by cell count), then apply overrides.

    Raises:
        ConfigError: unknown preset or field, or an invalid value.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    fields, batch_by_cells = PRESETS[preset]
    values = dict(fields, batch_size=batch_by_cells.get(num_cells, 64))
    known = {f.name for f in dataclasses.fields(RfsConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RfsConfig(**values)


def lr_at_epoch(cfg: RfsConfig, epoch: int) -> float:
    """RFS step decay: lr of (1-based) ``epoch`` = lr * rate^(number of decay epochs strictly below it)."""
    return cfg.lr * cfg.lr_decay_rate ** sum(epoch > e for e in cfg.lr_decay_epochs)


def drop_path_at_epoch(cfg: RfsConfig, epoch: int) -> float:
    """The linear drop-path ramp: ``drop_path * epoch / epochs`` for (1-based) ``epoch``."""
    return cfg.drop_path * epoch / cfg.epochs


def _default_device(dist_info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def _set_drop_path(model: nn.Module, rate: float) -> None:
    if hasattr(model, "set_drop_path_rate"):
        model.set_drop_path_rate(rate)
        return
    from timm.layers import DropPath

    for m in model.modules():
        if isinstance(m, DropPath):
            m.drop_prob = rate


def train_rfs(
    model: nn.Module,
    data: BatchSource,
    cfg: RfsConfig,
    *,
    run_dir: str | os.PathLike,
    architecture: str = "?",
    resume: bool = False,
    device: torch.device | str | None = None,
    extra_config: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` as a classifier over ``data`` with the RFS recipe, checkpointing every epoch.

    SGD (momentum, weight decay on all parameters), step-decayed lr, cross-entropy without label smoothing, and
    the linear drop-path ramp. On CUDA the forward runs under bf16 autocast with channels_last inputs and weights
    (``cfg.amp``, ``cfg.channels_last``). Under ``torchrun`` the model is wrapped in DistributedDataParallel and
    each rank trains on its slice of every global batch.

    Args:
        model: any classifier ``(B, C, H, W) -> (B, num_classes)``; its head must match ``data``'s labels.
        data: the training set (:class:`BatchSource`).
        cfg: the recipe.
        run_dir: the run directory (see :mod:`metantk_zoo.utils.rundir`).
        architecture: the model's architecture name, stored in checkpoints and weights.
        resume: continue from ``RUN_DIR/checkpoints/last.safetensors``.
        device: defaults to CUDA (this rank's GPU) when available, else CPU.
        extra_config: more entries for ``config.json`` (model, dataset, ...).
        on_epoch_end: hook after each checkpoint (rank 0).

    Returns:
        The :class:`TrainResult`.
    """
    dist_info = setup_distributed(torch.device(device) if device is not None else None)
    device = torch.device(device) if device is not None else _default_device(dist_info)
    if cfg.batch_size % dist_info.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {dist_info.world_size} processes")
    net, optimizer = _prepare(model, cfg, device, dist_info)
    epoch_fn = _RfsEpoch(model, net, optimizer, data, cfg, device, dist_info)
    n = len(data)
    return run_method(
        "rfs", cfg, model=model, optimizer=optimizer, epoch_fn=epoch_fn, run_dir=run_dir, architecture=architecture,
        resume=resume, extra_config=extra_config, on_epoch_end=on_epoch_end, dist_info=dist_info,
        data_state_fn=lambda e: {"order": "randperm(seed, epoch)", "seed": cfg.seed, "next_epoch": e + 1,
                                 "num_samples": n, "batch_size": cfg.batch_size},
    )


def _prepare(model: nn.Module, cfg: RfsConfig, device: torch.device,
             dist_info: DistInfo) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Seed torch, place the model (channels_last on CUDA) and build its SGD optimizer and the (DDP, compiled)
    module that the epochs run."""
    on_cuda = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if on_cuda and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    net: nn.Module = model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)
    if cfg.compile:
        net = torch.compile(net)
    return net, optimizer


class _RfsEpoch:
    """One RFS epoch (the ``epoch_fn`` of :func:`~metantk_zoo.train.loop.run_epochs`): set the epoch's lr and
    drop-path rate, train on this rank's slice of every global batch, and return the epoch's metrics."""

    def __init__(self, model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer, data: BatchSource,
                 cfg: RfsConfig, device: torch.device, dist_info: DistInfo):
        self.model, self.net, self.optimizer, self.data, self.cfg = model, net, optimizer, data, cfg
        self.device, self.dist_info = device, dist_info
        self.on_cuda = device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if (self.on_cuda and cfg.amp) else None
        self.per_rank = cfg.batch_size // dist_info.world_size

    def __call__(self, epoch: int) -> dict[str, float]:
        cfg, device = self.cfg, self.device
        lr, dp = lr_at_epoch(cfg, epoch), drop_path_at_epoch(cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        _set_drop_path(self.model, dp)
        loader, n_batches = self._loader(epoch)
        self.net.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        start = time.perf_counter()
        for x, y in progress(loader, desc=f"epoch {epoch}", total=n_batches, unit="batch"):
            totals += self._step(x, y)
        if self.dist_info.enabled:
            import torch.distributed as dist

            dist.all_reduce(totals)
        seconds = time.perf_counter() - start
        loss_sum, correct, count = totals.tolist()
        if not math.isfinite(loss_sum):
            raise ConfigError(f"training diverged at epoch {epoch} (loss {loss_sum}); lower the lr")
        return {"loss": loss_sum / count, "acc": correct / count, "lr": lr, "drop_path": dp,
                "seconds": seconds, "images_per_s": count / seconds}

    def _loader(self, epoch: int) -> tuple[torch.utils.data.DataLoader, int]:
        """This rank's batches of ``epoch``, loaded (by ``num_workers`` processes) in the epoch's order."""
        cfg, rank = self.cfg, self.dist_info.rank
        batches = epoch_batches(len(self.data), cfg.batch_size, cfg.seed, epoch)  # (n_batches, B)
        mine = batches[:, rank * self.per_rank:(rank + 1) * self.per_rank]  # (n_batches, B / world)
        loader = batch_loader(self.data, mine, seed=cfg.seed, epoch=epoch, num_workers=cfg.num_workers,
                              pin_memory=self.on_cuda)
        return loader, len(mine)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step on a (B, C, H, W) batch; returns (3,) float64: summed loss, correct, count."""
        device = self.device
        x = x.to(device, non_blocking=True)
        if self.on_cuda and self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            return torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                                torch.tensor(float(len(y)), dtype=torch.float64, device=device)])


register_method(TrainingMethod(
    name="rfs",
    config_cls=RfsConfig,
    presets=tuple(PRESETS),
    make_config=lambda preset, num_cells, overrides: preset_config(preset, num_cells=num_cells, **overrides),
    train=train_rfs,
    data_kind="batches",
    description="supervised pre-training on the meta-train classes (RFS; the paper's evaluation stage)",
))
