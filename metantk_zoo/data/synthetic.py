"""The embedded benchmark: a procedurally generated few-shot image dataset that needs no download.

Every class is a seeded *prototype*: an outline (a radial Fourier curve), an attached part (disc, square or bar at
a class-specific place) and a texture (stripes, checks, rings, dots, waves or a spiral, with a class-specific
frequency and orientation). Colours are drawn per image, so a flat colour never identifies a class. Every image is
a seeded *instance* of its prototype: pose (rotation, translation), scale, anisotropic stretch, a smooth warp,
outline jitter, texture phase, background field, clutter (distractor blobs) and pixel noise.

Every image is a pure function of ``(seed, class, index)``: its random parameters come from a generator seeded with
exactly that triple, and rendering is element-wise, so the same image comes out whatever batch it is drawn in.
Classes are split 64/16/20 like mini-ImageNet (Ravi & Larochelle, ICLR 2017).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..errors import DatasetError
from ..utils.io import staged_dir

__all__ = ["GENERATOR_VERSION", "SyntheticConfig", "render_class", "build_synthetic", "synthetic_dataset_dict",
           "cache_root"]

logger = logging.getLogger(__name__)

#: Bump when the generator's output changes: it is part of the cache key and of the dataset fingerprint.
GENERATOR_VERSION = 1
_N_TEXTURES = 6
_N_HARMONICS = 5
_N_DISTRACTORS = 3


@dataclass(frozen=True)
class SyntheticConfig:
    """What identifies one embedded benchmark: the content is a pure function of these fields.

    Args:
        seed: benchmark seed (a different seed gives different classes).
        size: image side in pixels (84 like mini-ImageNet; 32 for fast tests).
        per_class: images per class.
        classes: number of classes, split 64/16/20 (proportionally when not 100).
    """

    seed: int = 0
    size: int = 84
    per_class: int = 60
    classes: int = 100

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 512:
            raise DatasetError(f"synthetic: size must be in [8, 512], got {self.size}")
        if self.per_class < 1:
            raise DatasetError(f"synthetic: per_class must be >= 1, got {self.per_class}")
        if self.classes < 3:
            raise DatasetError(f"synthetic: classes must be >= 3 (one per split), got {self.classes}")
        if self.seed < 0:
            raise DatasetError(f"synthetic: seed must be >= 0, got {self.seed}")

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        """Classes in meta-train / meta-val / meta-test: 64/16/20 for 100 classes."""
        n_val = max(1, round(self.classes * 0.16))
        n_test = max(1, round(self.classes * 0.20))
        return self.classes - n_val - n_test, n_val, n_test

    @property
    def key(self) -> str:
        return f"v{GENERATOR_VERSION}-seed{self.seed}-size{self.size}-n{self.per_class}-c{self.classes}"


def _class_params(seed: int, c: int) -> dict:
    rng = np.random.default_rng([seed, c, 0xC1A55])
    k = np.arange(2, 2 + _N_HARMONICS)
    return {
        "amp": rng.uniform(0.0, 0.28, _N_HARMONICS) / np.sqrt(k - 1),  # outline harmonics 2..6
        "phase": rng.uniform(0, 2 * np.pi, _N_HARMONICS),
        "texture": int(rng.integers(_N_TEXTURES)),
        "freq": rng.uniform(2.5, 7.0),  # cycles per unit length of the object frame
        "orient": rng.uniform(0, np.pi),
        "part": int(rng.integers(4)),  # 0 none, 1 disc, 2 square, 3 bar
        "part_angle": rng.uniform(0, 2 * np.pi),
        "part_size": rng.uniform(0.16, 0.28),
    }


def _instance_params(seed: int, c: int, i: int, size: int) -> dict:
    rng = np.random.default_rng([seed, c, i])
    colours = rng.uniform(0.0, 1.0, (3, 3))
    # keep the two texture colours apart so the texture stays visible
    while np.abs(colours[0] - colours[1]).sum() < 0.6:
        colours[1] = rng.uniform(0.0, 1.0, 3)
    return {
        "rot": rng.uniform(-np.pi / 4, np.pi / 4),
        "scale": rng.uniform(0.7, 1.05),
        "shift": rng.uniform(-0.18, 0.18, 2),
        "aspect": np.exp(rng.uniform(-0.2, 0.2)),
        "warp": rng.uniform(0.0, 0.07, 2),
        "warp_freq": rng.uniform(0.3, 1.0, 2),
        "warp_phase": rng.uniform(0, 2 * np.pi, 2),
        "amp_jitter": rng.normal(0.0, 0.03, _N_HARMONICS),
        "tex_phase": rng.uniform(0, 2 * np.pi),
        "freq_jitter": np.exp(rng.uniform(-0.1, 0.1)),
        "orient_jitter": rng.uniform(-0.15, 0.15),
        "colours": colours,
        "bg": rng.uniform(0.15, 0.85, (3, 3, 3)),  # 3x3 grid of background colours, upsampled smoothly
        "n_dist": int(rng.integers(0, _N_DISTRACTORS + 1)),
        "dist": rng.uniform(0.0, 1.0, (_N_DISTRACTORS, 6)),  # x, y, radius, r, g, b
        "noise_sigma": rng.uniform(0.01, 0.06),
        "noise": rng.standard_normal((size, size, 3)).astype(np.float32),
    }


def _stack(params: list[dict], key: str) -> np.ndarray:
    return np.stack([np.asarray(p[key], dtype=np.float32) for p in params])


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased step: 1 inside (x > 0), 0 outside, over about ``width`` units."""
    return 0.5 + 0.5 * np.tanh(x / np.float32(width))


