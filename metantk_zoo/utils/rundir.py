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
from collections.abc import Callable
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
    "create_model_from_files",
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
    weights = Path(run_dir) / WEIGHTS

    def source() -> str:
        if not weights.is_file():
            raise CheckpointError(f"{run_dir} has no final weights ({WEIGHTS}); did the run finish? (--resume it)")
        file_arch = read_weights_metadata(weights).get("architecture")
        return str(weights) if file_arch is None else f"{weights} (architecture {file_arch!r})"

    return create_model_from_files(spec, weights if pretrained else None, where=str(Path(run_dir) / MODEL_SPEC),
                                   weights_source=source, **overrides)


def create_model_from_files(
    spec: dict[str, Any],
    weights: str | os.PathLike | None,
    *,
    where: str,
    weights_source: Callable[[], str] | None = None,
    build_errors: tuple[type[Exception], ...] = (RuntimeError,),
    error: Callable[[str], Exception] = CheckpointError,
    **overrides: Any,
) -> torch.nn.Module:
    """The one "model from files" loader: build ``spec["architecture"]`` with timm from its plain-JSON
    ``model_args`` and ``num_classes`` (a run's ``model.json``, a Hub repository's ``config.json``), then load the
    safetensors ``weights`` into it.

    Args:
        spec: ``{"architecture", "model_args", "num_classes"}``.
        weights: a safetensors file; ``None`` leaves the fresh initialisation.
        where: the spec's file, named in errors.
        weights_source: called after the model is built, before the weights are read: checks the file and
            returns how errors name it (default: its path).
        build_errors: the exceptions of ``timm.create_model`` that are raised as ``error``; others propagate.
        error: the exception a refused build becomes.

    Raises:
        CheckpointError (or ``error``): the architecture cannot be built from the arguments; corrupt weights, or
            weights of another architecture or shape (the message names both).
    """
    arch = spec["architecture"]
    kwargs = {**spec.get("model_args", {}), "num_classes": spec.get("num_classes", 0), **overrides}
    try:
        model = timm.create_model(arch, **kwargs)
    except build_errors as e:
        raise error(f"{where}: cannot build {arch!r}: {e}") from e
    if weights is not None:
        source = weights_source() if weights_source is not None else str(weights)
        load_state_into(model, load_weights(weights), source=source, architecture=arch)
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


# ---------------------------------------------------------------------------------------------------- policy
#: The marker file every folder this tool creates carries: ``{"kind": ..., "version": ...}``. ``--overwrite``
#: removes only folders that hold it (or, for folders of older versions, that are recognisably this tool's).
MARKER = ".metantk-zoo.json"

#: What each kind of folder holds when an older version (no marker) wrote it: one of these files identifies it.
_LEGACY_SIGNS = {
    "search": ("search.json", "checkpoints/search.json"),
    "train": ("checkpoints/last.safetensors",),
    "demo": ("demo.json",),
    "dataset": ("fewshot.json",),
    "card": ("card.json",),
    "export": ("pretrained_cfg.json", "config.json"),
}


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def dir_kind(path: str | os.PathLike) -> str | None:
    """The kind of metantk-zoo folder ``path`` is (``search``, ``train``, ``demo``, ``dataset``, ``card``,
    ``export``), from its marker or, for folders of older versions, from the files it holds; ``None`` otherwise."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            data = read_json(marker, what="run marker")
        except CheckpointError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            return data["kind"]
    if (path / "checkpoints" / "last.safetensors").is_file():
        return "train"
    config = path / "config.json"
    if config.is_file():
        try:
            data = read_json(config, what="run config")
        except CheckpointError:
            data = {}
        if isinstance(data, dict) and data.get("command") == "search":
            return "search"
        if isinstance(data, dict) and "model" in data and ("method" in data or "config" in data):
            return "train"
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file() and (path / "README.md").is_file():
        return "export"  # before the search signs: an export of a searched network carries its search.json
    for kind, names in _LEGACY_SIGNS.items():
        if kind != "export" and any((path / n).is_file() for n in names):
            return kind
    if is_run_dir(path):
        return "train" if (path / WEIGHTS).is_file() else "search"
    return None


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def check_out_dir(out: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False,
                  option: str = "--out") -> str:
    """Decide, without writing anything, what a command may do with its output folder.

    The one overwrite policy of every command that writes a folder: a missing or empty folder is ``"new"``; an
    existing non-empty one is refused unless ``resume`` (and it holds a run of the same ``kind``: ``"resume"``)
    or ``overwrite`` (and it is a folder this tool made: ``"overwrite"``). The path and its parents must not be
    regular files.

    Returns:
        ``"new"``, ``"resume"`` or ``"overwrite"`` (pass it to :func:`claim_out_dir`).

    Raises:
        ConfigError: the folder cannot be used; the message says what was found and what to do.
    """
    from ..errors import ConfigError

    out = Path(out)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it, not both")
    for parent in [out, *out.parents]:
        if _exists(parent) and not parent.is_dir():
            where = "is" if parent == out else f"is under {parent}, which is"
            raise ConfigError(f"{option} {out} {where} a file, expected a folder; pick another {option}")
    if not out.is_dir() or not any(out.iterdir()):
        return "new"
    found = dir_kind(out)
    what = f"a {found} run" if found in ("search", "train", "demo") else (
        f"a metantk-zoo {found} folder" if found else "files metantk-zoo did not write")
    if overwrite:
        if found is None:
            raise ConfigError(f"{option} {out} holds {what}; --overwrite only replaces folders this tool made "
                              f"(with {MARKER}); remove it yourself or pick another {option}")
        return "overwrite"
    if resume:
        if found != kind:
            raise ConfigError(f"{option} {out} holds {what}, not {_a(kind)} run, so there is nothing to --resume; "
                              f"pick another {option}")
        return "resume"
    if found == kind and kind in ("dataset", "card", "export"):  # no --resume for these
        raise ConfigError(f"{option} {out} exists; pass --overwrite to replace it (it holds {what}) or pick "
                          f"another {option}")
    if found == kind:
        raise ConfigError(f"{option} {out} already holds {what}; pass --resume to continue it, --overwrite to "
                          f"replace it, or pick another {option}")
    if found is not None:
        raise ConfigError(f"{option} {out} already holds {what}, not {_a(kind)} run; pick another {option} "
                          f"(or --overwrite to replace it)")
    raise ConfigError(f"{option} {out} is not empty and holds {what}; pick a new or empty {option}")


def claim_out_dir(out: str | os.PathLike, kind: str, action: str) -> Path:
    """Carry out :func:`check_out_dir`'s decision: remove a folder this tool made (``"overwrite"``), create the
    folder and write its marker. Call it only once everything else has been validated."""
    import shutil

    from ..version import __version__
    from .io import fsync_dir

    out = Path(out)
    if action == "overwrite" and out.is_dir():
        if dir_kind(out) is None:  # checked again right before deleting
            raise CheckpointError(f"{out} is not a folder metantk-zoo made; refusing to remove it")
        shutil.rmtree(out)
        fsync_dir(out.parent)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        write_json(out / MARKER, {"kind": kind, "version": __version__})
    return out


__all__ += ["MARKER", "dir_kind", "check_out_dir", "claim_out_dir"]
