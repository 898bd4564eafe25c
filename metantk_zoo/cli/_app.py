"""The Typer app every command module registers on (``from ._app import app``)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ..version import __version__

__all__ = ["app", "console_error"]

app = typer.Typer(
    name="metantk-zoo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="MetaNTK-NAS as a timm model zoo: search, train, evaluate and share few-shot backbones.",
)


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is at the time of the record (robust to redirection and test capture)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"metantk-zoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output on stderr.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
) -> None:
    """Configure logging once for every command (stderr; results go to stdout)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger("metantk_zoo")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    if quiet:
        import os

        os.environ.setdefault("METANTK_NO_PROGRESS", "1")


def console_error(message: str) -> None:
    """Print one red error line on stderr."""
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
