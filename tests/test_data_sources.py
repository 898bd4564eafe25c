"""Every supported source: local formats, RFS files, an ImageNet tree, Hub ids (stand-ins with the real class ids)."""

from __future__ import annotations

import json
import pickle

import datasets
import numpy as np
import pytest
from PIL import Image

from metantk_zoo.data import class_splits, load_fewshot, load_images
from metantk_zoo.data import sources as sources_mod
from metantk_zoo.data.cifar import CIFAR100_SUPERCLASSES
from metantk_zoo.data.convert import RFS_MINI_FILES, prepare, verify
from metantk_zoo.data.safe_pickle import safe_load
from metantk_zoo.errors import DatasetError
from tests._data_helpers import png_bytes, solid_images


def _features(names):
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})


def _dd(per_split_classes: dict[str, list[str]], per_class: int = 3, size: int = 8, seed: int = 0):
    out = {}
    for s, names in per_split_classes.items():
        imgs = solid_images(len(names) * per_class, size, seed)
        cells = [{"bytes": png_bytes(a), "path": None} for a in imgs]
        labels = np.repeat(np.arange(len(names)), per_class).tolist()
        out[s] = datasets.Dataset.from_dict({"image": cells, "label": labels}, features=_features(names))
    return datasets.DatasetDict(out)


SMALL = {"train": ["ant", "bee", "cat", "dog", "eel"], "val": ["fox", "gnu"], "test": ["hen", "ibis", "jay"]}


def _check_small(fs):
    assert [fs.class_names(s) for s in ("train", "val", "test")] == [SMALL["train"], SMALL["val"], SMALL["test"]]
    assert np.array_equal(fs.labels("val"), [0, 0, 0, 1, 1, 1])
    x = load_images(fs.split("test"), [0, 8])
    assert x.shape == (2, 3, 8, 8)


# ---------------------------------------------------------------------------------------------------- local


def test_save_to_disk_folder(tmp_path):
    _dd(SMALL).save_to_disk(str(tmp_path / "ds"))
    _check_small(load_fewshot(str(tmp_path / "ds")))


def test_parquet_folder(tmp_path):
    for s, ds in _dd(SMALL).items():
        ds.to_parquet(str(tmp_path / "pq" / "data" / f"{s}-00000-of-00001.parquet"))
    _check_small(load_fewshot(str(tmp_path / "pq")))


def test_imagefolder_tree(tmp_path):
    imgs = iter(solid_images(30, 8))
    for s, names in SMALL.items():
        for n in names:
            (tmp_path / "tree" / s / n).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(next(imgs)).save(tmp_path / "tree" / s / n / f"{i}.png")
    fs = load_fewshot(str(tmp_path / "tree"))
    _check_small(fs)
    assert fs.fingerprint == load_fewshot(str(tmp_path / "tree")).fingerprint


def test_split_column_and_renamed_columns(tmp_path):
    cells = [{"bytes": png_bytes(a), "path": None} for a in solid_images(9, 8)]
    ds = datasets.Dataset.from_dict({"picture": cells, "kind": ["x", "x", "y", "y", "z", "z", "w", "w", "w"],
                                     "part": ["tr", "tr", "tr", "tr", "ev", "ev", "te", "te", "te"]},
                                    features=datasets.Features({"picture": datasets.Image(),
                                                                "kind": datasets.Value("string"),
                                                                "part": datasets.Value("string")}))
    ds.to_parquet(str(tmp_path / "all.parquet"))
    fs = load_fewshot(f"{tmp_path / 'all.parquet'}:image=picture,label=kind,split_column=part,train=tr,val=ev,test=te")
    assert [fs.class_names(s) for s in ("train", "val", "test")] == [["x", "y"], ["z"], ["w"]]
    assert fs.labels("train").tolist() == [0, 0, 1, 1]
    assert load_images(fs.split("test"), [2]).shape == (1, 3, 8, 8)
    with pytest.raises(DatasetError, match="no split column 'nope'"):
        load_fewshot(str(tmp_path / "all.parquet"), image="picture", label="kind", split_column="nope")


