"""Small generated datasets for the data tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: The spec every fast data test uses: 32x32, 12 images per class (64/16/20 classes).
SMALL_SYNTHETIC = "synthetic:size=32,per_class=12"


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def solid_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 (size, size, 3) images."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
