"""``metantk-zoo search``: a MetaNTK-NAS pruning search (or a baseline) into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..utils.io import dumps_json
from ._app import app
from ._options import ConfigOption, DeviceOption, JsonOption


@app.command("search")
def search_command(
    preset: Annotated[str, typer.Option(help="mini5, mini8, tiered5, tiered8 (the published scripts) or tiny.")],
    dataset: Annotated[str, typer.Option(help="Few-shot dataset spec, e.g. 'synthetic:size=32'; its train split.")],
    out: Annotated[Path, typer.Option(help="Run directory (genotype.json, search.json, model.json, config.json).")],
    seed: Annotated[int, typer.Option(help="Run seed; every random draw derives from it.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it holds a run this tool made "
                                            "(never an arbitrary folder).")] = False,
    device: DeviceOption = "auto",
    backend: Annotated[str, typer.Option(help="NTK backend: hook (fast, exact), opacus or func.")] = "hook",
    candidate_batch: Annotated[int | None, typer.Option(
        min=1, help="Candidates scored in one forward and backward (same scores; default: 1 on the CPU, on CUDA as "
                    "many as half the free GPU memory holds).")] = None,
    kernel_graph: Annotated[str, typer.Option(
        help="eager, cuda-graph (CUDA) or fx: record each stage's kernel pass once and replay it per candidate "
             "batch (same scores to float rounding).")] = "eager",
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
    protocol: Annotated[str | None, typer.Option(
        help="reference (fresh draws and unpruned kernel per candidate; the paper presets' default) or shared "
             "(the unpruned kernel once per round; the tiny preset's).")] = None,
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
    from ..pipeline import run_search
    from ..utils.distributed import current

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
    result = run_search(preset, dataset, out, seed=seed, resume=resume, device=device, backend=backend,
                        share_inputs=share_inputs, overrides=overrides, overwrite=overwrite,
                        candidate_batch=candidate_batch, kernel_graph=kernel_graph)
    if current().rank != 0:
        return
    if as_json:
        typer.echo(dumps_json(result.to_dict()))
    else:
        typer.echo(result.genotype.to_darts())
        typer.echo(f"wrote {out / 'genotype.json'} and {out / 'search.json'} ({result.wall_time:.1f} s scoring)",
                   err=True)
