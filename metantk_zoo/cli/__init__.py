"""The ``metantk-zoo`` command line: one Typer app, thin commands over the library.

Command modules in this package register themselves on :data:`app` when imported; they are discovered
automatically. :func:`main` is the console script: it turns any ``MetantkZooError`` into one red line on
stderr and exit code 1 (``METANTK_DEBUG=1`` shows the traceback); usage errors exit with code 2.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

from ..errors import MetantkZooError
from ._app import app, console_error

__all__ = ["app", "main"]

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_mod}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``metantk-zoo`` console script."""
    try:
        app(args=argv, standalone_mode=True)
    except MetantkZooError as e:
        if os.environ.get("METANTK_DEBUG") == "1":
            raise
        console_error(str(e))
        sys.exit(1)
