"""Dataset specs and loaders: every source becomes a :class:`FewShotDataset` of Hugging Face ``datasets``.

A spec is ``SOURCE`` or ``SOURCE:key=value,key=value``. Sources:

* ``synthetic`` — the embedded benchmark (options ``size``, ``seed``, ``per_class``, ``classes``);
* ``GATE-engine/mini_imagenet`` (already class-split), ``timm/mini-imagenet`` (the 64/16/20 wnid split of the
  shipped split file is applied: the Hub dataset is split by image), ``uoft-cs/cifar100`` as CIFAR-FS
  (``:benchmark=cifar-fs``, the default) or FC100 (``:benchmark=fc100``); aliases ``mini-imagenet``, ``cifar-fs``,
  ``fc100``;
* any other Hub id or local path: a ``save_to_disk`` folder, a folder of parquet files, or an ``imagefolder``
  tree (``train/``, optional ``val/``, ``test/`` split folders of class folders).

Options for any source: ``image=`` and ``label=`` (column names), ``train=``, ``val=``, ``test=`` (the source's
split names), ``split_column=`` (a column whose values name each row's split), ``class_split=``
(``mini_imagenet``, ``tiered_imagenet``, ``cifar_fs``, ``fc100`` or ``none``: pool every source split and re-split by
class). Every split is returned with an ``image`` column and an integer
``label`` column numbered 0..C-1 within the split; :meth:`FewShotDataset.class_names` maps labels to names.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

__all__ = ["SPLITS", "FewShotDataset", "load_fewshot", "parse_spec", "class_splits", "label_array"]

logger = logging.getLogger(__name__)

#: Meta-train, meta-val, meta-test.
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid", "dev"),
    "test": ("test", "testing"),
}
_ALIASES = {
    "mini-imagenet": "GATE-engine/mini_imagenet",
    "miniimagenet": "GATE-engine/mini_imagenet",
    "cifar-fs": "uoft-cs/cifar100:benchmark=cifar-fs",
    "cifarfs": "uoft-cs/cifar100:benchmark=cifar-fs",
    "fc100": "uoft-cs/cifar100:benchmark=fc100",
}
_IMAGE_COLUMNS = ("image", "img", "jpg", "png", "pixel_values")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "label_id")


@lru_cache(maxsize=1)
def _split_file() -> dict:
    return json.loads(resources.files("metantk_zoo.resources").joinpath("fewshot_splits.json").read_text())


def class_splits(name: str) -> dict[str, list[str]]:
    """The shipped class split of a benchmark: ``{"train": [...], "val": [...], "test": [...]}``.

    Args:
        name: ``mini_imagenet``, ``tiered_imagenet`` (ImageNet wnids), ``cifar_fs`` or ``fc100`` (CIFAR-100 fine
            class names).
    Raises:
        DatasetError: for an unknown name.
    """
    data = _split_file()
    key = name.replace("-", "_").lower()
    if key in ("mini_imagenet", "tiered_imagenet"):
        return {s: list(data[key][s]) for s in SPLITS}
    if key in ("cifar_fs", "fc100"):
        from .cifar import CIFAR_FS_SPLIT, FC100_SPLIT

        return {s: list(v) for s, v in (CIFAR_FS_SPLIT if key == "cifar_fs" else FC100_SPLIT).items()}
    raise DatasetError(f"unknown class split {name!r}; known: mini_imagenet, tiered_imagenet, cifar_fs, fc100")


def wnid_names() -> dict[str, str]:
    """WordNet lemma of every wnid in the shipped split file."""
    return dict(_split_file()["names"])


def label_array(ds) -> np.ndarray:
    """The ``label`` column of a ``datasets.Dataset`` as int64, read without decoding any image."""
    if len(ds) == 0:
        return np.zeros(0, np.int64)
    return np.asarray(ds.with_format("numpy", columns=["label"])[:]["label"], dtype=np.int64)


@dataclass
class FewShotDataset:
    """A few-shot benchmark: three class-disjoint splits of one image dataset.

    Attributes:
        name: short name (``synthetic``, ``mini_imagenet``, a repo id or a folder name).
        spec: the normalised spec string this dataset was loaded from.
        splits: ``{"train"|"val"|"test": datasets.Dataset}`` with ``image`` and integer ``label`` columns.
        names: class names per split, indexed by label.
        identity: what identifies the content (hashed into :attr:`fingerprint`).
    """

    name: str
    spec: str
    splits: dict[str, Any]
    names: dict[str, list[str]]
    identity: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str):
        """The ``datasets.Dataset`` of meta-train (``train``), meta-val (``val``) or meta-test (``test``)."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name not in self.splits:
            raise DatasetError(f"dataset {self.spec!r} has no {name!r} split; it has {', '.join(self.splits)}")
        return self.splits[name]

    def labels(self, split: str) -> np.ndarray:
        """Integer labels (0..C-1) of a split, read without decoding images."""
        return label_array(self.split(split))

    def class_names(self, split: str) -> list[str]:
        """Class names of a split, indexed by label."""
        self.split(split)
        return list(self.names[split])

    @property
    def fingerprint(self) -> str:
        """A stable hash of the content identity: source identity, class names and label columns per split."""
        h = hashlib.sha256()
        h.update(json.dumps(self.identity, sort_keys=True, default=str).encode())
        for s in SPLITS:
            if s in self.splits:
                h.update(s.encode())
                h.update(json.dumps(self.names[s]).encode())
                h.update(self.labels(s).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """Splits with class and image counts (what ``metantk-zoo data info`` prints)."""
        out: dict[str, Any] = {"name": self.name, "spec": self.spec, "fingerprint": self.fingerprint, "splits": {}}
        for s, ds in self.splits.items():
            counts = np.bincount(self.labels(s), minlength=len(self.names[s]))
            out["splits"][s] = {
                "classes": len(self.names[s]),
                "images": int(len(ds)),
                "images_per_class": {"min": int(counts.min()) if counts.size else 0,
                                     "max": int(counts.max()) if counts.size else 0},
            }
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}: {len(self.names[s])} classes / {len(d)} images" for s, d in self.splits.items())
        return f"FewShotDataset({self.spec!r}; {parts})"


