"""Supervised pre-training with the RFS recipe, and the reusable training loop every method runs on.

RFS (Tian et al., ECCV 2020, https://arxiv.org/abs/2003.11539) trains the backbone as an ordinary classifier on
the meta-train classes; MetaNTK-NAS (https://arxiv.org/abs/2203.09137) trains its searched cells that way
(method-facts §7). This module owns:

* :class:`RfsConfig` and the presets ``rfs-mini`` / ``rfs-tiered`` (every field overridable);
* :func:`train_rfs`: the RFS epoch (SGD, step decay, linear drop-path ramp; bf16 autocast and channels_last
  on CUDA; DistributedDataParallel under ``torchrun``) over any ``nn.Module`` and any :class:`BatchSource`;
* :func:`run_epochs`: the method-independent loop: atomic per-epoch checkpoints (safetensors + JSON metadata in
  one file: weights, optimizer, scheduler, RNG and data-order state; no pickle), ``resume``, ``metrics.jsonl``,
  ``metrics.png`` and the final ``model.safetensors``. Other methods (MAML, ANIL, ...) plug their epoch in;
* :data:`TRAINING_METHODS`: the registry behind ``metantk-zoo train --method``.

Data comes in as index-addressable batches, never as a dataset name (only the CLI wires data to training).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..utils.distributed import DistInfo, setup_distributed
from ..utils.io import read_json, save_weights, write_json
from ..utils.progress import progress
from ..utils.rundir import load_state_into, save_model_weights
from .plot import plot_metrics

__all__ = [
    "RfsConfig",
    "PRESETS",
    "preset_config",
    "lr_at_epoch",
    "drop_path_at_epoch",
    "BatchSource",
    "TensorBatchSource",
    "epoch_batches",
    "DistInfo",
    "setup_distributed",
    "Checkpointer",
    "EpochFn",
    "TrainResult",
    "run_epochs",
    "train_rfs",
    "TrainingMethod",
    "TRAINING_METHODS",
    "register_method",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "CHECKPOINT_FILE",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"
CHECKPOINT_FILE = "checkpoints/last.safetensors"


# ---------------------------------------------------------------------------------------------------- config
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


#: preset name -> (field overrides, batch size by cell count). RFS/MetaNTK-NAS values, method-facts §7.
PRESETS: dict[str, tuple[dict[str, Any], dict[int, int]]] = {
    "rfs-mini": (dict(epochs=100, lr=0.02, lr_decay_epochs=(60, 80), drop_path=0.2), {5: 64, 8: 40}),
    "rfs-tiered": (dict(epochs=60, lr=0.01, lr_decay_epochs=(30, 40, 50), drop_path=0.1), {5: 64, 8: 56}),
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


# ---------------------------------------------------------------------------------------------------- data
class BatchSource(Protocol):
    """Training data addressed by index: ``len(src)`` samples, ``src[list_of_indices] -> (x, y)``.

    ``x`` is a float (B, C, H, W) batch, already augmented and normalised; ``y`` the (B,) int64 class labels.
    Augmentation must draw from torch's RNG (as torchvision transforms do), so resume can replay it.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...


class TensorBatchSource:
    """A :class:`BatchSource` over in-memory tensors, with an optional batch transform ``fn(x) -> x``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if len(x) != len(y):
            raise ConfigError(f"x and y disagree in length: {len(x)} vs {len(y)}")
        self.x, self.y, self.transform = x, y.long(), transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.x[idx]
        return (self.transform(x) if self.transform else x), self.y[idx]


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation seeded by (seed, epoch), cut into full batches (drop_last).

    Returns:
        (n_batches, batch_size) int64 indices.
    """
    if num_samples < batch_size:
        raise ConfigError(f"batch_size {batch_size} is larger than the training set ({num_samples} images)")
    g = torch.Generator().manual_seed(_derive_seed(seed, epoch))
    order = torch.randperm(num_samples, generator=g)
    n_batches = num_samples // batch_size
    return order[: n_batches * batch_size].view(n_batches, batch_size)


def _derive_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63 - 1)


class _Batches(torch.utils.data.Dataset):
    """Map-style view whose item i is batch i of the epoch (lets DataLoader workers build whole batches)."""

    def __init__(self, source: BatchSource, batches: torch.Tensor):
        self.source, self.batches = source, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source[self.batches[i].tolist()]


