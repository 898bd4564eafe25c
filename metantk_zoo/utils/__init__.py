"""Helpers every layer uses: atomic writes and standard JSON, progress bars, run directories (the one
"model from a run directory" loader) and the one device rule (:func:`resolve_device`).
"""

from __future__ import annotations

from .device import (
    resolve_device,
)
from .distributed import (
    DistInfo,
    current,
    gather_objects,
    setup_distributed,
)
from .io import (
    atomic_write,
    json_default,
    load_weights,
    read_json,
    read_weights_metadata,
    save_weights,
    sha256_file,
    write_json,
)
from .progress import (
    progress,
)
from .rundir import (
    MODEL_SPEC,
    WEIGHTS,
    create_model_from_run,
    is_run_dir,
    load_state_into,
    read_model_spec,
    write_model_spec,
)

__all__ = [
    "sha256_file",
    "json_default",
    "atomic_write",
    "write_json",
    "read_json",
    "save_weights",
    "load_weights",
    "read_weights_metadata",
    "progress",
    "resolve_device",
    "DistInfo",
    "setup_distributed",
    "current",
    "gather_objects",
    "MODEL_SPEC",
    "WEIGHTS",
    "write_model_spec",
    "read_model_spec",
    "create_model_from_run",
    "load_state_into",
    "is_run_dir",
]
