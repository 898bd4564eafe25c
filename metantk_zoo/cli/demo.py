"""``metantk-zoo demo``: the whole pipeline on the embedded benchmark, on whatever device is there.

Stages, each recorded in ``OUT/demo.json`` when done so that ``--resume`` skips it (and the search and training
stages resume from their own checkpoints when they were interrupted part-way):

1. ``search``   MetaNTK-NAS search with the ``tiny`` preset                       -> OUT/search/
2. ``random``   the random-cell baseline (same preset, ``method=random``)          -> OUT/random/
3. ``train-*``  RFS training of both genotypes, identical recipe and data order
                                                                   -> OUT/train_search/, OUT/train_random/
4. ``eval``     5-way 1-shot and 5-shot few-shot evaluation of both, and of the searched network untrained, on
                identical episodes (same manifest hash)
5. ``card``     the searched genotype's card with its results                      -> OUT/card/
6. ``export``   a Hub-layout export, loaded back with ``timm.create_model('local-dir:...')`` and checked
                against the trained model's logits                                   -> OUT/hub_export/

Intermediate command output goes to stderr; the final table (or ``--json``) goes to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..pipeline import DEMO_ROWS, run_demo
from ._app import app
from ._options import DeviceOption, JsonOption

__all__ = ["demo_command"]


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory holding every stage's output.")] = Path("demo_run"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted demo in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it holds a run this tool made "
                                            "(never an arbitrary folder).")] = False,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset spec (default: the embedded benchmark at "
                                         "32x32, generated on first use).")] = "synthetic:size=32",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the search, training and episodes.")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help="RFS epochs for each network (lr x0.1 at 70% and 90%).")] = 10,
    init_channels: Annotated[int, typer.Option("--init-channels", help="Width C of the trained networks.")] = 16,
    num_cells: Annotated[int, typer.Option("--num-cells", help="Cells of the trained networks.")] = 3,
    episodes: Annotated[int, typer.Option("--episodes", help="Few-shot test episodes per setting.")] = 300,
    n_query: Annotated[int, typer.Option("--n-query", help="Queries per class in each test episode.")] = 15,
    image_size: Annotated[int, typer.Option("--image-size", help="Training and evaluation resolution.")] = 32,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Search, train, evaluate and export on the embedded benchmark: the main job, end to end.

    Example: metantk-zoo demo --out demo_run   (interrupted? metantk-zoo demo --out demo_run --resume)
    """
    summary = run_demo(out, resume=resume, dataset=dataset, seed=seed, epochs=epochs, init_channels=init_channels,
                       num_cells=num_cells, episodes=episodes, n_query=n_query, image_size=image_size, device=device,
                       log=lambda line: typer.echo(line, err=True), overwrite=overwrite)
    card, export = summary["card"], summary["export"]
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"metantk-zoo demo on {dataset} ({summary['device']}); {episodes} episodes per setting, identical "
               f"for every row")
    typer.echo(f"{'backbone':<24}{'5-way 1-shot':>18}{'5-way 5-shot':>18}")
    for name, label in DEMO_ROWS.items():
        row = summary["results"][name]
        cells = [f"{100 * row[k]['mean']:.2f} ± {100 * row[k]['ci95']:.2f}" for k in ("5way_1shot", "5way_5shot")]
        typer.echo(f"{label:<24}{cells[0]:>18}{cells[1]:>18}")
    typer.echo(f"card: {card['card.md']}   export: {export['local_dir']} (reloaded, logits identical)")
    typer.echo(f"total {sum(summary['seconds'].values()):.0f} s; everything is in {out}")
