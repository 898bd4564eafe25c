"""``metantk-zoo demo``: the whole pipeline on the embedded benchmark, on whatever device is there.

Stages, each recorded in ``OUT/demo.json`` when done so that ``--resume`` skips it (and the search and training
stages resume from their own checkpoints when they were interrupted part-way):

1. ``search``   MetaNTK-NAS search with the ``tiny`` preset                       -> OUT/search/
2. ``random``   the random-cell baseline (same preset, ``method=random``)          -> OUT/random/
3. ``train-*``  RFS training of both genotypes, identical recipe and data order    -> OUT/train_search/, OUT/train_random/
4. ``eval``     5-way 1-shot and 5-shot few-shot evaluation of both, and of the searched network untrained, on
                identical episodes (same manifest hash)
5. ``card``     the searched genotype's card with its results                      -> OUT/card/
6. ``export``   a Hub-layout export, loaded back with ``timm.create_model('local-dir:...')`` and checked
                against the trained model's logits                                   -> OUT/hub_export/

Intermediate command output goes to stderr; the final table (or ``--json``) goes to stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import CheckpointError
from ..io import read_json, write_json
from ._app import app
from ._options import JsonOption

STATE_FILE = "demo.json"
STAGES = ("search", "random", "train-search", "train-random", "eval", "card", "export")


class _Stages:
    """The demo's completed stages and their results, persisted atomically after each one."""

    def __init__(self, out: Path, resume: bool, settings: dict[str, Any]):
        self.path = out / STATE_FILE
        if self.path.exists() and not resume:
            raise CheckpointError(f"{out} already holds a demo run; add --resume to continue it or pick another --out")
        self.state: dict[str, Any] = {"settings": settings, "done": {}}
        if resume and self.path.exists():
            self.state = read_json(self.path, what="demo state")
            if self.state.get("settings") != settings:
                raise CheckpointError(f"{self.path} was made with other settings {self.state.get('settings')}; "
                                      f"resume with the same options or pick another --out")
        out.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.state)

    def run(self, name: str, fn) -> Any:
        if name in self.state["done"]:
            typer.echo(f"[demo] {name}: done earlier, skipped", err=True)
            return self.state["done"][name]["result"]
        typer.echo(f"[demo] {name} ...", err=True)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            result = fn()
        seconds = time.perf_counter() - start
        self.state["done"][name] = {"seconds": round(seconds, 1), "result": result}
        write_json(self.path, self.state)
        typer.echo(f"[demo] {name}: {seconds:.1f} s", err=True)
        return result


