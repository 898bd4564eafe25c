"""The ``metantk-zoo`` command line: one Typer app, thin commands over the library.

Command modules in this package register themselves on :data:`app` when imported; they are discovered
automatically. :func:`main` is the console script and owns the error contract:

* a user error (any ``MetantkZooError``, and the OS errors a user causes: a missing folder, a path under a
  file, no permission, a full disk, a rename across filesystems) is one red line on stderr, exit code 1;
* a usage error (unknown option, bad option value) exits with code 2 (Click's own message);
* anything else is a bug: one line saying so, exit code 1;
* ``METANTK_DEBUG=1`` re-raises instead, with the full traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import sys

from ..errors import MetantkZooError
from ._app import app, console_error

__all__ = ["app", "main", "error_line"]

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_mod}")

_MAX_LINE = 400


def _one_line(text: str) -> str:
    """Collapse whitespace (quoted multi-line messages included) and cut to one readable line."""
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 3] + "..."


def _os_error_line(e: OSError) -> str:
    name = e.filename if e.filename is not None else ""
    other = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    where = f"{name}{other}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device writing {where or 'a file'}; free some space and run the command again"
    if e.errno == errno.EXDEV:
        return (f"cannot move {where} across filesystems; keep the output and TMPDIR on the same filesystem "
                f"(or unset TMPDIR)")
    if e.errno == errno.ENOENT:
        return f"expected an existing file or folder, found nothing at {where}; check the path"
    if e.errno == errno.ENOTDIR:
        return f"expected a folder, found a file in the path {where}; pick another path"
    if e.errno == errno.EISDIR:
        return f"expected a file, found a folder at {where}; pick another path"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied at {where}; pick a path you can write to"
    return f"{e.strerror or type(e).__name__} at {where}" if where else f"{type(e).__name__}: {e}"


def error_line(e: BaseException) -> str:
    """The one line the CLI prints for ``e`` (without the ``Error:`` prefix)."""
    if isinstance(e, MetantkZooError):
        return _one_line(str(e))
    if isinstance(e, OSError):
        return _one_line(_os_error_line(e))
    return _one_line(f"internal error ({type(e).__name__}: {e}); this is a bug, please report it with the output "
                     f"of the same command under METANTK_DEBUG=1")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``metantk-zoo`` console script."""
    try:
        app(args=argv, standalone_mode=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001  (the error contract: one line for everything, traceback on request)
        if os.environ.get("METANTK_DEBUG") == "1":
            raise
        console_error(error_line(e))
        sys.exit(1)
