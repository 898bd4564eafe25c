"""``metantk-zoo models``: the zoo as a table."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..models.complexity import zoo_table
from ._app import app


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every registered architecture: name, cells, parameters (64-way head), multiply-adds at 84x84 and
    where each genotype comes from.

    Example: metantk-zoo models --json
    """
    rows = zoo_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    headers = ("name", "cells", "params", "macs", "source")
    cols = [[_fmt(h, r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cols)) for i, h in enumerate(headers)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    typer.echo("  ".join("-" * w for w in widths))
    for c in cols:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def _fmt(header: str, value: object) -> str:
    if value is None:
        return "-"
    if header == "params":
        return f"{value:,}"
    if header == "macs":
        return f"{value / 1e9:.2f}G"
    return str(value)
