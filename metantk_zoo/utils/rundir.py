"""The run directory: one folder per search, training or demo run, laid out the same way for every job.

::

    RUN_DIR/
      config.json         resolved config of the job, with the package version
      model.json          {"architecture", "model_args", "num_classes"}: rebuilds the exact network with timm
      model.safetensors   final weights (written last, when the job completed)
      metrics.jsonl       one JSON object per epoch / round
      metrics.png         loss and accuracy per epoch (training runs)
      checkpoints/        resumable state of an unfinished job (safetensors + JSON; never pickle)
      genotype.json       searched genotype, canonical JSON (search runs)
      search.json         the SearchResult (search runs)
      eval.json           few-shot results, a list of EvalResult dicts (after ``metantk-zoo eval``)

``model_args`` is plain JSON (a genotype as its dict), exactly what timm's Hub ``config.json`` carries, so a run
exports to the Hub without translation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch

from ..errors import CheckpointError
from .io import load_weights, read_json, read_weights_metadata, save_weights, write_json

__all__ = [
    "MODEL_SPEC",
    "WEIGHTS",
    "write_model_spec",
    "read_model_spec",
    "create_model_from_run",
    "load_state_into",
    "is_run_dir",
]

MODEL_SPEC = "model.json"
WEIGHTS = "model.safetensors"


def write_model_spec(run_dir: str | os.PathLike, architecture: str, model_args: dict[str, Any], num_classes: int):
    """Record how to rebuild the run's network: ``timm.create_model(architecture, num_classes=..., **model_args)``."""
    write_json(Path(run_dir) / MODEL_SPEC, {"architecture": architecture, "model_args": model_args,
                                            "num_classes": num_classes})


def read_model_spec(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``model.json``; :class:`CheckpointError` if the folder is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    spec = read_json(run_dir / MODEL_SPEC, what="model spec")
    if not isinstance(spec, dict) or "architecture" not in spec:
        raise CheckpointError(f"{run_dir / MODEL_SPEC}: expected an object with 'architecture', found {spec!r:.80}")
    return spec


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MODEL_SPEC).is_file()


def create_model_from_run(run_dir: str | os.PathLike, *, pretrained: bool = True, **overrides: Any) -> torch.nn.Module:
    """Rebuild a run's network with timm and, with ``pretrained``, load its final ``model.safetensors``.

    Raises:
        CheckpointError: not a run directory, no final weights, corrupt weights, or weights of another
            architecture (the message names both).
    """
    spec = read_model_spec(run_dir)
    kwargs = {**spec.get("model_args", {}), "num_classes": spec.get("num_classes", 0), **overrides}
    try:
        model = timm.create_model(spec["architecture"], **kwargs)
    except RuntimeError as e:
        raise CheckpointError(f"{Path(run_dir) / MODEL_SPEC}: cannot build {spec['architecture']!r}: {e}") from e
    if pretrained:
        weights = Path(run_dir) / WEIGHTS
        if not weights.is_file():
            raise CheckpointError(f"{run_dir} has no final weights ({WEIGHTS}); did the run finish? (--resume it)")
        file_arch = read_weights_metadata(weights).get("architecture")
        source = str(weights) if file_arch is None else f"{weights} (architecture {file_arch!r})"
        load_state_into(model, load_weights(weights), source=source, architecture=spec["architecture"])
    return model


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str, architecture: str = "?"):
    """``load_state_dict`` with one clear error naming both architectures when keys or shapes disagree."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{len(mismatched)} shape mismatch(es), e.g. {k}: model {tuple(own[k].shape)} vs "
                          f"file {tuple(state[k].shape)}")
        if missing:
            detail.append(f"{len(missing)} key(s) missing from the file, e.g. {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected key(s) in the file, e.g. {unexpected[0]}")
        name = type(model).__name__ if architecture == "?" else architecture
        raise CheckpointError(
            f"weights in {source} do not fit {name} ({getattr(model, 'genotype', '') and 'genotype-built '}"
            f"{type(model).__name__}): {'; '.join(detail)}"
        )
    model.load_state_dict(state)


def save_model_weights(run_dir: str | os.PathLike, model: torch.nn.Module, architecture: str | None = None) -> Path:
    """Write the final ``model.safetensors`` of a run, atomically (``architecture`` goes into its metadata)."""
    path = Path(run_dir) / WEIGHTS
    metadata = {"format": "pt"} if architecture is None else {"format": "pt", "architecture": architecture}
    save_weights(path, model.state_dict(), metadata=metadata)
    return path


__all__.append("save_model_weights")
