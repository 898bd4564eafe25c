"""``metantk-zoo data``: prepare, inspect and verify few-shot datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._app import app

data_app = typer.Typer(no_args_is_help=True, help="Few-shot datasets: prepare, info, verify.")
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def prepare_command(
    source: Annotated[str, typer.Argument(help="RFS mini/tiered folder, ImageNet tree, or any dataset spec.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (parquet per split + fewshot.json).")],
    size: Annotated[int | None, typer.Option(help="Resize images to SIZE x SIZE (84 for an ImageNet tree).")] = None,
    benchmark: Annotated[
        str | None, typer.Option(help="Class split for an ImageNet tree: tiered_imagenet (default) or mini_imagenet.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it is a dataset this tool prepared "
                                            "(never an arbitrary folder).")] = False,
) -> None:
    """Convert a dataset into the prepared parquet format that `load_fewshot(OUT)` reads.

    Example: metantk-zoo data prepare ~/data/miniImageNet --out data/mini
    """
    from ..data.convert import prepare

    path = prepare(source, out, size=size, benchmark=benchmark, overwrite=overwrite)
    typer.echo(str(path))


@data_app.command("info")
def info_command(
    spec: Annotated[str, typer.Argument(help="Dataset spec, e.g. synthetic, synthetic:size=32, a folder, a Hub id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show splits, class counts and image counts of a dataset.

    Example: metantk-zoo data info synthetic:size=32
    """
    from ..data import load_fewshot

    summary = load_fewshot(spec).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{summary['name']}  ({summary['spec']})  fingerprint {summary['fingerprint']}")
    typer.echo(f"{'split':<6} {'classes':>7} {'images':>8} {'per class':>12}")
    for split, s in summary["splits"].items():
        per = s["images_per_class"]
        per_s = str(per["min"]) if per["min"] == per["max"] else f"{per['min']}-{per['max']}"
        typer.echo(f"{split:<6} {s['classes']:>7} {s['images']:>8} {per_s:>12}")


@data_app.command("verify")
def verify_command(
    spec: Annotated[str, typer.Argument(help="Dataset spec to check.")],
    benchmark: Annotated[
        str | None,
        typer.Option(help="mini_imagenet, tiered_imagenet, cifar_fs, fc100 or synthetic (default: guessed)."),
    ] = None,
) -> None:
    """Check class lists and counts against the known benchmark; exit 1 when a check fails.

    Example: metantk-zoo data verify GATE-engine/mini_imagenet
    """
    from ..data.convert import verify
    from ..errors import DatasetError

    report = verify(spec, benchmark)
    for name, ok, detail in report.checks:
        typer.echo(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}")
    if not report.ok:
        failed = [n for n, ok, _ in report.checks if not ok]
        raise DatasetError(f"{spec} does not match {report.benchmark}: failed {', '.join(failed)}")
    typer.echo(f"{spec} matches {report.benchmark}")
