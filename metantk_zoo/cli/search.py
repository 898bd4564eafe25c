"""``metantk-zoo search``: a MetaNTK-NAS pruning search (or a baseline) into a run directory."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from ._app import app
from ._options import ConfigOption, JsonOption

logger = logging.getLogger(__name__)

_CHUNK = 512


def _preset_names() -> str:
    from ..search import PRESETS

    return ", ".join(PRESETS)


@app.command("search")
def search_command(
    preset: Annotated[str, typer.Option(help="mini5, mini8, tiered5, tiered8 (the published scripts) or tiny.")],
    dataset: Annotated[str, typer.Option(help="Few-shot dataset spec, e.g. 'synthetic:size=32'; its train split.")],
    out: Annotated[Path, typer.Option(help="Run directory (genotype.json, search.json, model.json, config.json).")],
    seed: Annotated[int, typer.Option(help="Run seed; every random draw derives from it.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    backend: Annotated[str, typer.Option(help="NTK backend: hook (fast, exact), opacus or func.")] = "hook",
    share_inputs: Annotated[bool, typer.Option(
        help="Compute the ReLU and pools shared by a state's edges once (same forward; off: every op alone).")] = True,
    method: Annotated[str | None, typer.Option(help="metantk, tenas, regions-only, metantk-only, random.")] = None,
    kernel: Annotated[str | None, typer.Option(help="maml or anil.")] = None,
    inner_lr_time: Annotated[float | None, typer.Option(help="tau (>= 1000 or inf: infinite).")] = None,
    reg_coef: Annotated[float | None, typer.Option(help="lambda of the inner-loop ridge.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Score repeats per candidate.")] = None,
    n_tasks: Annotated[int | None, typer.Option(help="Tasks per meta-batch.")] = None,
    n_way: Annotated[int | None, typer.Option(help="Ways per task.")] = None,
    n_shot: Annotated[int | None, typer.Option(help="Supports per class.")] = None,
    n_query: Annotated[int | None, typer.Option(help="Queries per class.")] = None,
    ntk_batch: Annotated[int | None, typer.Option(help="Images per NTK (tenas baseline).")] = None,
    channels: Annotated[int | None, typer.Option(help="Kernel-network width C.")] = None,
    num_cells: Annotated[int | None, typer.Option(help="Kernel-network cells L.")] = None,
    resolution: Annotated[int | None, typer.Option(help="Search input size.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Kernel-network classifier width (tenas NTK).")] = None,
    region_channels: Annotated[int | None, typer.Option(help="Thin-network width.")] = None,
    region_patches: Annotated[int | None, typer.Option(help="3x3 patches per region batch.")] = None,
    region_batches: Annotated[int | None, typer.Option(help="Region batches per repeat.")] = None,
    ops: Annotated[str | None, typer.Option(help="Comma-separated candidate ops.")] = None,
    protocol: Annotated[str | None, typer.Option(help="shared (fast default) or reference draws.")] = None,
    shared_head: Annotated[bool | None, typer.Option(help="Candidate reuses the unpruned net's head.")] = None,
    init: Annotated[str | None, typer.Option(help="default (as the reference ran) or kaiming.")] = None,
    episode_pool: Annotated[int | None, typer.Option(help="Fixed episode pool size (0: fresh episodes).")] = None,
    augment: Annotated[bool | None, typer.Option(help="TE-NAS support augmentation.")] = None,
    precision: Annotated[int | None, typer.Option(help="Score rounding (decimals / significant figures).")] = None,
    stale_group_origin: Annotated[bool | None, typer.Option(help="Edge pass compares with its start network.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search a cell pair by MetaNTK-NAS pruning and write it to a run directory.

    Example: metantk-zoo search --preset tiny --dataset synthetic:size=32 --seed 0 --out runs/tiny
    """
    from ..io import write_json
    from ..rundir import write_model_spec
    from ..search import PRESETS, SearchConfig, search

    if preset not in PRESETS:
        raise ConfigError(f"unknown search preset {preset!r}; known presets: {_preset_names()}")
    overrides: dict[str, Any] = {
        k: v for k, v in dict(
            method=method, kernel=kernel, inner_lr_time=inner_lr_time, reg_coef=reg_coef, repeats=repeats,
            n_tasks=n_tasks, n_way=n_way, n_shot=n_shot, n_query=n_query, ntk_batch=ntk_batch, channels=channels,
            num_cells=num_cells, resolution=resolution, num_classes=num_classes, region_channels=region_channels,
            region_patches=region_patches, region_batches=region_batches, protocol=protocol, shared_head=shared_head,
            init=init, episode_pool=episode_pool, augment=augment, precision=precision,
            stale_group_origin=stale_group_origin,
        ).items() if v is not None
    }
    if ops is not None:
        overrides["ops"] = tuple(o.strip() for o in (ops if isinstance(ops, str) else ",".join(ops)).split(",") if o)
    cfg = SearchConfig.preset(preset, **overrides)
    rank, device = _init_distributed(device)
    source, n_train_classes = _load_source(dataset, cfg.resolution)
    out.mkdir(parents=True, exist_ok=True)
    options = {"preset": preset, "dataset": dataset, "seed": seed, "device": device, "backend": backend,
               "share_inputs": share_inputs, **cfg.to_dict()}
    options["ops"] = ",".join(cfg.ops)
    from .. import __version__

    if rank == 0:
        write_json(out / "config.json", {"version": __version__, "command": "search", "config": options})
    result = search(source, cfg, seed=seed, device=device, checkpoint=out / "checkpoints" / "search.json",
                    resume=resume, backend=backend, share_inputs=share_inputs)
    if rank != 0:
        return
    g = result.genotype
    write_json(out / "genotype.json", g.to_dict())
    write_json(out / "search.json", {**result.to_dict(), "preset": preset, "dataset": dataset})
    write_model_spec(out, "metantk_cell", {"genotype": g.to_dict(), "num_cells": cfg.num_cells},
                     num_classes=n_train_classes)
    with open(out / "metrics.jsonl", "w") as f:
        for stage in result.rounds:
            pruned = [f"{c['cell']}/{c['edge_name']}/{c['op']}" for c in stage["candidates"] if c["pruned"]]
            f.write(json.dumps({"stage": stage["name"], "candidates": len(stage["candidates"]), "pruned": pruned})
                    + "\n")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=_json_default))
    else:
        typer.echo(g.to_darts())
        typer.echo(f"wrote {out / 'genotype.json'} and {out / 'search.json'} ({result.wall_time:.1f} s scoring)",
                   err=True)


def _init_distributed(device: str) -> tuple[int, str]:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group: gloo on CPU, NCCL with one GPU per rank."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return dist.get_rank(), device


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and math.isinf(obj):
        return str(obj)
    raise TypeError(type(obj).__name__)


def _load_source(spec: str, resolution: int):
    """The dataset's train split as an in-memory search source (images resized to the search resolution once)."""
    import torch

    from ..progress import progress
    from ..search import TensorSource
    from ..search_inputs import resize_uint8

    try:
        from ..data import load_fewshot, load_images
    except ImportError as e:  # pragma: no cover - the data layer ships with the package
        raise ConfigError(f"the data layer (metantk_zoo.data) is not available: {e}") from e
    fs = load_fewshot(spec)
    split = fs.split("train")
    labels = torch.as_tensor(fs.labels("train"), dtype=torch.int64)
    chunks = []
    for start in progress(range(0, len(labels), _CHUNK), desc="loading search images"):
        idx = list(range(start, min(start + _CHUNK, len(labels))))
        chunks.append(resize_uint8(load_images(split, idx), resolution))
    images = torch.cat(chunks) if chunks else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
    return TensorSource(images, labels), len(fs.class_names("train"))

