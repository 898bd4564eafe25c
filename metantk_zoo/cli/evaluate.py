"""``metantk-zoo eval``: few-shot evaluation of a backbone (timm name, genotype, ``hf-hub:``/``local-dir:`` id or
run directory) on a dataset spec, with a named protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..fewshot import PROTOCOLS, save_eval_result
from ..utils.io import write_json
from ..utils.rundir import is_run_dir
from ._app import app
from ._options import DeviceOption

__all__ = ["eval_command", "check_results_file"]

#: the fields every evaluation result row has (:meth:`metantk_zoo.fewshot.EvalResult.to_dict`)
_RESULT_KEYS = ("mean", "ci95", "manifest_hash")


def check_results_file(out: Path, *, overwrite: bool = False, option: str = "--out") -> None:
    """The overwrite policy of a single-file output, checked before anything runs.

    ``eval --out`` names one JSON file of results that successive evaluations share (the fewshot_eval script
    keeps a table in it), so an existing file is not refused as a folder would be: a file ``eval`` wrote (a JSON
    list of result rows, or one result) is merged into, the same setting's row replaced, or with ``overwrite``
    replaced by this result alone. Any other existing path is refused, ``overwrite`` or not: a folder, a path
    under a regular file, or a file that is not a results file (metantk-zoo never replaces a file it did not write).

    Raises:
        ConfigError: ``out`` cannot be used; the message says what was found and what to do.
    """
    from ..errors import CheckpointError, ConfigError
    from ..utils.io import read_json

    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{option} {out} is under {parent}, which is a file, expected a folder; pick another "
                              f"{option}")
    if not out.exists():
        return
    if out.is_dir():
        raise ConfigError(f"{option} {out} is a folder, expected a JSON results file; pick a file name such as "
                          f"{out / 'eval.json'}")
    try:
        data = read_json(out, what="results file")
    except CheckpointError:
        data = None
    rows = data if isinstance(data, list) else [data]
    if not all(isinstance(r, dict) and all(k in r for k in _RESULT_KEYS) for r in rows):
        raise ConfigError(f"{option} {out} exists and is not a results file eval wrote (a JSON list of results); "
                          f"metantk-zoo will not {'replace' if overwrite else 'merge into'} it; pick another "
                          f"{option}")


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="Run directory, hf-hub:ORG/NAME, local-dir:PATH, timm name or "
                                              "genotype.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset spec, e.g. synthetic or synthetic:size=32.")],
    protocol: Annotated[str, typer.Option("--protocol", help=f"One of {', '.join(PROTOCOLS)} "
                                          "(paper: 1000 episodes, 50 queries, 5 augmented supports; rfs: 600, "
                                          "15).")] = "paper",
    n_way: Annotated[int, typer.Option("--n-way", help="Classes per episode.")] = 5,
    n_shot: Annotated[int, typer.Option("--n-shot", help="Support images per class.")] = 1,
    n_query: Annotated[int | None, typer.Option("--n-query", help="Queries per class (protocol default).")] = None,
    episodes: Annotated[int | None, typer.Option("--episodes", help="Episodes (protocol default).")] = None,
    n_aug_support: Annotated[int | None, typer.Option("--aug", help="Augmented copies per support image.")] = None,
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    seed: Annotated[int, typer.Option("--seed", help="Episode and augmentation seed.")] = 0,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Resize images to this (default: the "
                                                   "model's input size).")] = None,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Load timm's pretrained weights for a bare "
                                             "model name.")] = False,
    num_cells: Annotated[int | None, typer.Option("--num-cells", help="Cells of a metantk model.")] = None,
    init_channels: Annotated[int | None, typer.Option("--init-channels", help="Width C of a metantk model.")] = None,
    device: DeviceOption = "auto",
    out: Annotated[Path | None, typer.Option("--out", help="Also merge the result into this JSON results file (a "
                                             "new file, or one eval wrote: the same setting's row is "
                                             "replaced).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the --out results file with this result "
                                            "instead of merging into it (never a file eval did not write).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    adapt: Annotated[bool, typer.Option("--adapt", help="Classify with the meta-learning algorithm's own inner-loop "
                                        "adaptation (the run's method, inner lr, test steps) instead of the probe; "
                                        "same episodes.")] = False,
) -> None:
    """Few-shot accuracy (mean and 95% CI over episodes) of a frozen backbone with a logistic-regression probe.

    Example: metantk-zoo eval runs/c5 --dataset synthetic --protocol paper --n-shot 5
    """
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}",
                                 param_hint="--protocol")
    from ..pipeline import load_backbone, run_adapted_eval, run_eval
    from ..utils.device import resolve_device

    device = str(resolve_device(device))  # a device that is not there fails before a model is fetched or loaded
    if out is not None:
        check_results_file(out, overwrite=overwrite)  # before the evaluation: a refused --out costs nothing
    net = load_backbone(model, pretrained=pretrained, num_cells=num_cells, init_channels=init_channels)
    if adapt:
        result = run_adapted_eval(net, model, dataset, split=split, protocol=protocol, image_size=image_size,
                                  device=device, n_way=n_way, n_shot=n_shot, n_query=n_query, n_episodes=episodes,
                                  seed=seed)
    else:
        result = run_eval(net, dataset, split=split, protocol=protocol, image_size=image_size, device=device,
                          model_name=model, n_way=n_way, n_shot=n_shot, n_query=n_query, n_episodes=episodes,
                          n_aug_support=n_aug_support, seed=seed)
    if is_run_dir(model):
        save_eval_result(Path(model) / "eval.json", result)
    if out is not None:
        if overwrite and out.exists():
            write_json(out, [result.to_dict()])
        else:
            save_eval_result(out, result)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    rows = [("model", model), ("dataset", f"{result.dataset} [{split}]"), ("protocol", result.protocol),
            ("episodes", f"{result.n_episodes} x {result.n_way}-way {result.n_shot}-shot, {result.n_query} queries, "
                         f"{result.n_aug_support} aug"),
            ("accuracy", f"{100 * result.mean:.2f} % ± {100 * result.ci95:.2f} (95% CI, Student t)"),
            ("manifest", result.manifest_hash[:16])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k.ljust(width)}  {v}")
