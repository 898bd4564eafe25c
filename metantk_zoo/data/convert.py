"""Converters to the project's prepared format, and the benchmark checks behind ``metantk-zoo data verify``.

Prepared format (what ``metantk-zoo data prepare SOURCE --out DIR`` writes): ``DIR/{train,val,test}.parquet`` with
an ``image`` column (PNG bytes) and a ``label`` ``ClassLabel`` column whose names are the split's classes, plus
``DIR/fewshot.json`` (source, benchmark, size, counts). ``load_fewshot(DIR)`` reads it back.

Sources it converts:

* RFS / MetaOptNet mini-ImageNet pickles (``miniImageNet_category_split_{train_phase_train,val,test}.pickle``: a
  dict with ``data`` uint8 N x 84 x 84 x 3 and ``labels``), read with the restricted unpickler;
* RFS tiered-ImageNet files (``{train,val,test}_images.npz`` with key ``images``, ``{split}_labels.pkl`` with
  ``labels`` or ``label_specific``);
* an ImageNet-1k image tree (``<wnid>/<image>`` folders, optionally under ``train/``) turned into tiered-ImageNet
  (351/97/160 wnids, Ren et al. 2018) or mini-ImageNet with the shipped split, resized to 84 x 84;
* any spec :func:`~metantk_zoo.data.load_fewshot` accepts (``size`` resizes it).

Nothing is written on failure: output goes to a temporary sibling folder, renamed into place at the end.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, MetantkZooError
from ..utils.io import staged_dir, write_json
from ..utils.progress import progress
from ..version import __version__
from .safe_pickle import safe_load
from .sources import SPLITS, FewShotDataset, class_splits, load_fewshot

__all__ = ["prepare", "read_rfs_mini", "read_rfs_tiered", "imagenet_tree_splits", "verify", "VerifyReport",
           "RFS_MINI_FILES"]

logger = logging.getLogger(__name__)

#: RFS / MetaOptNet mini-ImageNet files used as meta-train / meta-val / meta-test (method-facts §10).
RFS_MINI_FILES = {
    "train": "miniImageNet_category_split_train_phase_train.pickle",
    "val": "miniImageNet_category_split_val.pickle",
    "test": "miniImageNet_category_split_test.pickle",
}
_WNID = re.compile(r"^n\d{8}$")
_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_CHUNK = 512


# ---------------------------------------------------------------------------------------------------- readers


@dataclass
class _Split:
    """One split in memory-light form: a row count, class names by label, and a chunked image iterator."""

    names: list[str]
    labels: np.ndarray
    chunks: Any  # callable () -> iterator of (uint8 (n, H, W, 3) array or list of PIL images, labels)


def _check_array_file(obj: Any, source: str) -> tuple[np.ndarray, np.ndarray, dict]:
    if not isinstance(obj, dict):
        raise DatasetError(f"{source}: expected a dict with 'data' and 'labels', found {type(obj).__name__}")
    data = obj.get("data")
    labels = obj.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{source}: expected 'data' as a uint8 N x H x W x 3 array, found {found}")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{source}: expected {len(data)} integer 'labels', found {labels.dtype} {labels.shape}")
    return data, labels.astype(np.int64), obj


def _array_split(data: np.ndarray, raw_labels: np.ndarray, names_by_raw: dict[int, str] | None) -> _Split:
    uniq = np.unique(raw_labels)
    names = [names_by_raw.get(int(u), f"class_{int(u)}") if names_by_raw else f"class_{int(u)}" for u in uniq]
    labels = np.searchsorted(uniq, raw_labels)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in range(0, len(data), _CHUNK):
            yield data[s:s + _CHUNK], labels[s:s + _CHUNK]

    return _Split(names, labels, chunks)


def read_rfs_mini(folder: str | os.PathLike) -> dict[str, _Split]:
    """Read the RFS / MetaOptNet mini-ImageNet pickles of ``folder`` (restricted unpickler)."""
    folder = Path(folder)
    out = {}
    for split, fname in RFS_MINI_FILES.items():
        path = folder / fname
        if not path.is_file():
            raise DatasetError(f"RFS mini-ImageNet folder {folder}: missing {fname}")
        data, labels, obj = _check_array_file(safe_load(path), str(path))
        cat = obj.get("catname2label")
        names = {int(v): str(k) for k, v in cat.items()} if isinstance(cat, dict) else None
        out[split] = _array_split(data, labels, names)
    return out


def read_rfs_tiered(folder: str | os.PathLike) -> dict[str, _Split]:
    """Read RFS tiered-ImageNet ``{split}_images.npz`` + ``{split}_labels.pkl`` files (no pickled objects)."""
    folder = Path(folder)
    out = {}
    for split in SPLITS:
        img_path, lab_path = folder / f"{split}_images.npz", folder / f"{split}_labels.pkl"
        for p in (img_path, lab_path):
            if not p.is_file():
                raise DatasetError(f"RFS tiered-ImageNet folder {folder}: missing {p.name}")
        try:
            with np.load(img_path, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise DatasetError(f"{img_path}: expected an array 'images', found {z.files}")
                images = z["images"]
        except (ValueError, OSError) as e:
            raise DatasetError(f"{img_path}: not a readable npz without pickled objects ({e})") from e
        obj = safe_load(lab_path)
        if not isinstance(obj, dict) or not ({"labels", "label_specific"} & set(obj)):
            found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DatasetError(f"{lab_path}: expected a dict with 'labels' (or 'label_specific'), found {found}")
        labels = obj.get("labels", obj.get("label_specific"))
        data, labels, _ = _check_array_file({"data": images, "labels": labels}, str(img_path))
        strs = obj.get("label_specific_str")
        names = {i: str(s) for i, s in enumerate(strs)} if isinstance(strs, (list, tuple, np.ndarray)) else None
        out[split] = _array_split(data, labels, names)
    return out


def imagenet_tree_splits(root: str | os.PathLike, benchmark: str = "tiered_imagenet") -> dict[str, _Split]:
    """Index an ImageNet-1k image tree (``[train/]<wnid>/<image>``) by the shipped ``benchmark`` wnid split."""
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() and _has_wnid_dirs(root / "train") else root
    if not _has_wnid_dirs(base):
        raise DatasetError(f"{root}: expected an ImageNet tree of <wnid>/<image> folders (e.g. n01440764/)")
    wanted = class_splits(benchmark)
    out = {}
    for split, wnids in wanted.items():
        missing = [w for w in wnids if not (base / w).is_dir()]
        if missing:
            raise DatasetError(f"{base}: the {benchmark} {split} split needs {len(missing)} class folders that are "
                               f"missing, e.g. {', '.join(missing[:3])}")
        files, labels = [], []
        for label, wnid in enumerate(wnids):
            imgs = sorted(p for p in (base / wnid).iterdir() if p.suffix.lower() in _IMAGE_EXT)
            if not imgs:
                raise DatasetError(f"{base / wnid}: no images in class folder {wnid}")
            files += imgs
            labels += [label] * len(imgs)
        out[split] = _file_split(files, np.asarray(labels, np.int64), list(wnids))
    return out


def _has_wnid_dirs(path: Path) -> bool:
    return any(d.is_dir() and _WNID.match(d.name) for d in path.iterdir())


def _file_split(files: list[Path], labels: np.ndarray, names: list[str]) -> _Split:
    def chunks() -> Iterator[tuple[list, np.ndarray]]:
        from PIL import Image, UnidentifiedImageError

        for s in range(0, len(files), _CHUNK):
            imgs = []
            for f in files[s:s + _CHUNK]:
                try:
                    with Image.open(f) as im:
                        imgs.append(im.convert("RGB"))
                except (UnidentifiedImageError, OSError) as e:
                    raise DatasetError(f"cannot decode image {f}: {e}") from e
            yield imgs, labels[s:s + _CHUNK]

    return _Split(names, labels, chunks)


def _dataset_splits(fs: FewShotDataset) -> dict[str, _Split]:
    from .episodes import _raw_images, decode_images

    out = {}
    for split, ds in fs.splits.items():
        labels = fs.labels(split)

        def chunks(ds=ds, labels=labels) -> Iterator[tuple[list, np.ndarray]]:
            from PIL import Image

            for s in range(0, len(ds), _CHUNK):
                rows = list(range(s, min(s + _CHUNK, len(ds))))
                cells = _raw_images(ds, rows)
                imgs = []
                for cell, row in zip(cells, rows, strict=True):
                    t = decode_images([cell], [row])[0]
                    imgs.append(Image.fromarray(t.permute(1, 2, 0).numpy()))
                yield imgs, labels[rows[0]:rows[-1] + 1]

        out[split] = _Split(fs.class_names(split), labels, chunks)
    return out


# ---------------------------------------------------------------------------------------------------- writing


def _encode(img: Any, size: int | None) -> bytes:
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_split(path: Path, split: _Split, size: int | None, desc: str, names: list[str], offset: int) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    # one ClassLabel over the classes of all splits, as the Hub requires: the folder can be pushed as it is
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    schema = features.arrow_schema.with_metadata(
        {"huggingface": json.dumps({"info": {"features": features.to_dict()}})})
    with pq.ParquetWriter(str(path), schema) as writer:
        bar = progress(desc=desc, total=len(split.labels), unit="img")
        for images, labels in split.chunks():
            cells = [{"bytes": _encode(img, size), "path": None} for img in images]
            label_column = np.asarray(labels, np.int64) + offset
            writer.write_table(pa.table({"image": cells, "label": label_column}, schema=schema))
            bar.update(len(cells))
        bar.close()


def _detect(source: str) -> str:
    path = Path(source).expanduser()
    if path.is_dir():
        if all((path / f).is_file() for f in RFS_MINI_FILES.values()):
            return "rfs_mini"
        if (path / "train_images.npz").is_file():
            return "rfs_tiered"
        if _has_wnid_dirs(path) or (path / "train").is_dir() and _has_wnid_dirs(path / "train"):
            return "imagenet"
    return "spec"


def prepare(source: str, out: str | os.PathLike, *, size: int | None = None, benchmark: str | None = None,
            overwrite: bool = False, **options: Any) -> Path:
    """Convert ``source`` into the prepared parquet format under ``out``.

    Args:
        source: an RFS mini folder, an RFS tiered folder, an ImageNet tree, or any dataset spec.
        out: output folder (must not exist unless ``overwrite``).
        size: resize images to ``size`` x ``size`` (84 by default for an ImageNet tree; else kept).
        benchmark: the class split for an ImageNet tree (``tiered_imagenet``, the default, or ``mini_imagenet``).
        overwrite: replace an existing ``out``, only if it is a dataset this tool prepared (it carries the
            marker file, or, from older versions, ``fewshot.json``); never an arbitrary folder.
        **options: options for :func:`load_fewshot` when ``source`` is a spec.
    Returns:
        The output folder.
    Raises:
        DatasetError: an existing non-empty ``out`` without ``overwrite``, an ``out`` this tool did not make, a
            path under a file, or any bad input (nothing is written then).

    The dataset is written into a staging folder beside ``out`` and renamed into place when complete, so a kill
    leaves either the previous ``out`` or the new one (plus, at worst, a hidden staging folder to delete).
    """
    from ..utils.rundir import MARKER, check_out_dir, dir_kind

    out = Path(out).expanduser()
    try:
        action = check_out_dir(out, "dataset", overwrite=overwrite)
    except MetantkZooError as e:
        raise DatasetError(str(e)) from e
    if action == "overwrite" and dir_kind(out) != "dataset":
        raise DatasetError(f"--out {out} holds a {dir_kind(out)} folder, not a prepared dataset; --overwrite "
                           f"replaces only datasets this tool prepared; pick another --out")
    kind = _detect(source)
    if kind == "rfs_mini":
        splits, name = read_rfs_mini(source), "mini_imagenet"
    elif kind == "rfs_tiered":
        splits, name = read_rfs_tiered(source), "tiered_imagenet"
    elif kind == "imagenet":
        name = benchmark or "tiered_imagenet"
        splits, size = imagenet_tree_splits(source, name), size or 84
    else:
        fs = load_fewshot(source, **options)
        splits, name = _dataset_splits(fs), fs.name
    with staged_dir(out) as tmp:
        info = {"source": str(source), "kind": kind, "name": name, "size": size, "splits": {}}
        names, offsets = [], {}
        for split, data in splits.items():
            offsets[split] = len(names)
            names += data.names
        if len(set(names)) < len(names):  # e.g. classes numbered from 0 in every split: keep them apart
            names = [f"{split}_{n}" for split, data in splits.items() for n in data.names]
        for split, data in splits.items():
            _write_split(tmp / f"{split}.parquet", data, size, f"prepare {split}", names, offsets[split])
            info["splits"][split] = {"classes": len(data.names), "images": int(len(data.labels))}
        write_json(tmp / "fewshot.json", info)
        write_json(tmp / MARKER, {"kind": "dataset", "version": __version__})
    logger.info("prepared %s (%s) in %s", source, kind, out)
    return out


# ---------------------------------------------------------------------------------------------------- verify


#: Known benchmarks: classes per split and, where every class has the same count, images per class.
KNOWN = {
    "mini_imagenet": {"classes": (64, 16, 20), "per_class": 600, "names": "mini_imagenet"},
    "tiered_imagenet": {"classes": (351, 97, 160), "per_class": None, "names": "tiered_imagenet"},
    "cifar_fs": {"classes": (64, 16, 20), "per_class": 600, "names": "cifar_fs"},
    "fc100": {"classes": (60, 20, 20), "per_class": 600, "names": "fc100"},
}


@dataclass
class VerifyReport:
    """Checks of a dataset against a known benchmark: ``(name, ok, detail)`` triples."""

    benchmark: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, bool(ok), detail))


def _guess_benchmark(fs: FewShotDataset) -> str | None:
    cs = fs.identity.get("class_split")
    if cs and cs != "none":
        return cs.replace("-", "_")
    if fs.name == "synthetic":
        return "synthetic"
    if "mini" in fs.name.lower():
        return "mini_imagenet"
    if "tiered" in fs.name.lower():
        return "tiered_imagenet"
    names = set(fs.class_names("train"))
    for bench in ("mini_imagenet", "tiered_imagenet", "cifar_fs", "fc100"):
        if names == set(class_splits(bench)["train"]):
            return bench
    return None


def verify(spec_or_dataset: str | FewShotDataset, benchmark: str | None = None) -> VerifyReport:
    """Check class lists and counts against a known benchmark (guessed from the dataset when not given).

    Loading ``timm/mini-imagenet`` without its class split (``class_split=none``) already fails: its splits share
    classes.
    """
    fs = spec_or_dataset if isinstance(spec_or_dataset, FewShotDataset) else load_fewshot(spec_or_dataset)
    bench = (benchmark or _guess_benchmark(fs) or "").replace("-", "_")
    report = VerifyReport(bench or "unknown")
    present = [s for s in SPLITS if s in fs.splits]
    report.add("splits", present == list(SPLITS), f"found {', '.join(present)}")
    all_names = [set(fs.class_names(s)) for s in present]
    overlap = set().union(*[a & b for i, a in enumerate(all_names) for b in all_names[i + 1:]])
    report.add("class-disjoint", not overlap, "no class in two splits" if not overlap else
               f"{len(overlap)} classes in two splits, e.g. {sorted(overlap)[:3]}")
    counts = {s: np.bincount(fs.labels(s), minlength=len(fs.class_names(s))) for s in present}
    empty = [f"{s}/{fs.class_names(s)[i]}" for s in present for i in np.flatnonzero(counts[s] == 0)]
    report.add("no empty class", not empty, "every class has images" if not empty else f"empty: {empty[:3]}")
    if bench == "synthetic":
        from .synthetic import SyntheticConfig

        cfg = SyntheticConfig(**{k: int(v) for k, v in _spec_opts(fs.spec).items()})
        expected = cfg.split_sizes
        found = tuple(len(fs.class_names(s)) for s in present)
        report.add("class counts", found == expected, f"expected {expected}, found {found}")
        per = {int(c) for s in present for c in counts[s]}
        report.add("images per class", per == {cfg.per_class}, f"expected {cfg.per_class}, found {sorted(per)}")
    elif bench in KNOWN:
        known = KNOWN[bench]
        found = tuple(len(fs.class_names(s)) for s in present)
        report.add("class counts", found == known["classes"], f"expected {known['classes']}, found {found}")
        ref = class_splits(known["names"])
        named = not all(n.startswith("class_") or n.isdigit() for s in present for n in fs.class_names(s))
        if named:
            for s in present:
                ok = set(fs.class_names(s)) == set(ref[s])
                diff = sorted(set(fs.class_names(s)) ^ set(ref[s]))
                report.add(f"{s} classes", ok, "match the published split" if ok else
                           f"{len(diff)} differ from the published split, e.g. {diff[:3]}")
        else:
            report.add("class names", True, "not checked: the dataset names classes by number only")
        if known["per_class"]:
            per = sorted({int(c) for s in present for c in counts[s]})
            report.add("images per class", per == [known["per_class"]],
                       f"expected {known['per_class']}, found {per[:5]}")
    else:
        report.add("benchmark", False, f"unknown benchmark {bench or '(none guessed)'}; give one of "
                                       f"{', '.join([*KNOWN, 'synthetic'])}")
    return report


def _spec_opts(spec: str) -> dict[str, str]:
    _, _, tail = spec.partition(":")
    return dict(item.split("=", 1) for item in tail.split(",") if "=" in item)