# ---------------------------------------------------------------------------------------------------- distributed
def _default_device(dist_info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------- checkpoints
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Counter):
        return {"__counter__": [[k, v] for k, v in obj.items()]}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__counter__"}:
            return Counter({k: v for k, v in obj["__counter__"]})
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {"python": _jsonable(random.getstate()), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = meta["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))


class Checkpointer:
    """One resumable checkpoint per run, ``RUN_DIR/checkpoints/last.safetensors``, replaced atomically each epoch.

    The file holds the model weights (``model.*``), optimizer tensors (``optim.*``) and torch RNG states
    (``rng.*``); its safetensors metadata holds, as JSON, everything else: epoch, architecture, optimizer
    hyper-parameters and scalar state, scheduler state, Python/NumPy RNG, data-order state, the metrics history
    and any method-specific ``extra``. One file means one atomic rename: a kill at any moment leaves the previous
    checkpoint or the new one, never a mix. Nothing is unpickled on load.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / CHECKPOINT_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def save(
        self,
        *,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None = None,
        architecture: str = "?",
        history: list[dict[str, Any]] | None = None,
        data_state: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        rng: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    ) -> Path:
        """Write the checkpoint of a finished ``epoch`` (1-based), atomically.

        Raises:
            CheckpointError: the write failed (e.g. no space left); the previous checkpoint is untouched.
        """
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt = optimizer.state_dict()
        opt_scalars: dict[str, dict[str, Any]] = {}
        for pid, pstate in opt["state"].items():
            for name, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{name}"] = value
                else:
                    opt_scalars.setdefault(str(pid), {})[name] = value
        rng_tensors, rng_meta = rng if rng is not None else _rng_state()
        tensors.update(rng_tensors)
        meta = {
            "epoch": epoch,
            "architecture": architecture,
            "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "scalars": _jsonable(opt_scalars)},
            "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
            "rng": rng_meta,
            "data": data_state or {},
            "history": _jsonable(history or []),
            "extra": _jsonable(extra or {}),
        }
        try:
            save_weights(self.path, tensors, metadata={"format": "pt", "metantk_checkpoint": json.dumps(meta)})
        except OSError as e:
            raise CheckpointError(
                f"could not write checkpoint {self.path} for epoch {epoch} ({e.strerror or e}); "
                f"the previous checkpoint, if any, is unchanged"
            ) from e
        return self.path

    def load(self, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read the checkpoint: (tensors, metadata). Raises :class:`CheckpointError` when missing or corrupt."""
        if not self.path.is_file():
            raise CheckpointError(f"no checkpoint to resume from: {self.path} does not exist")
        try:
            with safe_open(str(self.path), framework="pt", device=str(device)) as f:
                raw = (f.metadata() or {}).get("metantk_checkpoint")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {self.path} is corrupt or not a safetensors file: {e}") from e
        if raw is None:
            raise CheckpointError(f"{self.path} is a safetensors file but not a metantk-zoo checkpoint (no metadata)")
        try:
            meta = _from_jsonable(json.loads(raw))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"checkpoint {self.path} has corrupt metadata: {e}") from e
        return tensors, meta

    def restore(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None = None,
        architecture: str = "?",
        restore_rng: bool = True,
    ) -> dict[str, Any]:
        """Load the checkpoint into ``model``, ``optimizer``, ``scheduler`` and the RNGs; return its metadata.

        Raises:
            CheckpointError: missing, corrupt, or written by another architecture (the message names both).
        """
        tensors, meta = self.load()
        saved_arch = meta.get("architecture", "?")
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        if saved_arch != "?" and architecture != "?" and saved_arch != architecture:
            raise CheckpointError(
                f"checkpoint {self.path} was written by architecture {saved_arch!r}, "
                f"but the model being trained is {architecture!r}"
            )
        load_state_into(model, model_state, source=f"{self.path} (architecture {saved_arch!r})",
                        architecture=architecture)
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        for pid, scalars in meta["optimizer"]["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        try:
            optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"optimizer state in {self.path} does not fit this optimizer: {e}") from e
        if scheduler is not None and meta.get("scheduler") is not None:
            scheduler.load_state_dict(meta["scheduler"])
        if restore_rng:
            _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
        return meta


# ---------------------------------------------------------------------------------------------------- the loop
#: ``epoch_fn(epoch) -> metrics``: trains one (1-based) epoch and returns its metrics (floats), e.g. loss, acc.
EpochFn = Callable[[int], dict[str, float]]


@dataclass
class TrainResult:
    """What a finished (or already finished) run produced."""

    run_dir: Path
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def run_epochs(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch_fn: EpochFn,
    epochs: int,
    run_dir: str | os.PathLike,
    config: dict[str, Any],
    architecture: str = "?",
    scheduler: Any | None = None,
    resume: bool = False,
    dist_info: DistInfo = DistInfo(),
    data_state_fn: Callable[[int], dict[str, Any]] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    plot_keys: Sequence[tuple[str, str]] = (("loss", "train loss"), ("acc", "train accuracy")),
) -> TrainResult:
    """The method-independent epoch loop: resume, train, log, plot and checkpoint every epoch.

    ``model`` is the bare module (not the DDP wrapper) whose weights are saved. ``config`` is the resolved config
    written to ``config.json``; on resume it must equal the stored one. Only rank 0 writes files. The RNG state is
    saved with each checkpoint and restored on resume, so a resumed run replays the same random draws.

    Args:
        epoch_fn: trains one epoch (1-based) and returns its metrics.
        scheduler: optional torch LR scheduler, saved and restored (``epoch_fn`` steps it).
        data_state_fn: ``epoch -> dict`` describing the data order, stored in the checkpoint.
        on_epoch_end: called after each epoch's checkpoint is written (rank 0 only).

    Returns:
        A :class:`TrainResult`; the final weights are in ``RUN_DIR/model.safetensors``.

    Raises:
        ConfigError: ``resume`` with a different config, or a non-empty run directory without ``resume``.
        CheckpointError: corrupt or foreign checkpoint, or a failed checkpoint write.
    """
    run_dir = Path(run_dir)
    ckpt = Checkpointer(run_dir)
    config = _jsonable(config)
    start, history = 1, []
    if resume and ckpt.exists():
        stored = read_json(run_dir / CONFIG_FILE, what="run config")
        if stored != config:
            diff = sorted(_config_diff(stored, config))
            raise ConfigError(f"--resume of {run_dir} with a different config ({', '.join(diff)}); "
                              f"resume without overriding options, or use a new --out")
        meta = ckpt.restore(model=model, optimizer=optimizer, scheduler=scheduler, architecture=architecture)
        if dist_info.enabled:
            _restore_rank_rng(ckpt, dist_info)
        start, history = int(meta["epoch"]) + 1, list(meta.get("history", []))
        logger.info("resuming %s after epoch %d of %d", run_dir, start - 1, epochs)
    else:
        if ckpt.exists() or (run_dir / "model.safetensors").exists():
            raise ConfigError(f"{run_dir} already holds a training run; pass --resume to continue it or pick a new --out")
        if dist_info.is_main:
            write_json(run_dir / CONFIG_FILE, config)
    resumed_from = start - 1

    if start > epochs:  # already finished
        if dist_info.is_main and not (run_dir / "model.safetensors").exists():
            save_model_weights(run_dir, model, architecture=architecture)
        return TrainResult(run_dir, epochs, history, resumed_from)

    bar = progress(total=epochs, initial=start - 1, desc="train", unit="epoch")
    if not dist_info.is_main:
        bar.disable = True
    with bar:
        for epoch in range(start, epochs + 1):
            metrics = {"epoch": epoch, **epoch_fn(epoch)}
            history.append(metrics)
            rng = _gather_rng(dist_info)
            if dist_info.is_main:
                ckpt.save(epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler,
                          architecture=architecture, history=history,
                          data_state=data_state_fn(epoch) if data_state_fn else {}, rng=rng)
                _write_metrics(run_dir, history)
                plot_metrics(history, run_dir / PLOT_FILE, keys=plot_keys)
                logger.info("epoch %d/%d %s", epoch, epochs,
                            " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in ("loss", "acc")})
    if dist_info.is_main:
        save_model_weights(run_dir, model, architecture=architecture)
    return TrainResult(run_dir, epochs, history, resumed_from)


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    from ..utils.io import atomic_write

    with atomic_write(run_dir / METRICS_FILE, "w") as f:
        for row in history:
            f.write(json.dumps(_jsonable(row)) + "\n")


def _gather_rng(dist_info: DistInfo) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = _rng_state()
    if dist_info.enabled:
        import torch.distributed as dist

        states: list[Any] = [None] * dist_info.world_size
        dist.all_gather_object(states, torch.get_rng_state().tolist())
        for r, s in enumerate(states):
            tensors[f"rng.rank.{r}"] = torch.tensor(s, dtype=torch.uint8)
    return tensors, meta


def _restore_rank_rng(ckpt: Checkpointer, dist_info: DistInfo) -> None:
    tensors, _ = ckpt.load()
    key = f"rng.rank.{dist_info.rank}"
    if key in tensors:  # each rank continues its own torch RNG stream
        torch.set_rng_state(tensors[key])


# ---------------------------------------------------------------------------------------------------- RFS
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
        run_dir: the run directory (see :mod:`metantk_zoo.rundir`).
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
    amp_dtype = torch.bfloat16 if (on_cuda and cfg.amp) else None
    n = len(data)
    per_rank = cfg.batch_size // dist_info.world_size

    def epoch_fn(epoch: int) -> dict[str, float]:
        lr, dp = lr_at_epoch(cfg, epoch), drop_path_at_epoch(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _set_drop_path(model, dp)
        batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch)  # (n_batches, B)
        mine = batches[:, dist_info.rank * per_rank:(dist_info.rank + 1) * per_rank]  # (n_batches, B / world)
        loader = torch.utils.data.DataLoader(
            _Batches(data, mine), batch_size=None, shuffle=False, num_workers=cfg.num_workers,
            pin_memory=on_cuda, generator=torch.Generator().manual_seed(_derive_seed(cfg.seed, -epoch)),
            persistent_workers=False,
        )
        net.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        start = time.perf_counter()
        for x, y in progress(loader, desc=f"epoch {epoch}", total=len(mine), unit="batch"):
            x = x.to(device, non_blocking=True)
            if on_cuda and cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                totals += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                                       torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
        if dist_info.enabled:
            import torch.distributed as dist

            dist.all_reduce(totals)
        seconds = time.perf_counter() - start
        loss_sum, correct, count = totals.tolist()
        if not math.isfinite(loss_sum):
            raise ConfigError(f"training diverged at epoch {epoch} (loss {loss_sum}); lower the lr")
        return {"loss": loss_sum / count, "acc": correct / count, "lr": lr, "drop_path": dp,
                "seconds": seconds, "images_per_s": count / seconds}

    config = {"method": "rfs", "config": cfg.to_dict(), **(extra_config or {})}
    return run_epochs(
        model=model, optimizer=optimizer, epoch_fn=epoch_fn, epochs=cfg.epochs, run_dir=run_dir, config=config,
        architecture=architecture, resume=resume, dist_info=dist_info,
        data_state_fn=lambda e: {"order": "randperm(seed, epoch)", "seed": cfg.seed, "next_epoch": e + 1,
                                 "num_samples": n, "batch_size": cfg.batch_size},
        on_epoch_end=on_epoch_end,
    )


# ---------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TrainingMethod:
    """A training method for ``metantk-zoo train --method NAME``.

    Attributes:
        name: the ``--method`` value.
        config_cls: its frozen config dataclass.
        presets: preset names accepted by ``--preset`` (resolved by ``make_config``).
        make_config: ``(preset, num_cells, overrides) -> config``.
        train: ``(model, data, cfg, *, run_dir, architecture, resume, device, extra_config) -> TrainResult``.
        data_kind: ``"batches"`` (a :class:`BatchSource` of the meta-train split) or ``"episodes"``; the CLI wires
            the data layer accordingly.
        description: one line for ``--help``.
    """

    name: str
    config_cls: type
    presets: tuple[str, ...]
    make_config: Callable[..., Any]
    train: Callable[..., TrainResult]
    data_kind: str = "batches"
    description: str = ""


TRAINING_METHODS: dict[str, TrainingMethod] = {}


def register_method(method: TrainingMethod) -> TrainingMethod:
    """Add ``method`` to :data:`TRAINING_METHODS` (and so to ``metantk-zoo train --method``)."""
    if method.name in TRAINING_METHODS and TRAINING_METHODS[method.name] is not method:
        logger.warning("training method %r registered twice; the last one wins", method.name)
    TRAINING_METHODS[method.name] = method
    return method


register_method(TrainingMethod(
    name="rfs",
    config_cls=RfsConfig,
    presets=tuple(PRESETS),
    make_config=lambda preset, num_cells, overrides: preset_config(preset, num_cells=num_cells, **overrides),
    train=train_rfs,
    data_kind="batches",
    description="supervised pre-training on the meta-train classes (RFS; the paper's evaluation stage)",
))
