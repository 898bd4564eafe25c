"""The method-independent training loop: :func:`run_epochs`, per-epoch checkpoints, RNG state, metrics, and the
index-addressable data order every method trains on.

* :func:`run_epochs`: atomic per-epoch checkpoints (safetensors + JSON metadata in one file: weights, optimizer,
  scheduler, RNG and data-order state; no pickle), ``resume``, ``metrics.jsonl``, ``metrics.png`` and the final
  ``model.safetensors``. Methods (RFS in :mod:`.rfs`, MAML, ANIL, ... in :mod:`metantk_zoo.meta`) plug their
  epoch in; :func:`run_method` is the entry they share;
* :class:`Checkpointer`: the one-file resumable checkpoint;
* :class:`BatchSource`, :func:`epoch_batches`, :func:`batch_loader`: data as index-addressable batches, never a
  dataset name (only the pipeline wires data to training).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..utils.distributed import DistInfo
from ..utils.io import dumps_json, json_default, read_json, repair_jsonl, save_weights, write_json
from ..utils.progress import progress
from ..utils.rundir import load_state_into, save_model_weights
from .plot import plot_metrics

__all__ = [
    "BatchSource",
    "TensorBatchSource",
    "epoch_batches",
    "batch_loader",
    "Checkpointer",
    "EpochFn",
    "TrainResult",
    "run_epochs",
    "run_method",
    "run_config",
    "check_resume_config",
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
_SINGLE_PROCESS = DistInfo()  # run_epochs' default: one process, rank 0

class BatchSource(Protocol):
    """Training data addressed by index: ``len(src)`` samples, ``src[list_of_indices] -> (x, y)``.

    ``x`` is a float (B, C, H, W) batch, already augmented and normalised; ``y`` the (B,) int64 class labels.
    Augmentation must draw from torch's RNG (as torchvision transforms do), so resume can replay it.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...


class TensorBatchSource:
    """A :class:`BatchSource` over in-memory tensors, with an optional batch transform ``fn(x) -> x``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
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


def batch_loader(source: BatchSource, batches: torch.Tensor, *, seed: int, epoch: int, num_workers: int = 0,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A loader whose item ``i`` is ``source[batches[i]]``: whole batches, in order, built by ``num_workers``
    processes (their seeds drawn from a generator seeded by (``seed``, ``epoch``)).

    Args:
        batches: (n_batches, B) int64 indices, e.g. a slice of :func:`epoch_batches`.
    """
    return torch.utils.data.DataLoader(
        _Batches(source, batches), batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(_derive_seed(seed, -epoch)), persistent_workers=False,
    )


def _jsonable(obj: Any) -> Any:
    """Checkpoint metadata as JSON values: a ``Counter`` is tagged so that :func:`_from_jsonable` gives it back; any
    other non-JSON value goes through :func:`~metantk_zoo.utils.io.json_default` (the package's one coercion)."""
    if isinstance(obj, Counter):
        return {"__counter__": [[k, v] for k, v in obj.items()]}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or type(obj) in (str, int, float, bool):
        return obj
    return _jsonable(json_default(obj))


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
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / CHECKPOINT_FILE

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
            save_weights(self.path, tensors, metadata={"format": "pt", "metantk_checkpoint": dumps_json(meta)})
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
    dist_info: DistInfo = _SINGLE_PROCESS,
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
    if resume:  # before anything is written, checkpoint or not (a run killed before its first checkpoint)
        check_resume_config(run_dir, config)
    if resume and ckpt.exists():
        start, history = _resume(ckpt, _jsonable(config), model=model, optimizer=optimizer, scheduler=scheduler,
                                 architecture=architecture, dist_info=dist_info, epochs=epochs)
    else:
        start, history = 1, []
        _claim(run_dir, ckpt, _jsonable(config), dist_info, resume=resume)
    if resume and dist_info.is_main:
        repair_jsonl(run_dir / METRICS_FILE)  # a torn last line, as a kill mid-write of an older version leaves
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
                _report_epoch(run_dir, history, epochs, plot_keys)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in ("loss", "acc")})
    if dist_info.is_main:
        save_model_weights(run_dir, model, architecture=architecture)
    return TrainResult(run_dir, epochs, history, resumed_from)


