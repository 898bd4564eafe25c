"""``metantk-zoo train``: train a backbone (timm name, genotype or search run) with a registered training method.

Methods come from :data:`metantk_zoo.train.TRAINING_METHODS` (``rfs`` and the meta-learning methods); the wiring of
dataset, model and method is :func:`metantk_zoo.pipeline.run_train`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import meta as _meta  # noqa: F401  (registers maml, fomaml, hfmaml, anil, fobmaml)
from ..train import TRAINING_METHODS
from ._app import app
from ._options import ConfigOption, DeviceOption

__all__ = ["train_command"]


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects FIELD=VALUE, found {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


# ---------------------------------------------------------------------------------------------------- command
@app.command("train")
def train_command(
    model: Annotated[str, typer.Option("--model", help="timm model name, or a genotype (DARTS/JSON text, "
                                                       "genotype.json, or a search run directory).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset spec, e.g. synthetic or synthetic:size=32.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or continue with --resume).")],
    method: Annotated[str, typer.Option("--method", help="Training method: "
                                        f"{', '.join(TRAINING_METHODS) or 'rfs'} (registry "
                                        "TRAINING_METHODS).")] = "rfs",
    preset: Annotated[str | None, typer.Option("--preset", help="Recipe preset, e.g. rfs-mini, rfs-tiered.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override the preset's epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the initial learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Override the global batch size.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Data-order and augmentation seed.")] = None,
    num_workers: Annotated[int | None, typer.Option("--workers", help="Data-loading worker processes.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config field, FIELD=VALUE (JSON "
                                                  "value), repeatable: --set lr_decay_epochs=[30,40]")] = None,
    num_cells: Annotated[int | None, typer.Option("--num-cells", help="Cells of a metantk model.")] = None,
    init_channels: Annotated[int | None, typer.Option("--init-channels", help="Width C of a metantk model.")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Training resolution (default: the "
                                                   "model's input size, 84 for the zoo).")] = None,
    device: DeviceOption = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last "
                                         "checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it holds a run this tool made "
                                            "(never an arbitrary folder).")] = False,
    config: ConfigOption = None,
) -> None:
    """Train a backbone on the meta-train classes and write a run directory (config, metrics, plot, weights).

    Example: metantk-zoo train --model metantk_cell5 --dataset synthetic --preset rfs-mini --epochs 10 --out runs/c5
    """
    from ..pipeline import run_train

    if method not in TRAINING_METHODS:
        raise typer.BadParameter(f"unknown method {method!r}; known: {', '.join(TRAINING_METHODS)}",
                                 param_hint="--method")
    spec = TRAINING_METHODS[method]
    preset = preset or spec.presets[0]
    if preset not in spec.presets:
        raise typer.BadParameter(f"method {method} has presets {', '.join(spec.presets)}, not {preset!r}",
                                 param_hint="--preset")
    overrides = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "num_workers": num_workers,
                 **_parse_sets(set_ or [])}
    result = run_train(model, dataset, out, method=method, preset=preset, overrides=overrides, num_cells=num_cells,
                       init_channels=init_channels, image_size=image_size, device=device, resume=resume,
                       overwrite=overwrite)
    final = result.final
    typer.echo(json.dumps({"run_dir": str(out), "epochs": result.epochs, "resumed_from": result.resumed_from,
                           **{k: final.get(k) for k in ("loss", "acc")}}))
