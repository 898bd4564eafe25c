"""The one device rule: ``--device auto|cpu|cuda|cuda:N`` -> a :class:`torch.device`, checked before any work.

Every command and pipeline function resolves its device here and nowhere else (house style §4): ``auto`` (the
default) is CUDA when a GPU is present, else the CPU; ``cuda`` is this process's GPU (``LOCAL_RANK`` under
``torchrun``, else the current CUDA device); ``cuda:N`` is GPU ``N``. A device that is not there is a
:class:`~metantk_zoo.errors.ConfigError` of one line, raised before anything is written. Library functions below
the pipeline run on the device of their inputs.
"""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError

__all__ = ["DEVICE_CHOICES", "resolve_device", "device_help"]

#: what ``--device`` accepts, for help texts and messages
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def device_help() -> str:
    """The ``--device`` help text every command shows."""
    return f"{DEVICE_CHOICES} (default auto: CUDA when a GPU is present, else the CPU)."


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _this_process_gpu() -> int:
    """``LOCAL_RANK`` under a multi-process ``torchrun`` job, else the current CUDA device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ.get("LOCAL_RANK", "0"))
    return torch.cuda.current_device()


def _missing(spec: str, why: str) -> ConfigError:
    n = _cuda_count()
    there = ", ".join(["cpu", "cuda"] + [f"cuda:{i}" for i in range(n)]) if n else "cpu"
    return ConfigError(f"--device {spec}: {why}; this machine has {there} (or use --device auto)")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device spec into a :class:`torch.device` that exists on this machine.

    Args:
        spec: ``"auto"`` or ``None`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` (this process's GPU),
            ``"cuda:N"``, or a :class:`torch.device` (checked the same way). Case and surrounding spaces are ignored.

    Returns:
        The device; a CUDA device always carries its index (``cuda:0``, never bare ``cuda``).

    Raises:
        ConfigError: an unknown spec, CUDA asked for where there is none, or a GPU index this machine lacks.
    """
    if spec is None:
        spec = "auto"
    text = str(spec).strip().lower()
    if text == "auto":
        if _cuda_count():
            return torch.device("cuda", _this_process_gpu())
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device {spec}: not a device; expected {DEVICE_CHOICES}") from e
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise ConfigError(f"--device {spec}: expected {DEVICE_CHOICES}")
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ConfigError(f"--device {spec}: {dev.type} devices are not supported; expected {DEVICE_CHOICES}")
    n = _cuda_count()
    if n == 0:
        raise _missing(str(spec), "no CUDA GPU is available (torch.cuda.is_available() is False)")
    index = _this_process_gpu() if dev.index is None else dev.index
    if index >= n:
        raise _missing(str(spec), f"there is no CUDA device {index} ({n} GPU{'s' if n > 1 else ''} present)")
    return torch.device("cuda", index)