def _resume(ckpt: Checkpointer, config: Any, *, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any | None, architecture: str, dist_info: DistInfo, epochs: int) -> tuple[int, list]:
    """Restore a run from its checkpoint after checking its config; return (first epoch to train, history)."""
    run_dir = ckpt.run_dir
    if not (run_dir / CONFIG_FILE).is_file():
        read_json(run_dir / CONFIG_FILE, what="run config")  # CheckpointError: a checkpoint without its config
    check_resume_config(run_dir, config)
    meta = ckpt.restore(model=model, optimizer=optimizer, scheduler=scheduler, architecture=architecture)
    if dist_info.enabled:
        _restore_rank_rng(ckpt, dist_info)
    start, history = int(meta["epoch"]) + 1, list(meta.get("history", []))
    logger.info("resuming %s after epoch %d of %d", run_dir, start - 1, epochs)
    return start, history


def _claim(run_dir: Path, ckpt: Checkpointer, config: Any, dist_info: DistInfo, *, resume: bool = False) -> None:
    """Start a new run: refuse a directory that holds one, write ``config.json`` (rank 0). Resuming a run that
    had not reached its first checkpoint keeps its ``config.json`` (:func:`check_resume_config` found it equal)."""
    if ckpt.exists() or (run_dir / "model.safetensors").exists():
        raise ConfigError(f"{run_dir} already holds a training run; pass --resume to continue it or pick a new --out")
    if dist_info.is_main and not (resume and (run_dir / CONFIG_FILE).is_file()):
        write_json(run_dir / CONFIG_FILE, config)


def run_config(method: str, cfg: Any, extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a run of a registered method: ``{"method", "config": cfg.to_dict(), **extra_config}``
    (what :func:`run_method` writes, so callers can check a ``--resume`` before they write anything)."""
    return _jsonable({"method": method, "config": cfg.to_dict(), **(extra_config or {})})


def check_resume_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Refuse resuming ``run_dir`` with another config; reads only. A run directory without ``config.json`` yet
    passes (there is nothing to compare).

    Raises:
        ConfigError: the stored config differs (the message names the first differing fields).
        CheckpointError: ``config.json`` is corrupt.
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    stored = read_json(path, what="run config")
    mine = json.loads(dumps_json(_jsonable(config)))
    if stored != mine:
        diff = sorted(_config_diff(stored, mine))
        shown = ", ".join(diff[:3]) + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise ConfigError(f"--resume of {run_dir} with a different config ({shown}); resume without overriding "
                          f"options, or use a new --out")


def _report_epoch(run_dir: Path, history: list[dict[str, Any]], epochs: int,
                  plot_keys: Sequence[tuple[str, str]]) -> None:
    """Rewrite ``metrics.jsonl`` and the plot, and log the epoch's metrics."""
    metrics = history[-1]
    _write_metrics(run_dir, history)
    plot_metrics(history, run_dir / PLOT_FILE, keys=plot_keys)
    logger.info("epoch %d/%d %s", metrics["epoch"], epochs,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))


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
            f.write(dumps_json(_jsonable(row)) + "\n")  # standard JSON: a NaN loss is written "nan"


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


def run_method(
    method: str,
    cfg: Any,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch_fn: EpochFn,
    run_dir: str | os.PathLike,
    architecture: str = "?",
    resume: bool = False,
    extra_config: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    **loop_options: Any,
) -> TrainResult:
    """:func:`run_epochs` for a registered training method: ``cfg.epochs`` epochs, and ``config.json`` records
    ``{"method": method, "config": cfg.to_dict(), **extra_config}``.

    Args:
        cfg: the method's frozen config (with ``epochs`` and ``to_dict()``).
        loop_options: more :func:`run_epochs` arguments (``dist_info``, ``data_state_fn``, ``plot_keys``, ...).
    """
    config = run_config(method, cfg, extra_config)
    return run_epochs(model=model, optimizer=optimizer, epoch_fn=epoch_fn, epochs=cfg.epochs, run_dir=run_dir,
                      config=config, architecture=architecture, resume=resume, on_epoch_end=on_epoch_end,
                      **loop_options)
