"""Atomic file writes and safe reads: nothing half-written, nothing lost, standard JSON only.

Every file metantk-zoo writes (configs, metrics, checkpoints, weights) goes through :func:`atomic_write`: the
content goes to a temporary file in the target's folder, is flushed and fsynced, renamed over the target, and the
folder is fsynced so that the rename itself survives a power cut. A crash or a full disk at any moment leaves
either the old file or the new one, never a mix. Files get the permissions a plain ``open`` would give (``0o666``
less the umask, 0644 under the usual 022), not ``mkstemp``'s 0600; staging folders made by
:func:`make_staging_dir` get ``0o777`` less the umask.

JSON is standard (RFC 8259) only: :func:`write_json` and :func:`dumps_json` never write ``NaN`` or ``Infinity``.
A non-finite float is written as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (:func:`encode_nonfinite`);
readers turn those strings back into floats with :func:`as_float`. Files written by older versions, which hold
the bare ``Infinity`` / ``NaN`` tokens, still read (:func:`read_json` accepts them). ``metrics.jsonl`` files are
read with :func:`read_jsonl`, which drops a torn last line left by a kill, and repaired with :func:`repair_jsonl`.
Weights are safetensors only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import CheckpointError, DiskFullError, MetantkZooError

__all__ = [
    "sha256_file",
    "json_default",
    "encode_nonfinite",
    "as_float",
    "dumps_json",
    "atomic_write",
    "fsync_dir",
    "current_umask",
    "make_staging_dir",
    "write_json",
    "read_json",
    "read_jsonl",
    "write_jsonl",
    "repair_jsonl",
    "save_weights",
    "load_weights",
    "read_weights_metadata",
    "DiskFullError",
]

#: the strings that stand for non-finite floats in the package's JSON files
NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, "Infinity": math.inf, "-Infinity": -math.inf,
             "NaN": math.nan}


def current_umask() -> int:
    """The process umask (read by setting and restoring it; the value is process-wide)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so that a rename or creation inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh hidden staging folder inside ``parent`` (same filesystem, so the final rename is atomic), with the
    permissions ``mkdir`` would give (``0o777`` less the umask) instead of ``mkdtemp``'s 0700."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def _disk_full(e: OSError, path: Path) -> DiskFullError:
    return DiskFullError(e.errno, f"no space left on the device writing {path}; free some space and run the "
                                  f"command again (the previous {path.name}, if any, is unchanged)")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it onto ``path``, then fsync
    the folder. The file gets ``0o666`` less the umask.

    On any exception (including ``OSError: No space left on device``, raised as :class:`DiskFullError`) the
    temporary file is removed and the previous ``path``, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, MetantkZooError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(e, path) from e
        raise


def encode_nonfinite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``"inf"``, ``"-inf"`` or ``"nan"`` (dicts, lists and tuples
    are walked; everything else is returned as is)."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: encode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_nonfinite(v) for v in obj]
    return obj


def as_float(value: Any) -> Any:
    """The reader's side of :func:`encode_nonfinite`: ``"inf"``/``"-inf"``/``"nan"`` (and the old ``"Infinity"``
    spellings) -> float; anything else unchanged."""
    if isinstance(value, str) and value in NONFINITE:
        return NONFINITE[value]
    return value


def _coerce(obj: Any) -> Any:
    """Walk ``obj`` turning package values into JSON ones (:func:`json_default`) and non-finite floats into strings."""
    if isinstance(obj, float):
        return encode_nonfinite(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _coerce(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_coerce(v) for v in obj]
    return _coerce(json_default(obj))


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes standard JSON only (non-finite floats as strings, see :func:`encode_nonfinite`)."""
    return json.dumps(_coerce(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented standard JSON, atomically (non-finite floats as strings)."""
    data = dumps_json(obj, indent=2, sort_keys=False) + "\n"
    with atomic_write(path, "w") as f:
        f.write(data)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON, raising :class:`CheckpointError` naming the file when it is missing or corrupt.

    The old ``Infinity``/``NaN`` tokens are accepted (files of earlier versions); strings such as ``"inf"`` are
    returned as strings: fields that may be non-finite go through :func:`as_float`.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{what} not found: {path}") from e
    except IsADirectoryError as e:
        raise CheckpointError(f"{what} {path} is a folder, expected a JSON file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} {path} is corrupt (not valid JSON: {_one_line(e)}); restore it or start a "
                              f"new run") from e


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The records of a JSON-lines file; a torn (unparsable) *last* line, as a kill mid-append leaves, is dropped.

    Raises:
        CheckpointError: an unparsable line before the last one (a corrupt file, not a torn one).
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if all(not rest.strip() for rest in lines[i + 1:]):
                break  # torn last line
            raise CheckpointError(f"{path}: line {i + 1} is corrupt ({_one_line(e)}); restore the file") from e
    return rows


def write_jsonl(path: str | os.PathLike, rows: list[Any]) -> None:
    """Write ``rows`` as standard JSON lines, atomically (the whole file is replaced)."""
    with atomic_write(path, "w") as f:
        for row in rows:
            f.write(dumps_json(row) + "\n")


def repair_jsonl(path: str | os.PathLike) -> list[Any]:
    """Drop a torn last line of a JSON-lines file in place (atomically) and return its records."""
    path = Path(path)
    rows = read_jsonl(path)
    if path.is_file():
        expected = "".join(dumps_json(r) + "\n" for r in rows)
        if path.read_text(errors="replace") != expected:
            write_jsonl(path, rows)
    return rows


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Save a flat tensor dict as safetensors, atomically (tensors are made contiguous and moved to CPU)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    payload = save(flat, metadata=metadata)
    with atomic_write(path) as f:
        f.write(payload)


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file, raising :class:`CheckpointError` naming the file when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is corrupt or not safetensors ({_one_line(e)})") from e


def read_weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (``{}`` if none); :class:`CheckpointError` when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is corrupt or not safetensors ({_one_line(e)})") from e


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for the package's values: paths, ``to_dict()`` objects, sets/tuples, numpy and
    torch scalars (the one JSON coercion)."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars (as .item()) and arrays (nested lists)
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ export
@contextlib.contextmanager
def staged_dir(final: str | os.PathLike, *, prefix: str | None = None,
               keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build a folder in a hidden staging sibling of ``final`` and rename it into place when the block completes
    (the one staged-directory publisher: Hub exports, prepared datasets, the synthetic cache).

    A crash or an exception at any moment leaves the previous ``final`` (if any) or the new one, never a mix; on
    failure the staging folder is removed. An existing ``final`` is replaced (set aside, the new folder renamed in,
    the parent fsynced, the old one deleted) unless ``keep(final)`` says it is complete (a concurrent writer that
    won the race): then it is kept and the staged copy dropped.

    Args:
        final: the folder to publish.
        prefix: the staging folder's name prefix (default ``.<name>.``).
        keep: ``keep(final) -> bool``, asked when ``final`` exists at the end of the block: True keeps it.

    Yields:
        The staging folder (created, empty, on ``final``'s filesystem).
    """
    import shutil

    final = Path(final)
    tmp = make_staging_dir(final.parent, prefix or f".{final.name}.")
    try:
        yield tmp
        if keep is not None and final.exists() and keep(final):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: str | os.PathLike, final: str | os.PathLike) -> None:
    """Publish the complete folder ``new`` as ``final`` (same filesystem): an existing ``final`` is set aside,
    ``new`` renamed in, the parent fsynced, and only then the old folder deleted."""
    import shutil

    new, final = Path(new), Path(final)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(new, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ += ["staged_dir", "replace_dir"]