def test_prepare_round_trips_through_parquet(tmp_path):
    _dd(SMALL).save_to_disk(str(tmp_path / "ds"))
    out = prepare(str(tmp_path / "ds"), tmp_path / "prepared", size=12)
    info = json.loads((out / "fewshot.json").read_text())
    assert info["splits"]["train"] == {"classes": 5, "images": 15}
    fs = load_fewshot(str(out))
    assert fs.class_names("train") == SMALL["train"]
    assert load_images(fs.split("train"), [0]).shape == (1, 3, 12, 12)


# ---------------------------------------------------------------------------------------------------- RFS files


def _write_rfs_mini(folder, per_class=3, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    wnids = class_splits("mini_imagenet")
    offset = 0
    for split, fname in RFS_MINI_FILES.items():
        n = len(wnids[split])
        labels = np.repeat(np.arange(offset, offset + n), per_class)
        obj = {"data": solid_images(len(labels), 84, seed=offset), "labels": labels.tolist(),
               "catname2label": {w: offset + i for i, w in enumerate(wnids[split])}}
        (folder / fname).write_bytes(pickle.dumps(obj, protocol=protocol))
        offset += n
    return folder


def test_rfs_mini_pickles_convert_and_verify(tmp_path):
    src = _write_rfs_mini(tmp_path / "miniImageNet")
    fs = load_fewshot(str(prepare(str(src), tmp_path / "mini")))
    assert fs.class_names("test") == class_splits("mini_imagenet")["test"]
    assert np.array_equal(np.bincount(fs.labels("train")), np.full(64, 3))
    # the images are stored losslessly: row 4 of meta-val is row 4 of the val pickle
    raw = safe_load(src / RFS_MINI_FILES["val"])
    assert np.array_equal(load_images(fs.split("val"), [4])[0].permute(1, 2, 0).numpy(), raw["data"][4])
    report = verify(fs, "mini_imagenet")
    checks = {n: ok for n, ok, _ in report.checks}
    assert checks["class counts"] and checks["test classes"] and checks["class-disjoint"]
    assert not checks["images per class"]  # 3, not 600


def test_rfs_tiered_npz_and_labels(tmp_path):
    folder = tmp_path / "tiered"
    folder.mkdir()
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        labels = np.repeat(np.arange(n), 2)
        np.savez(folder / f"{split}_images.npz", images=solid_images(len(labels), 84))
        (folder / f"{split}_labels.pkl").write_bytes(pickle.dumps(
            {"label_specific": labels, "label_specific_str": [f"{split}{i}" for i in range(n)]}, protocol=4))
    fs = load_fewshot(str(prepare(str(folder), tmp_path / "out")))
    assert fs.class_names("val") == ["val0", "val1"]
    assert len(fs.split("train")) == 8
    for split in ("train", "val", "test"):  # classes numbered from 0 in every split stay apart
        labels = {"label_specific": np.repeat(np.arange(2), 2)}
        (folder / f"{split}_labels.pkl").write_bytes(pickle.dumps(labels))
        np.savez(folder / f"{split}_images.npz", images=solid_images(4, 84))
    fs = load_fewshot(str(prepare(str(folder), tmp_path / "out2")))
    assert fs.class_names("test") == ["test_class_0", "test_class_1"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_holding_anything_but_arrays_is_refused_and_nothing_is_written(tmp_path, capsys):
    src = _write_rfs_mini(tmp_path / "miniImageNet")
    obj = {"data": solid_images(2, 84), "labels": [0, 1], "extra": _Evil()}
    (src / RFS_MINI_FILES["test"]).write_bytes(pickle.dumps(obj))
    with pytest.raises(DatasetError, match=r"refusing to unpickle builtins\.print"):
        prepare(str(src), tmp_path / "out")
    assert "pwned" not in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["miniImageNet"]  # no output, no temp folder


def test_imagenet_tree_becomes_tiered_imagenet(tmp_path):
    root = tmp_path / "imagenet" / "train"
    split = class_splits("tiered_imagenet")
    wnids = [w for s in ("train", "val", "test") for w in split[s]]
    img = Image.fromarray(solid_images(1, 20)[0])
    for w in wnids:
        (root / w).mkdir(parents=True)
        img.save(root / w / f"{w}_1.JPEG", format="JPEG")
    (root / "n99999999").mkdir()  # a class outside the split is ignored
    img.save(root / "n99999999" / "x.JPEG", format="JPEG")
    fs = load_fewshot(str(prepare(str(tmp_path / "imagenet"), tmp_path / "tiered")))
    assert [len(fs.class_names(s)) for s in ("train", "val", "test")] == [351, 97, 160]
    assert fs.class_names("val") == split["val"]
    assert load_images(fs.split("test"), [0]).shape == (1, 3, 84, 84)
    checks = {n: ok for n, ok, _ in verify(fs, "tiered_imagenet").checks}
    assert checks["class counts"] and checks["train classes"] and checks["class-disjoint"]


# ---------------------------------------------------------------------------------------------------- Hub ids


def _standin(monkeypatch, dd, seen):
    def fake(repo_id, **kwargs):
        seen.append(repo_id)
        return dd

    monkeypatch.setattr(sources_mod, "_hub_load_dataset", fake)


def test_timm_mini_imagenet_gets_the_wnid_class_split(monkeypatch):
    split = class_splits("mini_imagenet")
    wnids = sorted(w for s in split.values() for w in s)  # timm's ClassLabel: the 100 wnids, sorted
    by_image = {}
    for k, s in enumerate(("train", "validation", "test")):
        cells = [{"bytes": png_bytes(a), "path": None} for a in solid_images(100, 8, seed=k)]
        by_image[s] = datasets.Dataset.from_dict({"image": cells, "label": list(range(100))},
                                                 features=_features(wnids))
    seen = []
    _standin(monkeypatch, datasets.DatasetDict(by_image), seen)
    fs = load_fewshot("timm/mini-imagenet")
    assert seen == ["timm/mini-imagenet"]
    for s in ("train", "val", "test"):
        assert fs.class_names(s) == split[s]
        assert np.array_equal(np.bincount(fs.labels(s)), np.full(len(split[s]), 3))  # pooled from 3 image splits
    # labels point at the right images: row 0 of meta-test is the first image of its wnid in the source train split
    first = split["test"][0]
    src_row = wnids.index(first)
    expected = np.array(by_image["train"][src_row]["image"])
    assert fs.class_names("test")[fs.labels("test")[0]] == first
    assert np.array_equal(load_images(fs.split("test"), [0])[0].permute(1, 2, 0).numpy(), expected)
    with pytest.raises(DatasetError, match="class_split"):
        load_fewshot("timm/mini-imagenet:class_split=none")


@pytest.mark.parametrize("spec,sizes", [("cifar-fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_cifar100_benchmarks(monkeypatch, spec, sizes):
    fine = sorted(f for fs in CIFAR100_SUPERCLASSES.values() for f in fs)
    coarse = sorted(CIFAR100_SUPERCLASSES)
    coarse_of = {f: coarse.index(c) for c, fs in CIFAR100_SUPERCLASSES.items() for f in fs}
    cells = [{"bytes": png_bytes(a), "path": None} for a in solid_images(200, 8)]
    labels = list(range(100)) * 2
    feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=fine),
                               "coarse_label": datasets.ClassLabel(names=coarse)})
    ds = datasets.Dataset.from_dict({"img": cells, "fine_label": labels,
                                     "coarse_label": [coarse_of[fine[i]] for i in labels]}, features=feats)
    _standin(monkeypatch, datasets.DatasetDict({"train": ds, "test": ds}), [])
    fs = load_fewshot(spec)
    assert tuple(len(fs.class_names(s)) for s in ("train", "val", "test")) == sizes
    assert fs.split("train").column_names == ["image", "label"]
    report = verify(fs)
    checks = {n: ok for n, ok, _ in report.checks}
    assert checks["class counts"] and checks["test classes"] and checks["class-disjoint"]
    if spec == "fc100":
        test_super = {c for c, fs_ in CIFAR100_SUPERCLASSES.items() if set(fs_) <= set(fs.class_names("test"))}
        assert test_super == {"aquatic_mammals", "insects", "medium_mammals", "people"}


def test_gate_mini_imagenet_int_labels(monkeypatch):
    dd = {}
    for s, n in (("train", 64), ("validation", 16), ("test", 20)):
        cells = [{"bytes": png_bytes(a), "path": None} for a in solid_images(n * 2, 8)]
        dd[s] = datasets.Dataset.from_dict({"image": cells, "label": np.repeat(np.arange(n), 2).tolist()},
                                           features=datasets.Features({"image": datasets.Image(),
                                                                       "label": datasets.Value("int64")}))
    _standin(monkeypatch, datasets.DatasetDict(dd), [])
    fs = load_fewshot("mini-imagenet")
    assert fs.spec == "GATE-engine/mini_imagenet"
    assert [len(fs.class_names(s)) for s in ("train", "val", "test")] == [64, 16, 20]
    checks = {n: ok for n, ok, _ in verify(fs).checks}
    assert checks["class counts"] and not checks["images per class"]


# ---------------------------------------------------------------------------------------------------- bad input


def test_unknown_spec():
    with pytest.raises(DatasetError, match="neither 'synthetic', an existing local path, nor a Hub id"):
        load_fewshot("no_such_dataset")


def test_hub_id_offline_is_one_dataset_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # both clients read the flag at import time
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError, match="could not load Hub dataset 'someone/nothing-here'"):
        load_fewshot("someone/nothing-here")


def test_missing_image_or_label_column(tmp_path):
    ds = datasets.Dataset.from_dict({"pixels": [[1, 2]], "label": [0]})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "a"))
    with pytest.raises(DatasetError, match=r"expected an image column .* found columns \['pixels', 'label'\]"):
        load_fewshot(str(tmp_path / "a"))
    dd = _dd({"train": ["a"]})
    dd["train"].rename_column("label", "kind").save_to_disk(str(tmp_path / "b"))
    with pytest.raises(DatasetError, match=r"expected an label column"):
        load_fewshot(str(tmp_path / "b"))


