"""Progress bars with ETA on stderr, for every long loop (search rounds, epochs, episodes).

A thin wrapper over ``tqdm`` so the whole package shows progress the same way. Set ``METANTK_NO_PROGRESS=1``
(``metantk-zoo -q`` does) to silence bars; logging is separate and goes through :mod:`logging`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr (elapsed, rate and ETA), disabled when ``METANTK_NO_PROGRESS=1``."""
    disable = os.environ.get("METANTK_NO_PROGRESS") == "1"
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=disable, dynamic_ncols=True,
                leave=False, **kwargs)