#: the rows of the demo's table: both trained networks, and the searched one untrained (same episodes)
ROWS = {"search": "MetaNTK-NAS (tiny)", "random": "random cell", "untrained": "MetaNTK-NAS, untrained"}


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory holding every stage's output.")] = Path("demo_run"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted demo in --out.")] = False,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset spec (default: the embedded benchmark at "
                                         "32x32, generated on first use).")] = "synthetic:size=32",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the search, training and episodes.")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help="RFS epochs for each network (lr x0.1 at 70% and 90%).")] = 10,
    init_channels: Annotated[int, typer.Option("--init-channels", help="Width C of the trained networks.")] = 16,
    num_cells: Annotated[int, typer.Option("--num-cells", help="Cells of the trained networks.")] = 3,
    episodes: Annotated[int, typer.Option("--episodes", help="Few-shot test episodes per setting.")] = 300,
    n_query: Annotated[int, typer.Option("--n-query", help="Queries per class in each test episode.")] = 15,
    image_size: Annotated[int, typer.Option("--image-size", help="Training and evaluation resolution.")] = 32,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda if present).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Search, train, evaluate and export on the embedded benchmark: the main job, end to end.

    Example: metantk-zoo demo --out demo_run   (interrupted? metantk-zoo demo --out demo_run --resume)
    """
    import torch

    from .evaluate import load_backbone, run_eval
    from .search import search_command
    from .train import train_command

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dict(dataset=dataset, seed=seed, epochs=epochs, init_channels=init_channels, num_cells=num_cells,
                    episodes=episodes, n_query=n_query, image_size=image_size, device=device)
    stages = _Stages(out, resume, settings)
    runs = {"search": out / "search", "random": out / "random"}
    trained = {"search": out / "train_search", "random": out / "train_random"}

    for name, method in (("search", "metantk"), ("random", "random")):
        stages.run(name, lambda name=name, method=method: _search(
            search_command, runs[name], dataset, seed, method, device, resume))

    for name in ("search", "random"):
        stages.run(f"train-{name}", lambda name=name: _train(
            train_command, runs[name], trained[name], dataset, seed, epochs, num_cells, init_channels, image_size, device,
            (trained[name] / "checkpoints").exists()))

    def evaluate() -> dict[str, Any]:
        from ..evaluate import save_eval_result
        from ..rundir import create_model_from_run

        results: dict[str, Any] = {}
        for name in ROWS:
            if name == "untrained":  # the searched architecture with fresh weights: what training added
                torch.manual_seed(seed)
                net = create_model_from_run(trained["search"], pretrained=False)
            else:
                net = load_backbone(str(trained[name]))
            for shot in (1, 5):
                r = run_eval(net, dataset, protocol="rfs", image_size=image_size, device=device, model_name=name,
                             n_shot=shot, n_query=n_query, n_episodes=episodes, seed=seed)
                results[f"{name}/{shot}"] = r.to_dict()
                if name != "untrained":
                    save_eval_result(trained[name] / "eval.json", r)
        hashes = {k.split("/")[1]: set() for k in results}
        for k, r in results.items():
            hashes[k.split("/")[1]].add(r["manifest_hash"])
        assert all(len(h) == 1 for h in hashes.values()), "every row must see identical episodes"
        return results

    results = stages.run("eval", evaluate)
    card = stages.run("card", lambda: _card(trained["search"], out / "card"))
    export = stages.run("export", lambda: _export(trained["search"], out / "hub_export"))

    summary = {
        "out": str(out),
        "device": device,
        "genotypes": {name: read_json(runs[name] / "genotype.json") for name in runs},
        "results": {
            name: {f"5way_{shot}shot": {"mean": results[f"{name}/{shot}"]["mean"],
                                        "ci95": results[f"{name}/{shot}"]["ci95"]} for shot in (1, 5)}
            for name in ROWS
        },
        "episodes": episodes,
        "manifest_hashes": {str(shot): results[f"search/{shot}"]["manifest_hash"] for shot in (1, 5)},
        "card": card,
        "export": export,
        "seconds": {k: v["seconds"] for k, v in stages.state["done"].items()},
    }
    write_json(out / "summary.json", summary)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"metantk-zoo demo on {dataset} ({device}); {episodes} episodes per setting, identical for every row")
    typer.echo(f"{'backbone':<24}{'5-way 1-shot':>18}{'5-way 5-shot':>18}")
    for name, label in ROWS.items():
        row = summary["results"][name]
        cells = [f"{100 * row[k]['mean']:.2f} ± {100 * row[k]['ci95']:.2f}" for k in ("5way_1shot", "5way_5shot")]
        typer.echo(f"{label:<24}{cells[0]:>18}{cells[1]:>18}")
    typer.echo(f"card: {card['card.md']}   export: {export['local_dir']} (reloaded, logits identical)")
    typer.echo(f"total {sum(summary['seconds'].values()):.0f} s; everything is in {out}")


def _search(search_command, run: Path, dataset: str, seed: int, method: str, device: str, resume: bool):
    search_command(preset="tiny", dataset=dataset, out=run, seed=seed, resume=resume or run.exists(), device=device,
                   method=method)
    return {"run": str(run), "genotype": read_json(run / "genotype.json")}


def _train(train_command, search_run: Path, run: Path, dataset: str, seed: int, epochs: int, num_cells: int,
           init_channels: int, image_size: int, device: str, resume: bool):
    decay = sorted({max(1, round(0.7 * epochs)), max(1, round(0.9 * epochs))})  # RFS decays at 60%/80% of 100
    train_command(model=str(search_run), dataset=dataset, out=run, preset="rfs-mini", epochs=epochs, seed=seed,
                  num_cells=num_cells, init_channels=init_channels, image_size=image_size, device=device,
                  resume=resume, set_=[f"lr_decay_epochs={json.dumps(decay)}"])
    return {"run": str(run)}


def _card(run: Path, out: Path) -> dict[str, str]:
    from ..cards import card_data, write_card

    paths = write_card(card_data(run), out)
    return {k: str(v) for k, v in paths.items()}


def _export(run: Path, local_dir: Path) -> dict[str, Any]:
    import timm
    import torch

    from ..hub import export_run
    from ..rundir import create_model_from_run

    files = export_run(run, local_dir)
    original = create_model_from_run(run).eval()
    reloaded = timm.create_model(f"local-dir:{local_dir}", pretrained=True).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # any size: the net is fully conv
    with torch.no_grad():
        same = torch.equal(original(x), reloaded(x))
    if not same:
        raise CheckpointError(f"the export in {local_dir} does not reproduce the trained model's logits")
    return {"local_dir": str(local_dir), "files": sorted(files), "logits_equal": same}