def test_corrupt_image_names_its_row(tmp_path):
    dd = _dd({"train": ["a", "b"]})
    cells = [{"bytes": png_bytes(a), "path": None} for a in solid_images(6, 8)]
    cells[4] = {"bytes": b"not an image", "path": None}
    ds = datasets.Dataset.from_dict({"image": cells, "label": [0, 0, 0, 1, 1, 1]}, features=dd["train"].features)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "c"))
    fs = load_fewshot(str(tmp_path / "c"))
    with pytest.raises(DatasetError, match=r"row 4: cannot decode image"):
        load_images(fs.split("train"), [1, 4])


def test_existing_output_directory_is_refused_unless_overwrite(tmp_path):
    _dd(SMALL).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="did not write"):
        prepare(str(tmp_path / "ds"), tmp_path / "out")
    with pytest.raises(DatasetError, match="--overwrite only replaces folders this tool made"):
        prepare(str(tmp_path / "ds"), tmp_path / "out", overwrite=True)  # never an arbitrary folder (issue 17)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    prepare(str(tmp_path / "ds"), tmp_path / "prepared")
    with pytest.raises(DatasetError, match="exists; pass --overwrite"):
        prepare(str(tmp_path / "ds"), tmp_path / "prepared")
    prepare(str(tmp_path / "ds"), tmp_path / "prepared", overwrite=True)  # a dataset this tool prepared
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [".metantk-zoo.json", "fewshot.json",
                                                                         "test.parquet", "train.parquet",
                                                                         "val.parquet"]


