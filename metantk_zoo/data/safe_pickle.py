"""A restricted unpickler for the RFS / MetaOptNet data files: plain containers and numpy arrays, nothing else.

``pickle.load`` runs arbitrary code named in the file. The few-shot pickles only ever hold dicts, lists, strings,
numbers and numpy arrays, so :func:`safe_load` resolves only the globals numpy needs to rebuild arrays and refuses
every other global with a :class:`~metantk_zoo.errors.DatasetError` that names it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from ..errors import DatasetError

__all__ = ["safe_load", "safe_loads", "ALLOWED_GLOBALS"]

#: (module, name) pairs the unpickler may resolve: numpy array / dtype / scalar reconstruction and containers.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol <= 2 (harmless: it only encodes a string)
})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, source: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DatasetError(
            f"{self._source}: refusing to unpickle {module}.{name}; only plain containers and numpy arrays are "
            f"accepted in few-shot data pickles"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError(f"{self._source}: refusing a pickle with persistent ids")


def safe_loads(data: bytes, *, source: str = "pickle", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` allowing only containers and numpy arrays (``latin1`` reads Python 2 pickles)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except DatasetError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e


def safe_load(path: str | os.PathLike, *, encoding: str = "latin1") -> Any:
    """Read a pickle file with the restricted unpickler.

    Raises:
        DatasetError: missing file, corrupt pickle, or any global other than containers and numpy arrays.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise DatasetError(f"pickle file not found: {path}") from e
    return safe_loads(data, source=str(path), encoding=encoding)