# ---------------------------------------------------------------------------------------------------- specs


def parse_spec(spec: str, **options: Any) -> tuple[str, dict[str, str]]:
    """Split ``SOURCE:key=value,...`` into the source and its options (keyword ``options`` win).

    Raises:
        DatasetError: when an option is not ``key=value``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"expected a dataset spec such as 'synthetic' or 'GATE-engine/mini_imagenet', got {spec!r}")
    spec = spec.strip()
    source, opts = spec, {}
    head, sep, tail = spec.rpartition(":")
    if sep and "=" in tail and not Path(spec).exists():
        source = head
        for item in tail.split(","):
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise DatasetError(f"bad option {item!r} in spec {spec!r}: expected key=value")
            opts[key.strip()] = value.strip()
    alias = _ALIASES.get(source.lower())
    if alias:
        src, alias_opts = parse_spec(alias)
        return src, {**alias_opts, **opts, **{k: str(v) for k, v in options.items() if v is not None}}
    return source, {**opts, **{k: str(v) for k, v in options.items() if v is not None}}


def _format_spec(source: str, opts: dict[str, str]) -> str:
    return source + (":" + ",".join(f"{k}={v}" for k, v in sorted(opts.items())) if opts else "")


def load_fewshot(spec: str, **options: Any) -> FewShotDataset:
    """Load a few-shot benchmark from a spec (see the module docstring for the grammar).

    Args:
        spec: ``synthetic``, a Hub id, an alias or a local path, optionally with ``:key=value,...`` options.
        **options: the same options as keywords (they override the spec's).
    Returns:
        The dataset with its class-disjoint ``train`` / ``val`` / ``test`` splits.
    Raises:
        DatasetError: unknown spec, missing columns, classes shared between splits, unknown options.
    """
    source, opts = parse_spec(spec, **options)
    if source.lower() == "synthetic":
        return _load_synthetic(opts)
    path = Path(source).expanduser()
    if path.exists():
        return _load_local(path, opts)
    if _looks_like_hub_id(source):
        return _load_hub_dataset(source, opts)
    raise DatasetError(
        f"dataset spec {spec!r} is neither 'synthetic', an existing local path, nor a Hub id (owner/name); "
        f"known aliases: {', '.join(sorted(_ALIASES))}"
    )


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _pop_int(opts: dict[str, str], key: str, default: int) -> int:
    value = opts.pop(key, None)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise DatasetError(f"option {key}={value!r}: expected an integer") from e


def _check_no_options_left(opts: dict[str, str], source: str, known: str) -> None:
    if opts:
        raise DatasetError(f"unknown option(s) {', '.join(sorted(opts))} for {source!r}; known: {known}")


# ---------------------------------------------------------------------------------------------------- synthetic


def _load_synthetic(opts: dict[str, str]) -> FewShotDataset:
    import datasets

    from .synthetic import SyntheticConfig, build_synthetic

    opts = dict(opts)
    cfg = SyntheticConfig(
        seed=_pop_int(opts, "seed", 0),
        size=_pop_int(opts, "size", 84),
        per_class=_pop_int(opts, "per_class", 60),
        classes=_pop_int(opts, "classes", 100),
    )
    _check_no_options_left(opts, "synthetic", "seed, size, per_class, classes")
    folder = build_synthetic(cfg)
    dd = datasets.load_from_disk(str(folder))
    spec = _format_spec("synthetic", {"seed": cfg.seed, "size": cfg.size, "per_class": cfg.per_class,
                                      "classes": cfg.classes})
    ds = _from_dataset_dict("synthetic", spec, dd, {}, identity={"synthetic": cfg.key})
    return ds


# ---------------------------------------------------------------------------------------------------- Hub


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a dataset folder or file can raise when the data (not the code) is bad: OS errors, bad values,
    Arrow's errors and the ``datasets`` library's own; anything else is a bug and propagates."""
    import datasets.exceptions
    import pyarrow

    return (OSError, ValueError, KeyError, pyarrow.ArrowException, datasets.exceptions.DatasetsError)


def _short(e: BaseException, limit: int = 200) -> str:
    """An exception as one line of at most ``limit`` characters (library messages can span many lines)."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_load_dataset(repo_id: str, **kwargs: Any):
    """The one place that calls ``datasets.load_dataset`` for a Hub id (tests monkeypatch it)."""
    import datasets

    try:
        return datasets.load_dataset(repo_id, **kwargs)
    except (FileNotFoundError, ConnectionError, ValueError, OSError) as e:
        raise DatasetError(f"could not load Hub dataset {repo_id!r} ({_short(e)}); check the id, the network "
                           f"or HF_HUB_OFFLINE") from e
    except Exception as e:  # noqa: BLE001  huggingface_hub / datasets / httpx errors share no base; others re-raised
        if type(e).__module__.startswith(("huggingface_hub", "datasets", "requests", "httpx")):
            raise DatasetError(f"could not load Hub dataset {repo_id!r} ({_short(e)}); check the id, the network "
                               f"or HF_HUB_OFFLINE") from e
        raise


_KNOWN_HUB = {
    "timm/mini-imagenet": {"class_split": "mini_imagenet"},
    "uoft-cs/cifar100": {"image": "img", "label": "fine_label"},
}


def _load_hub_dataset(repo_id: str, opts: dict[str, str]) -> FewShotDataset:
    opts = {**_KNOWN_HUB.get(repo_id, {}), **opts}
    if repo_id == "uoft-cs/cifar100":
        bench = opts.pop("benchmark", "cifar-fs").replace("-", "_").lower()
        if bench not in ("cifar_fs", "fc100"):
            raise DatasetError(f"uoft-cs/cifar100: benchmark must be cifar-fs or fc100, got {bench!r}")
        opts.setdefault("class_split", bench)
    revision = opts.pop("revision", None)
    dd = _hub_load_dataset(repo_id, **({"revision": revision} if revision else {}))
    return _from_dataset_dict(repo_id, _format_spec(repo_id, opts), _as_dataset_dict(dd), opts,
                              identity={"hub": repo_id, "revision": revision})


def _as_dataset_dict(obj):
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        return obj
    if isinstance(obj, datasets.Dataset):
        return datasets.DatasetDict({"train": obj})
    raise DatasetError(f"expected a datasets Dataset or DatasetDict, found {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------------- local


def _load_local(path: Path, opts: dict[str, str]) -> FewShotDataset:
    import datasets

    name = path.resolve().name
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            dd = datasets.load_from_disk(str(path))
        except _read_errors() as e:  # corrupt arrow files: Arrow, OS and datasets errors
            raise DatasetError(f"could not read save_to_disk folder {path} ({_short(e)}); re-create it") from e
        kind = "save_to_disk"
    elif path.is_file() and path.suffix == ".parquet" or path.is_dir() and _parquet_files(path):
        dd = _load_parquet(path)
        kind = "parquet"
    elif path.is_dir() and _imagefolder_splits(path):
        dd = _load_imagefolder(path)
        kind = "imagefolder"
    else:
        raise DatasetError(
            f"{path} is not a dataset folder: expected save_to_disk output (dataset_dict.json), parquet files "
            f"(train.parquet or train/*.parquet), or an imagefolder tree (train/<class>/<image>)"
        )
    spec = _format_spec(str(path), opts)
    return _from_dataset_dict(name, spec, _as_dataset_dict(dd), dict(opts),
                              identity={"local": kind, "path": str(path.resolve())})


def _parquet_files(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in sorted(path.rglob("*.parquet")):
        rel = f.relative_to(path).as_posix()
        split = _split_of(rel)
        if split:
            found.setdefault(split, []).append(str(f))
    return found


def _split_of(rel: str) -> str | None:
    """The source split named by a relative file path: ``train.parquet``, ``data/train-0000.parquet``, ``val/x``."""
    import re

    for token in re.split(r"[/\\._-]+", rel.lower()):
        for canonical, aliases in _SPLIT_ALIASES.items():
            if token in aliases:
                return canonical
    return None


def _load_parquet(path: Path):
    import datasets

    files = {"train": [str(path)]} if path.is_file() else _parquet_files(path)
    if not files:
        raise DatasetError(f"no parquet files named after a split (train/val/test) under {path}")
    try:  # one split at a time: each split's file carries its own ClassLabel names
        return datasets.DatasetDict({s: datasets.load_dataset("parquet", data_files={s: f}, split=s)
                                     for s, f in files.items()})
    except _read_errors() as e:
        raise DatasetError(f"could not read parquet files under {path} ({_short(e)}); re-create them "
                           f"(metantk-zoo data prepare)") from e


def _imagefolder_splits(path: Path) -> list[str]:
    return [d.name for d in sorted(path.iterdir()) if d.is_dir() and _split_of(d.name)]


def _load_imagefolder(path: Path):
    import datasets

    data_files = {}
    for name in _imagefolder_splits(path):
        d = path / name
        files = [str(f) for f in sorted(d.rglob("*")) if f.is_file() and not f.name.startswith(".")]
        if files:
            data_files[_split_of(name)] = files
    try:
        return datasets.load_dataset("imagefolder", data_files=data_files)
    except _read_errors() as e:
        raise DatasetError(f"could not read the imagefolder tree {path} ({_short(e)}); check its images") from e


# ---------------------------------------------------------------------------------------------------- splitting


def _pick_column(ds, wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> str:
    cols = list(ds.column_names)
    if wanted:
        if wanted not in cols:
            raise DatasetError(f"{where}: no {what} column {wanted!r}; columns are {cols}")
        return wanted
    for c in candidates:
        if c in cols:
            return c
    raise DatasetError(
        f"{where}: expected an {what} column (one of {', '.join(candidates)}; choose with {what}=NAME), "
        f"found columns {cols}"
    )


def _names_of(ds, column: str, where: str) -> tuple[np.ndarray, list[str] | None]:
    """Raw label values and, for ClassLabel columns, their names."""
    import datasets

    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return np.asarray(ds.with_format("numpy", columns=[column])[:][column]), list(feature.names)
    if isinstance(feature, datasets.Value) and (feature.dtype.startswith("int") or feature.dtype.startswith("uint")):
        return np.asarray(ds.with_format("numpy", columns=[column])[:][column]), None
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return np.asarray(ds.with_format("numpy", columns=[column])[:][column]).astype(str), None
    raise DatasetError(f"{where}: label column {column!r} must hold integers, ClassLabel or strings, found {feature}")


def _class_keys(values: np.ndarray, names: list[str] | None, where: str = "") -> np.ndarray:
    if names is not None:
        if values.size and (values.min() < 0 or values.max() >= len(names)):
            raise DatasetError(f"{where}: labels must be in 0..{len(names) - 1} (the ClassLabel names), found "
                               f"{values.min()}..{values.max()}")
        return np.asarray(names, dtype=object)[values]
    return values.astype(str).astype(object)


def _from_dataset_dict(name: str, spec: str, dd, opts: dict[str, str], identity: dict) -> FewShotDataset:
    """Normalise a source ``DatasetDict`` into three class-disjoint splits with ``image`` / ``label`` columns."""
    opts = dict(opts)
    image_col, label_col = opts.pop("image", None), opts.pop("label", None)
    class_split = opts.pop("class_split", None)
    split_column = opts.pop("split_column", None)
    wanted = {s: opts.pop(s, None) for s in SPLITS}
    opts.pop("benchmark", None)
    _check_no_options_left(opts, name, "image, label, train, val, test, class_split, split_column, revision")
    if split_column:
        dd = _split_by_column(dd, split_column, name)
    normalised = {split_name: _normalise_split(ds, image_col, label_col, f"{name} split {split_name!r}")
                  for split_name, ds in dd.items()}
    if class_split and class_split.lower() != "none":
        out, names_out = _by_class_split(name, normalised, class_split)
        return FewShotDataset(name, spec, out, names_out, {**identity, "class_split": class_split})
    out, names_out = _by_source_splits(name, normalised, wanted)
    return FewShotDataset(name, spec, out, names_out, identity)


def _normalise_split(ds, image_col: str | None, label_col: str | None,
                     where: str) -> tuple[Any, np.ndarray, bool, list]:
    """One source split -> ``(dataset with one image column, class key per row, named classes?, class order)``."""
    import datasets

    icol = _pick_column(ds, image_col, _IMAGE_COLUMNS, "image", where)
    lcol = _pick_column(ds, label_col, _LABEL_COLUMNS, "label", where)
    if not isinstance(ds.features[icol], datasets.Image):
        raise DatasetError(f"{where}: column {icol!r} must be an image feature, found {ds.features[icol]}")
    values, names = _names_of(ds, lcol, where)
    keep = [c for c in ds.column_names if c != lcol]
    ds = ds.select_columns(keep)
    if icol != "image":
        ds = ds.rename_column(icol, "image")
    named = names is not None or values.dtype.kind in "US"
    keys = _class_keys(values, names, where)
    present = set(keys.tolist())
    order = [n for n in names if n in present] if names is not None else sorted(present, key=_natural_key)
    return ds.select_columns(["image"]), keys, named, order


def _by_class_split(name: str, normalised: dict, class_split: str) -> tuple[dict, dict]:
    """Pool every source split and cut it by a named class split (e.g. the mini-ImageNet Ravi-Larochelle classes)."""
    import datasets

    split_classes = class_splits(class_split)
    pooled = datasets.concatenate_datasets([n[0] for n in normalised.values()])
    keys = np.concatenate([n[1] for n in normalised.values()])
    out, names_out = {}, {}
    for s in SPLITS:
        classes = split_classes[s]
        index = {c: i for i, c in enumerate(classes)}
        missing = sorted(set(classes) - set(keys.tolist()))
        if missing:
            raise DatasetError(
                f"{name}: the {class_split} {s} split needs classes missing from the data: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} ({len(missing)} missing)"
            )
        rows = np.flatnonzero(np.isin(keys, classes))
        labels = np.fromiter((index[k] for k in keys[rows]), dtype=np.int64, count=len(rows))
        out[s] = _with_labels(pooled.select(rows), labels)
        names_out[s] = list(classes)
    return out, names_out


def _by_source_splits(name: str, normalised: dict, wanted: dict) -> tuple[dict, dict]:
    """Map the source's own splits (or the ones named by ``train=/val=/test=``) onto class-disjoint splits."""
    picked = {}
    for s in SPLITS:
        src = wanted[s]
        if src is None:
            src = next((a for a in _SPLIT_ALIASES[s] if a in normalised), None)
        elif src not in normalised:
            raise DatasetError(f"{name}: no split {src!r} for {s}; the source has {', '.join(normalised)}")
        if src is not None:
            picked[s] = src
    if "train" not in picked:
        raise DatasetError(
            f"{name}: expected a train split (train/val/test), found splits {', '.join(normalised)}; "
            f"name them with train=..., val=..., test=... or give class_split=..."
        )
    out, names_out = {}, {}
    seen: dict[str, str] = {}
    for s, src in picked.items():
        ds, keys, named, classes = normalised[src]
        for c in classes if named else ():  # bare integer labels may restart at 0 in every split
            if c in seen:
                raise DatasetError(
                    f"{name}: class {c!r} is in both the {seen[c]} and the {s} split; few-shot splits must be "
                    f"class-disjoint (for a dataset split by image, such as timm/mini-imagenet, give class_split=...)"
                )
            seen.setdefault(c, s)
        index = {c: i for i, c in enumerate(classes)}
        labels = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
        out[s] = _with_labels(ds, labels)
        names_out[s] = classes
    return out, names_out


def _split_by_column(dd, column: str, name: str):
    """Pool the source splits and split them again by the values of ``column`` (e.g. train / val / test)."""
    import datasets

    missing = [s for s, d in dd.items() if column not in d.column_names]
    if missing:
        raise DatasetError(f"{name}: no split column {column!r} in split(s) {', '.join(missing)}")
    pooled = datasets.concatenate_datasets(list(dd.values())) if len(dd) > 1 else next(iter(dd.values()))
    values = np.asarray(pooled.with_format("numpy", columns=[column])[:][column]).astype(str)
    out = {}
    for value in sorted(set(values.tolist())):
        out[value] = pooled.select(np.flatnonzero(values == value)).remove_columns(column)
    return datasets.DatasetDict(out)


def _natural_key(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _with_labels(ds, labels: np.ndarray):
    if ds._indices is not None:  # keep selections cheap: label the parent table, then select again
        return _add_after_select(ds, labels)
    return ds.add_column("label", labels)


def _add_after_select(ds, labels: np.ndarray):
    """Attach ``labels`` to a selection without rewriting its images: label the parent table, then re-select."""
    import datasets

    rows = np.asarray(ds._indices.column(0).to_numpy(), dtype=np.int64)
    parent = datasets.Dataset(ds.data, info=ds.info.copy(), split=ds.split)
    full = np.full(len(parent), -1, dtype=np.int64)
    full[rows] = labels
    return parent.add_column("label", full).select(rows)
