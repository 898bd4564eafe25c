"""Export a run directory as a timm Hub repository, and check a repository folder loads back.

A run directory (:mod:`metantk_zoo.utils.rundir`) becomes one repository folder::

    model.safetensors   the run's weights (safetensors only, never a pickle)
    config.json         timm's Hub config: architecture, num_classes, pretrained_cfg and model_args with the
                        genotype as plain JSON, so timm.create_model("hf-hub:ORG/NAME", pretrained=True) rebuilds it
    genotype.json       the genotype, canonical JSON
    search.json, run_config.json, metrics.jsonl, eval.json    the search and training records the run has
    cells.svg, cells.png                                      the cell diagram of the card
    README.md           Hub model card (:mod:`.card`)

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from timm.models import is_model
from timm.models._hub import save_config_for_hf

from ..errors import CheckpointError, GenotypeError, HubError
from ..genotype import Genotype
from ..utils.io import read_json, sha256_file, staged_dir, write_json
from ..utils.rundir import MODEL_SPEC, WEIGHTS, create_model_from_files, create_model_from_run
from .card import model_card
from .cards import card_data, cell_diagram_png, cell_diagram_svg

__all__ = ["RECORDS", "REPO_FILES", "export_run", "check_repo_dir", "write_manifest_files"]

logger = logging.getLogger(__name__)

#: Run files copied into the repository, with their name there (the run's config.json would clash with timm's).
RECORDS = {"genotype.json": "genotype.json", "search.json": "search.json", "config.json": "run_config.json",
           "metrics.jsonl": "metrics.jsonl", "eval.json": "eval.json"}
#: Files every exported repository has.
REPO_FILES = ("README.md", "config.json", "model.safetensors", "genotype.json", "cells.svg", "cells.png")


def _model_args(model: torch.nn.Module, spec: dict[str, Any]) -> dict[str, Any]:
    args = {k: v for k, v in spec.get("model_args", {}).items() if k not in ("drop_rate", "drop_path_rate")}
    args["genotype"] = model.genotype.to_dict()  # always explicit, as plain JSON
    args["num_cells"] = model.num_cells
    return args


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, repo_id: str = "ORG/NAME") -> list[str]:
    """Write the Hub repository of a run into ``out_dir`` (created; must be empty) and return its file list.

    The run's weights are loaded into the rebuilt network first, so a run whose weights do not fit its
    ``model.json`` is refused before anything is written.

    Raises:
        CheckpointError: not a run directory, missing or corrupt weights, weights of another shape.
        HubError: ``out_dir`` exists and is not empty.
    """
    run = Path(run_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HubError(f"{out} is not empty; export into a new folder")
    model = create_model_from_run(run)  # CheckpointError on anything wrong with the run
    spec = read_json(run / MODEL_SPEC, what="model spec")
    data = card_data(run)
    with staged_dir(out, prefix=".export-") as staging:
        shutil.copyfile(run / WEIGHTS, staging / "model.safetensors")
        save_config_for_hf(model, str(staging / "config.json"), model_args=_model_args(model, spec))
        config = json.loads((staging / "config.json").read_text())
        write_json(staging / "genotype.json", model.genotype.to_dict())
        for src, dst in RECORDS.items():
            if src != "genotype.json" and (run / src).is_file():
                shutil.copyfile(run / src, staging / dst)
        (staging / "cells.svg").write_text(cell_diagram_svg(data.genotype, data.name))
        (staging / "cells.png").write_bytes(cell_diagram_png(data.genotype, data.name))
        (staging / "README.md").write_text(model_card(data, config, repo_id))
        check_repo_dir(staging)  # what we would upload loads back
    files = sorted(p.name for p in out.iterdir())
    logger.info("exported %s to %s: %s", run, out, ", ".join(files))
    return files


def check_repo_dir(path: str | os.PathLike, *, source: str | None = None) -> torch.nn.Module:
    """Check a downloaded or exported repository and return its model with the weights loaded.

    Checks that ``config.json`` and ``model.safetensors`` are present, that the architecture is registered,
    that ``model_args.genotype`` parses, and that the weights load with matching keys and shapes.

    Raises:
        HubError: a file is missing or the architecture is unknown. GenotypeError: the genotype does not parse.
        CheckpointError: corrupt safetensors or weights that do not fit the architecture.
    """
    path = Path(path)
    where = source or str(path)
    if not (path / "config.json").is_file():
        raise HubError(f"{where} has no config.json: not a timm repository")
    if not (path / "model.safetensors").is_file():
        raise HubError(f"{where} has no model.safetensors (metantk-zoo never loads pickled weights)")
    try:
        config = read_json(path / "config.json", what="config.json")
    except CheckpointError as e:
        raise HubError(f"{where}: {e}") from e
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(arch, str) or not is_model(arch):
        raise HubError(f"{where}/config.json names architecture {arch!r}, which timm does not know "
                       "(metantk-zoo architectures are metantk_*; did you `import metantk_zoo`?)")
    args = dict(config.get("model_args") or {})
    if args.get("genotype") is not None:
        try:
            args["genotype"] = Genotype.coerce(args["genotype"])
        except GenotypeError as e:
            raise GenotypeError(f"{where}/config.json: model_args.genotype does not parse: {e}") from e
    args.pop("num_classes", None)
    spec = {"architecture": arch, "model_args": args, "num_classes": config.get("num_classes", 0)}
    model = create_model_from_files(spec, path / "model.safetensors", where=f"{where}/config.json",
                                    weights_source=lambda: f"{where}/model.safetensors",
                                    build_errors=(TypeError, ValueError, RuntimeError), error=HubError)
    return model.eval()


def write_manifest_files(path: str | os.PathLike) -> dict[str, str]:
    """``{file: sha256}`` of a repository folder's files (what a ``hub/`` manifest records)."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.startswith(".")}