def _texture(kind: int, p: np.ndarray, q: np.ndarray, r: np.ndarray, ang: np.ndarray, f: np.ndarray,
             ph: np.ndarray) -> np.ndarray:
    tau = np.float32(2 * np.pi)
    if kind == 0:  # stripes
        raw = np.sin(tau * f * p + ph)
    elif kind == 1:  # checks
        raw = np.sin(tau * f * p + ph) * np.sin(tau * f * q)
    elif kind == 2:  # rings
        raw = np.sin(tau * f * r + ph)
    elif kind == 3:  # dots
        raw = np.cos(tau * f * p + ph) + np.cos(tau * f * q) - np.float32(1.0)
    elif kind == 4:  # waves
        raw = np.sin(tau * f * p + np.float32(1.8) * np.sin(tau * f * np.float32(0.5) * q) + ph)
    else:  # spiral
        raw = np.sin(tau * f * r + np.float32(3.0) * ang + ph)
    return _soft(raw, 0.35)


def render_class(seed: int, c: int, indices: np.ndarray | list[int], size: int) -> np.ndarray:
    """Render images ``indices`` of class ``c``: uint8 (N, size, size, 3), a pure function of (seed, c, index)."""
    cp = _class_params(seed, c)
    ip = [_instance_params(seed, c, int(i), size) for i in indices]
    n = len(ip)
    if n == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    f32 = np.float32
    px = f32(2.0 / size)  # one pixel in image units ([-1, 1])
    grid = (np.arange(size, dtype=f32) + f32(0.5)) * px - f32(1.0)
    gx = np.broadcast_to(grid[None, None, :], (n, size, size))
    gy = np.broadcast_to(grid[None, :, None], (n, size, size))

    def col(key: str) -> np.ndarray:  # per-image scalar parameter as (N, 1, 1)
        return _stack(ip, key).reshape(n, 1, 1)

    # pose: image -> object frame (inverse rotation, scale and stretch), then a smooth warp
    rot, scale, aspect = col("rot"), col("scale"), col("aspect")
    shift = _stack(ip, "shift")
    dx = gx - shift[:, 0, None, None]
    dy = gy - shift[:, 1, None, None]
    cos, sin = np.cos(rot), np.sin(rot)
    u = (cos * dx + sin * dy) / (scale * aspect)
    v = (-sin * dx + cos * dy) / (scale / aspect)
    warp, wf, wp = _stack(ip, "warp"), _stack(ip, "warp_freq"), _stack(ip, "warp_phase")
    tau = f32(2 * np.pi)
    u = u + warp[:, 0, None, None] * np.sin(tau * wf[:, 0, None, None] * v + wp[:, 0, None, None])
    v = v + warp[:, 1, None, None] * np.sin(tau * wf[:, 1, None, None] * u + wp[:, 1, None, None])
    r = np.sqrt(u * u + v * v)
    ang = np.arctan2(v, u)

    # outline: r < R(angle) = r0 (1 + sum_k a_k cos(k angle + phi_k)), with per-instance jitter of a_k
    amp = cp["amp"].astype(f32)[None, :] + _stack(ip, "amp_jitter")  # (N, K)
    radius = np.full_like(r, f32(0.42))
    for j in range(_N_HARMONICS):
        radius = radius + f32(0.42) * amp[:, j, None, None] * np.cos(f32(j + 2) * ang + f32(cp["phase"][j]))
    edge = px * f32(0.75) / scale
    body = _soft(radius - r, edge)

    # attached part at a class-specific place on the outline
    part = np.zeros_like(body)
    if cp["part"]:
        pa, ps = f32(cp["part_angle"]), f32(cp["part_size"])
        pu, pv = u - f32(0.5) * np.cos(pa), v - f32(0.5) * np.sin(pa)
        if cp["part"] == 1:
            part = _soft(ps - np.sqrt(pu * pu + pv * pv), edge)
        elif cp["part"] == 2:
            part = _soft(ps - np.maximum(np.abs(pu), np.abs(pv)), edge)
        else:  # a bar pointing outwards
            along = pu * np.cos(pa) + pv * np.sin(pa)
            across = -pu * np.sin(pa) + pv * np.cos(pa)
            part = _soft(np.minimum(ps * f32(1.4) - np.abs(along), ps * f32(0.35) - np.abs(across)), edge)
        part = part * (f32(1.0) - body)

    # texture in the (rotated) object frame, so it turns with the pose
    theta = f32(cp["orient"]) + col("orient_jitter")
    p = np.cos(theta) * u + np.sin(theta) * v
    q = -np.sin(theta) * u + np.cos(theta) * v
    tex = _texture(cp["texture"], p, q, r, ang, f32(cp["freq"]) * col("freq_jitter"), col("tex_phase"))

    # background: a smooth colour field (bilinear upsampling of a 3x3 grid) with distractor blobs
    bg_grid = _stack(ip, "bg")  # (N, 3, 3, 3)
    t = (grid + f32(1.0)) * f32(1.0)  # [0, 2] across the image
    i0 = np.clip(np.floor(t).astype(np.int64), 0, 1)
    w = (t - i0.astype(f32))[None, :, None, None]  # (1, S, 1, 1) along y; transposed for x
    rows = bg_grid[:, i0] * (f32(1.0) - w) + bg_grid[:, i0 + 1] * w  # (N, S, 3, 3)
    wx = (t - i0.astype(f32))[None, None, :, None]
    img = rows[:, :, i0] * (f32(1.0) - wx) + rows[:, :, i0 + 1] * wx  # (N, S, S, 3)
    dist = _stack(ip, "dist")
    n_dist = np.array([p_["n_dist"] for p_ in ip])
    for d in range(_N_DISTRACTORS):
        active = (n_dist > d).astype(f32)[:, None, None]
        cx, cy = dist[:, d, 0, None, None] * 1.6 - 0.8, dist[:, d, 1, None, None] * 1.6 - 0.8
        rad = dist[:, d, 2, None, None] * f32(0.12) + f32(0.05)
        blob = _soft(rad - np.sqrt((gx - cx) ** 2 + (gy - cy) ** 2), px) * active
        img = img * (f32(1.0) - blob[..., None]) + dist[:, d, None, None, 3:] * blob[..., None]

    colours = _stack(ip, "colours")  # (N, 3, 3): texture colour a, texture colour b, part colour
    fg = colours[:, None, None, 0] * tex[..., None] + colours[:, None, None, 1] * (f32(1.0) - tex[..., None])
    img = img * (f32(1.0) - body[..., None]) + fg * body[..., None]
    img = img * (f32(1.0) - part[..., None]) + colours[:, None, None, 2] * part[..., None]
    img = img + _stack(ip, "noise") * col("noise_sigma")[..., None]
    return np.clip(np.rint(img * f32(255.0)), 0, 255).astype(np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def class_names(cfg: SyntheticConfig) -> dict[str, list[str]]:
    """Class names per split: ``syn000`` ... in meta-train, then meta-val, then meta-test."""
    n_train, n_val, _ = cfg.split_sizes
    names = [f"syn{c:03d}" for c in range(cfg.classes)]
    return {"train": names[:n_train], "val": names[n_train:n_train + n_val], "test": names[n_train + n_val:]}


def synthetic_dataset_dict(cfg: SyntheticConfig):
    """Generate the benchmark in memory as a ``datasets.DatasetDict`` (train/val/test; ``image``, ``label``)."""
    import datasets

    splits = {}
    offset = 0
    for split, names in class_names(cfg).items():
        images, labels = [], []
        for local, _ in enumerate(names):
            arr = render_class(cfg.seed, offset + local, np.arange(cfg.per_class), cfg.size)
            images.extend({"bytes": _png(a), "path": None} for a in arr)
            labels.extend([local] * cfg.per_class)
        offset += len(names)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    return datasets.DatasetDict(splits)


def cache_root() -> Path:
    """The cache folder: ``$METANTK_CACHE`` or ``~/.cache/metantk_zoo``."""
    return Path(os.environ.get("METANTK_CACHE") or Path.home() / ".cache" / "metantk_zoo")


def build_synthetic(cfg: SyntheticConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """Generate (once) and cache the benchmark as ``save_to_disk`` output; return its folder.

    The folder is keyed by (generator version, seed, size, per_class, classes) and written atomically: the dataset
    goes to a temporary sibling that is renamed into place, so a crash never leaves a half-written cache.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "synthetic"
    target = root / cfg.key
    if (target / "dataset_dict.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    logger.info("generating the synthetic benchmark %s into %s", cfg.key, target)
    def complete(path: Path) -> bool:  # a concurrent writer that won the race: keep its copy
        return (path / "dataset_dict.json").is_file()

    with staged_dir(target, keep=complete) as tmp:
        synthetic_dataset_dict(cfg).save_to_disk(str(tmp))
    return target
