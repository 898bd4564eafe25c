"""Few-shot episodes: a label-indexed sampler, meta-batches, episode manifests, and batched image loading.

Vocabulary follows easyfsl / RFS: an episode (task) has ``n_way`` classes, ``n_shot`` support and ``n_query`` query
images per class. The sampler indexes classes from the label column alone (no image is decoded), and episode ``i``
is a pure function of ``(seed, i)``, so any episode can be redrawn on its own. A manifest stores the exact image
indices of every episode with a SHA-256 of its content, so two models can be scored on identical episodes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from ..utils.io import atomic_write

__all__ = [
    "Episode",
    "EpisodeSampler",
    "EpisodeManifest",
    "write_manifest",
    "read_manifest",
    "load_images",
    "decode_images",
    "with_torch_transform",
    "MANIFEST_FORMAT",
]

MANIFEST_FORMAT = "metantk-zoo/episodes/1"


@dataclass(frozen=True)
class Episode:
    """One few-shot task.

    Attributes:
        index: episode number within its sampler.
        classes: (n_way,) split-level labels of the chosen classes; episode label ``j`` is ``classes[j]``.
        support: (n_way * n_shot,) row indices into the split, class-major.
        query: (n_way * n_query,) row indices into the split, class-major.
        y_support: (n_way * n_shot,) episode-local labels 0..n_way-1.
        y_query: (n_way * n_query,) episode-local labels 0..n_way-1.
    """

    index: int
    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    y_support: np.ndarray
    y_query: np.ndarray

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"index": int(self.index), "classes": self.classes.tolist(), "support": self.support.tolist(),
                "query": self.query.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], n_shot: int, n_query: int) -> Episode:
        classes = np.asarray(d["classes"], dtype=np.int64)
        n_way = len(classes)
        support = np.asarray(d["support"], dtype=np.int64)
        query = np.asarray(d["query"], dtype=np.int64)
        if support.shape != (n_way * n_shot,) or query.shape != (n_way * n_query,):
            raise DatasetError(
                f"episode {d.get('index')}: expected {n_way * n_shot} support and {n_way * n_query} query indices, "
                f"found {support.size} and {query.size}"
            )
        return cls(int(d["index"]), classes, support, query, np.repeat(np.arange(n_way), n_shot),
                   np.repeat(np.arange(n_way), n_query))


class EpisodeSampler:
    """Draws ``n_way``-way ``n_shot``-shot episodes with ``n_query`` queries per class from a label column.

    Args:
        labels: (N,) integer labels of a split (``FewShotDataset.labels(split)``).
        n_way: classes per episode.
        n_shot: support images per class.
        n_query: query images per class.
        seed: episode ``i`` is a pure function of ``(seed, i)``.
        n_episodes: length of iteration (``iter(sampler)`` yields episodes ``0..n_episodes-1``).
        class_names: names of the labels, used in error messages.
    Raises:
        DatasetError: fewer classes than ``n_way``, or a class with fewer than ``n_shot + n_query`` images.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, n_way: int, n_shot: int, n_query: int, *, seed: int,
                 n_episodes: int = 1000, class_names: Sequence[str] | None = None) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise DatasetError(f"expected a 1-D integer label array, found shape {labels.shape} dtype {labels.dtype}")
        for name, value, low in (("n_way", n_way, 1), ("n_shot", n_shot, 1), ("n_query", n_query, 0),
                                 ("n_episodes", n_episodes, 0)):
            if int(value) != value or value < low:
                raise DatasetError(f"{name} must be an integer >= {low}, got {value!r}")
        self.n_way, self.n_shot, self.n_query = int(n_way), int(n_shot), int(n_query)
        self.seed, self.n_episodes = int(seed), int(n_episodes)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self.classes = classes.astype(np.int64)
        self._rows = [order[s:s + c].astype(np.int64) for s, c in zip(starts, counts, strict=True)]
        if len(self.classes) < self.n_way:
            raise DatasetError(f"{self.n_way}-way episodes need at least {self.n_way} classes; the split has "
                               f"{len(self.classes)}")
        need = self.n_shot + self.n_query
        small = [(c, n) for c, n in zip(self.classes, counts, strict=True) if n < need]
        if small:
            c, n = small[0]
            name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
            more = f" (and {len(small) - 1} more classes)" if len(small) > 1 else ""
            raise DatasetError(f"class {name!r} (label {c}) has {n} images; {self.n_shot}-shot {self.n_query}-query "
                               f"episodes need {need} per class{more}")

    def episode(self, index: int) -> Episode:
        """Episode number ``index`` (a pure function of the seed and the index)."""
        if index < 0:
            raise DatasetError(f"episode index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, int(index)])
        picked = np.sort(rng.choice(len(self.classes), self.n_way, replace=False))
        picked = picked[rng.permutation(self.n_way)]
        support, query = [], []
        for k in picked:
            rows = self._rows[k]
            chosen = rows[rng.choice(len(rows), self.n_shot + self.n_query, replace=False)]
            support.append(chosen[: self.n_shot])
            query.append(chosen[self.n_shot:])
        return Episode(
            index=int(index),
            classes=self.classes[picked],
            support=np.concatenate(support),
            query=np.concatenate(query) if self.n_query else np.zeros(0, np.int64),
            y_support=np.repeat(np.arange(self.n_way), self.n_shot),
            y_query=np.repeat(np.arange(self.n_way), self.n_query),
        )

    def __len__(self) -> int:
        return self.n_episodes

    def __iter__(self) -> Iterator[Episode]:
        for i in range(self.n_episodes):
            yield self.episode(i)

    def meta_batches(self, n_tasks: int, n_batches: int | None = None, *, start: int = 0) -> Iterator[list[Episode]]:
        """Meta-batches of ``n_tasks`` episodes: batch ``b`` holds episodes ``start + b*n_tasks ...``.

        Args:
            n_tasks: tasks per meta-batch (3 in MetaNTK-NAS, method-facts §4.1).
            n_batches: how many (default: as many whole batches as ``n_episodes`` allows).
            start: first episode number.
        """
        if n_tasks < 1:
            raise DatasetError(f"n_tasks must be >= 1, got {n_tasks}")
        total = n_batches if n_batches is not None else max(0, self.n_episodes - start) // n_tasks
        for b in range(total):
            first = start + b * n_tasks
            yield [self.episode(first + t) for t in range(n_tasks)]

    def manifest(self, n_episodes: int | None = None, **meta: Any) -> EpisodeManifest:
        """The first ``n_episodes`` episodes as a manifest (``meta`` records dataset, split, ...)."""
        n = self.n_episodes if n_episodes is None else n_episodes
        return EpisodeManifest(self.n_way, self.n_shot, self.n_query, [self.episode(i) for i in range(n)],
                               {"seed": self.seed, **meta})


@dataclass
class EpisodeManifest:
    """The exact image indices of a list of episodes, with what they were drawn from (``meta``)."""

    n_way: int
    n_shot: int
    n_query: int
    episodes: list[Episode]
    meta: dict[str, Any]

    def content(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "n_way": self.n_way, "n_shot": self.n_shot, "n_query": self.n_query,
                "meta": self.meta, "episodes": [e.to_dict() for e in self.episodes]}

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the content: any changed index changes it."""
        return _sha256(self.content())

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __len__(self) -> int:
        return len(self.episodes)


def _sha256(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(path: str | os.PathLike, manifest: EpisodeManifest) -> str:
    """Write a manifest as JSON (atomically) and return its SHA-256."""
    content = manifest.content()
    digest = _sha256(content)
    text = json.dumps({**content, "sha256": digest}, separators=(",", ":"))
    with atomic_write(path, "w") as f:
        f.write(text)
    return digest


def read_manifest(path: str | os.PathLike) -> EpisodeManifest:
    """Read a manifest written by :func:`write_manifest`, checking its format and hash.

    Raises:
        DatasetError: missing file, not a manifest, or a hash that does not match the content.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DatasetError(f"episode manifest not found: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"episode manifest {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise DatasetError(f"{path} is not an episode manifest (expected format {MANIFEST_FORMAT!r})")
    stored = data.pop("sha256", None)
    if stored != _sha256(data):
        raise DatasetError(f"episode manifest {path} was modified: its sha256 does not match its content")
    n_shot, n_query = int(data["n_shot"]), int(data["n_query"])
    episodes = [Episode.from_dict(e, n_shot, n_query) for e in data["episodes"]]
    return EpisodeManifest(int(data["n_way"]), n_shot, n_query, episodes, dict(data["meta"]))


# ---------------------------------------------------------------------------------------------------- images


def _raw_images(dataset, indices: Sequence[int]) -> list[dict]:
    """The stored image cells (``{"bytes", "path"}``) of ``indices`` in one batched read, without decoding."""
    import datasets

    feature = dataset.features.get("image")
    if not isinstance(feature, datasets.Image):
        raise DatasetError(f"expected an 'image' column of type Image, found columns {dataset.column_names}")
    raw = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    return raw.with_format(None)[list(map(int, indices))]["image"]


def _decode_one(cell: dict | None, row: int, size: int | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        if cell is None:
            raise ValueError("empty image cell")
        if cell.get("bytes") is not None:
            img = Image.open(io.BytesIO(cell["bytes"]))
        elif cell.get("path"):
            img = Image.open(cell["path"])
        else:
            raise ValueError("image cell has neither bytes nor path")
        img.load()
        if img.mode != "RGB":
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"row {row}: cannot decode image ({e})") from e
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # (3, H, W)


def decode_images(cells: Sequence[dict | None], rows: Sequence[int], size: int | None = None) -> torch.Tensor:
    """Decode stored image cells into one uint8 (N, 3, H, W) tensor (resized to ``size`` x ``size`` if given).

    Raises:
        DatasetError: a cell that cannot be decoded (naming its row), or mixed sizes without ``size``.
    """
    tensors = [_decode_one(c, r, size) for c, r in zip(cells, rows, strict=True)]
    if not tensors:
        return torch.zeros((0, 3, size or 0, size or 0), dtype=torch.uint8)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise DatasetError(f"images have different sizes {sorted(shapes)[:3]}; pass size=... to resize them")
    return torch.stack(tensors)


def load_images(dataset, indices: Sequence[int] | np.ndarray, transform: Callable | None = None, *,
                size: int | None = None) -> torch.Tensor:
    """Load rows of a split as one tensor, with one batched read.

    Args:
        dataset: a ``datasets.Dataset`` with an ``image`` column (``FewShotDataset.split(...)``).
        indices: (N,) row indices, e.g. ``episode.support``.
        transform: applied once to the whole uint8 batch (e.g. :func:`~metantk_zoo.data.transforms.eval_transform`).
        size: resize every image to ``size`` x ``size`` first (needed when stored sizes differ).
    Returns:
        uint8 (N, 3, H, W) without a transform, else whatever ``transform`` returns (float (N, 3, H, W)).
    Raises:
        DatasetError: an index out of range, or an image that cannot be decoded (naming its row).
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= len(dataset)):
        raise DatasetError(f"image index out of range: expected 0..{len(dataset) - 1}, found "
                           f"{int(idx.min())}..{int(idx.max())}")
    cells = _raw_images(dataset, idx) if idx.size else []
    batch = decode_images(cells, idx.tolist(), size)
    return transform(batch) if transform is not None else batch


def with_torch_transform(dataset, transform: Callable | None = None, *, size: int | None = None):
    """``dataset.with_transform`` that decodes each accessed batch into one tensor and applies ``transform`` once.

    ``ds[list_of_rows]`` then returns ``{"image": (N, 3, H, W) tensor, "label": (N,) int64 tensor}``.
    """
    import datasets

    raw = dataset.cast_column("image", datasets.Image(decode=False))

    def _fn(batch: dict[str, list]) -> dict[str, Any]:
        images = decode_images(batch["image"], list(range(len(batch["image"]))), size)
        out = {"image": transform(images) if transform is not None else images}
        if "label" in batch:
            out["label"] = torch.as_tensor(batch["label"], dtype=torch.int64)
        return out

    return raw.with_transform(_fn)
