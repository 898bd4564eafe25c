"""The metrics plot of a training run (``RUN_DIR/metrics.png``), drawn with Pillow (no matplotlib dependency).

One panel per metric (e.g. train loss and train accuracy) against the epoch, with axis ticks and labels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..utils.io import atomic_write

__all__ = ["plot_metrics"]

_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 480, 300, 62, 16, 28, 40
_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def plot_metrics(
    history: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    keys: Sequence[tuple[str, str]] = (("loss", "train loss"), ("acc", "train accuracy")),
) -> None:
    """Draw one line panel per ``(key, title)`` of ``history`` (rows with an ``epoch``) and write a PNG atomically.

    Keys missing from every row are skipped; non-finite values are left out of the line.
    """
    panels = [(k, t) for k, t in keys if any(isinstance(r.get(k), (int, float)) for r in history)]
    img = Image.new("RGB", (_W * max(1, len(panels)), _H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (key, title) in enumerate(panels):
        pts = [(float(r["epoch"]), float(r[key])) for r in history
               if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        _panel(draw, font, i * _W, pts, title, _COLORS[i % len(_COLORS)])
    if not panels:
        draw.text((10, 10), "no metrics yet", fill="black", font=font)
    with atomic_write(path) as f:
        img.save(f, format="PNG")


def _panel(draw: ImageDraw.ImageDraw, font: Any, x0: int, pts: list[tuple[float, float]], title: str, color) -> None:
    left, right, top, bottom = x0 + _PAD_L, x0 + _W - _PAD_R, _PAD_T, _H - _PAD_B
    draw.text((x0 + _W // 2 - 4 * len(title), 8), title, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - abs(y_lo) * 0.1 - 1e-3, y_hi + abs(y_hi) * 0.1 + 1e-3
    margin = (y_hi - y_lo) * 0.05
    y_lo, y_hi = y_lo - margin, y_hi + margin

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

    for j in range(5):  # y ticks and grid
        y = y_lo + (y_hi - y_lo) * j / 4
        _, py = to_px(x_lo, y)
        draw.line([left, py, right, py], fill=(225, 225, 225))
        draw.text((x0 + 4, py - 6), f"{y:.3g}", fill="black", font=font)
    for x in _int_ticks(x_lo, x_hi):
        px, _ = to_px(x, y_lo)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.text((px - 6, bottom + 6), str(int(x)), fill="black", font=font)
    draw.text((left + (right - left) // 2 - 15, _H - 16), "epoch", fill="black", font=font)
    line = [to_px(x, y) for x, y in pts]
    if len(line) > 1:
        draw.line(line, fill=color, width=2)
    for px, py in line:
        draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)


def _int_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    step = max(1, math.ceil((hi - lo) / n))
    start = math.ceil(lo)
    return [float(x) for x in range(start, int(math.floor(hi)) + 1, step)]