@pytest.mark.slow  # about 20 s: a subprocess with fresh clients, push then load
def test_hub_id_loads_from_a_local_hub_server(local_hub, tmp_path):
    """Push a small few-shot dataset to a Hub-compatible server, then load it back by repo id (real clients)."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.hub_server import client_env

    script = """
import json, sys
import datasets
sys.path.insert(0, sys.argv[1])
from tests.test_data_sources import SMALL, _dd
from metantk_zoo.data import load_fewshot, load_images
dd = _dd(SMALL)
names = [n for s in ("train", "val", "test") for n in SMALL[s]]  # the Hub needs one ClassLabel for all splits
offset = {"train": 0, "val": 5, "test": 7}
dd = datasets.DatasetDict({
    s: d.cast_column("label", datasets.Value("int64"))
        .map(lambda r, o=offset[s]: {"label": r["label"] + o})
        .cast_column("label", datasets.ClassLabel(names=names))
    for s, d in dd.items()})
dd.push_to_hub("org/tiny-fewshot")
fs = load_fewshot("org/tiny-fewshot")
print(json.dumps({s: fs.class_names(s) for s in ("train", "val", "test")}))
print(tuple(load_images(fs.split("val"), [0, 5]).shape))
"""
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", script, root], capture_output=True, text=True, timeout=120,
                         env=client_env(local_hub, str(tmp_path / "hf")), cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == SMALL
    assert lines[-1] == "(2, 3, 8, 8)"
