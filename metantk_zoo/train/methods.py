"""The registry of training methods behind ``metantk-zoo train --method``: RFS (:mod:`.rfs`) and the meta-learners
(:mod:`metantk_zoo.meta`) register themselves here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .loop import TrainResult

__all__ = ["TrainingMethod", "TRAINING_METHODS", "register_method"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingMethod:
    """A training method for ``metantk-zoo train --method NAME``.

    Attributes:
        name: the ``--method`` value.
        config_cls: its frozen config dataclass.
        presets: preset names accepted by ``--preset`` (resolved by ``make_config``).
        make_config: ``(preset, num_cells, overrides) -> config``.
        train: ``(model, data, cfg, *, run_dir, architecture, resume, device, extra_config) -> TrainResult``.
        data_kind: ``"batches"`` (a :class:`BatchSource` of the meta-train split) or ``"episodes"``; the CLI wires
            the data layer accordingly.
        description: one line for ``--help``.
    """

    name: str
    config_cls: type
    presets: tuple[str, ...]
    make_config: Callable[..., Any]
    train: Callable[..., TrainResult]
    data_kind: str = "batches"
    description: str = ""


TRAINING_METHODS: dict[str, TrainingMethod] = {}


def register_method(method: TrainingMethod) -> TrainingMethod:
    """Add ``method`` to :data:`TRAINING_METHODS` (and so to ``metantk-zoo train --method``)."""
    if method.name in TRAINING_METHODS and TRAINING_METHODS[method.name] is not method:
        logger.warning("training method %r registered twice; the last one wins", method.name)
    TRAINING_METHODS[method.name] = method
    return method
