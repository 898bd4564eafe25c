"""Embedded benchmark, episode sampler, manifests, batched loading and transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metantk_zoo.data import (
    EpisodeSampler,
    augment_support,
    eval_transform,
    load_fewshot,
    load_images,
    read_manifest,
    train_transform,
    with_torch_transform,
    write_manifest,
)
from metantk_zoo.data.constants import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD
from metantk_zoo.data.synthetic import SyntheticConfig, render_class
from metantk_zoo.errors import DatasetError
from tests._data_helpers import SMALL_SYNTHETIC


@pytest.fixture(scope="module")
def small():
    return load_fewshot(SMALL_SYNTHETIC)


# ---------------------------------------------------------------------------------------------------- synthetic


def test_synthetic_splits_like_mini_imagenet(small):
    assert [len(small.class_names(s)) for s in ("train", "val", "test")] == [64, 16, 20]
    assert len(set(small.class_names("train")) | set(small.class_names("val")) | set(small.class_names("test"))) == 100
    for s in ("train", "val", "test"):
        labels = small.labels(s)
        assert np.array_equal(np.bincount(labels), np.full(len(small.class_names(s)), 12))
    row = small.split("test")[0]
    assert row["image"].size == (32, 32) and row["image"].mode == "RGB"
    assert small.spec == "synthetic:classes=100,per_class=12,seed=0,size=32"


def test_synthetic_images_are_a_pure_function_of_seed_class_index():
    full = render_class(7, 3, np.arange(8), 84)
    assert full.shape == (8, 84, 84, 3) and full.dtype == np.uint8
    assert np.array_equal(render_class(7, 3, [5, 2], 84), full[[5, 2]])  # same bytes in any batch
    assert not np.array_equal(render_class(8, 3, [5], 84)[0], full[5])  # seed matters
    assert not np.array_equal(render_class(7, 4, [5], 84)[0], full[5])  # class matters
    assert full.std() > 20  # not a flat image


def test_synthetic_cache_is_byte_identical_to_a_fresh_generation(small, tmp_path, monkeypatch):
    monkeypatch.setenv("METANTK_CACHE", str(tmp_path))
    again = load_fewshot(SMALL_SYNTHETIC, classes=100)
    assert again.fingerprint == small.fingerprint
    a = small.split("val").cast_column("image", small.split("val").features["image"].__class__(decode=False))
    b = again.split("val").cast_column("image", again.split("val").features["image"].__class__(decode=False))
    assert [r["bytes"] for r in a[:5]["image"]] == [r["bytes"] for r in b[:5]["image"]]
    assert (tmp_path / "synthetic" / SyntheticConfig(size=32, per_class=12).key / "dataset_dict.json").is_file()


def test_synthetic_classes_are_not_a_flat_colour_cue():
    """Mean colours vary more within a class than between class means: colour alone does not identify a class."""
    means = np.stack([render_class(0, c, np.arange(20), 32).reshape(20, -1, 3).mean(1) for c in range(10)])
    within = means.std(axis=1).mean()
    between = means.mean(axis=1).std(axis=0).mean()
    assert within > between


def test_synthetic_bad_options():
    with pytest.raises(DatasetError, match="size must be"):
        load_fewshot("synthetic:size=2")
    with pytest.raises(DatasetError, match="unknown option"):
        load_fewshot("synthetic:colour=red")
    with pytest.raises(DatasetError, match="expected an integer"):
        load_fewshot("synthetic:seed=x")


# ---------------------------------------------------------------------------------------------------- episodes


def test_sampler_draws_distinct_classes_with_the_right_counts(small):
    labels = small.labels("test")
    sampler = EpisodeSampler(labels, n_way=5, n_shot=2, n_query=3, seed=0, n_episodes=20)
    for ep in sampler:
        assert len(set(ep.classes.tolist())) == 5
        assert ep.support.shape == (10,) and ep.query.shape == (15,)
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        assert np.array_equal(labels[ep.support], ep.classes[ep.y_support])
        assert np.array_equal(labels[ep.query], ep.classes[ep.y_query])
        assert np.array_equal(ep.y_support, np.repeat(np.arange(5), 2))


def test_sampler_is_reproducible_by_episode_number(small):
    labels = small.labels("train")
    a = EpisodeSampler(labels, 5, 1, 1, seed=3)
    b = EpisodeSampler(labels, 5, 1, 1, seed=3)
    assert all(np.array_equal(a.episode(i).support, b.episode(i).support) for i in (0, 17, 999))
    assert np.array_equal(a.episode(17).query, list(a)[17].query)
    other = EpisodeSampler(labels, 5, 1, 1, seed=4)
    assert not all(np.array_equal(a.episode(i).support, other.episode(i).support) for i in range(5))


def test_meta_batches_group_consecutive_episodes(small):
    sampler = EpisodeSampler(small.labels("train"), 5, 1, 1, seed=0, n_episodes=10)
    batches = list(sampler.meta_batches(3))
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)
    assert [e.index for e in batches[1]] == [3, 4, 5]
    assert np.array_equal(batches[2][0].support, sampler.episode(6).support)


def test_sampler_rejects_too_few_classes_and_names_a_small_class():
    labels = np.repeat(np.arange(4), 5)
    with pytest.raises(DatasetError, match="5-way episodes need at least 5 classes; the split has 4"):
        EpisodeSampler(labels, 5, 1, 1, seed=0)
    labels = np.concatenate([np.repeat(np.arange(5), 6), [5, 5]])
    with pytest.raises(DatasetError, match=r"class 'zebra' \(label 5\) has 2 images; 1-shot 2-query"):
        EpisodeSampler(labels, 5, 1, 2, seed=0, class_names=["a", "b", "c", "d", "e", "zebra"])


def test_manifest_round_trips_and_its_hash_tracks_every_index(small, tmp_path):
    sampler = EpisodeSampler(small.labels("test"), 5, 1, 2, seed=0, n_episodes=6)
    manifest = sampler.manifest(dataset=small.fingerprint, split="test")
    digest = write_manifest(tmp_path / "m.json", manifest)
    back = read_manifest(tmp_path / "m.json")
    assert back.sha256 == digest == manifest.sha256
    assert [e.support.tolist() for e in back] == [e.support.tolist() for e in manifest]
    assert back.meta == {"seed": 0, "dataset": small.fingerprint, "split": "test"}
    back.episodes[2].query[1] += 1  # change one index
    assert back.sha256 != digest
    data = json.loads((tmp_path / "m.json").read_text())
    data["episodes"][0]["support"][0] += 1
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="was modified"):
        read_manifest(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------------- images


def test_load_images_is_one_uint8_batch_equal_to_per_image_decoding(small):
    ds = small.split("test")
    idx = [5, 0, 239, 5]
    x = load_images(ds, idx)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    ref = torch.stack([torch.from_numpy(np.array(ds[i]["image"])).permute(2, 0, 1) for i in idx])
    assert torch.equal(x, ref)
    with pytest.raises(DatasetError, match="out of range"):
        load_images(ds, [240])


def test_with_torch_transform_decodes_batches(small):
    ds = with_torch_transform(small.split("val"), eval_transform(32))
    batch = ds[[0, 1, 2]]
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == small.labels("val")[:3].tolist()


# ---------------------------------------------------------------------------------------------------- transforms


def test_statistics_match_the_models_pretrained_cfg():
    import timm

    from metantk_zoo.data import constants, transforms
    from metantk_zoo.nas import inputs as search_inputs

    # one definition of each statistic (data/constants.py), read by the transforms, the search and the models
    assert transforms.CIFAR_MEAN is constants.CIFAR_MEAN and search_inputs.CIFAR_MEAN is constants.CIFAR_MEAN
    assert transforms.MINI_IMAGENET_MEAN == MINI_IMAGENET_MEAN and transforms.MINI_IMAGENET_STD == MINI_IMAGENET_STD
    cfg = timm.create_model("metantk_nano").pretrained_cfg
    assert tuple(cfg["mean"]) == MINI_IMAGENET_MEAN and tuple(cfg["std"]) == MINI_IMAGENET_STD
    assert MINI_IMAGENET_MEAN[0] == 120.39586422 / 255  # RFS statistics (method-facts §7)


def test_eval_transform_normalises_with_mini_statistics():
    x = torch.full((2, 3, 84, 84), 255, dtype=torch.uint8)
    y = eval_transform(84)(x)
    expected = (1 - torch.tensor(MINI_IMAGENET_MEAN)) / torch.tensor(MINI_IMAGENET_STD)
    assert torch.allclose(y[0, :, 10, 10], expected)
    assert eval_transform(84)(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 3, 84, 84)


def test_train_transform_crop_is_a_window_of_the_zero_padded_image():
    x = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    t = train_transform(20, jitter=(0, 0, 0), flip=False, mean=(0, 0, 0), std=(1, 1, 1), seed=1)
    y = t(x)
    padded = torch.nn.functional.pad(x.float() / 255, (8, 8, 8, 8))
    for i in range(6):
        windows = [padded[i, :, a:a + 20, b:b + 20] for a in range(17) for b in range(17)]
        assert any(torch.equal(y[i], w) for w in windows)


def test_train_transform_is_seeded_and_varies_per_image():
    x = torch.randint(0, 256, (1, 3, 84, 84), dtype=torch.uint8).repeat(8, 1, 1, 1)
    a, b = train_transform(84, seed=5)(x), train_transform(84, seed=5)(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, train_transform(84, seed=6)(x))
    assert len({round(float(img.sum()), 3) for img in a}) == 8  # each copy augmented differently


def test_augment_support_repeats_each_image_and_label():
    x = torch.randint(0, 256, (10, 3, 84, 84), dtype=torch.uint8)
    y = torch.arange(5).repeat_interleave(2)
    xa, ya = augment_support(x, y, n_aug=5, seed=0)
    assert xa.shape == (50, 3, 84, 84) and xa.dtype == torch.float32
    assert ya.tolist() == y.repeat_interleave(5).tolist()


@pytest.mark.slow  # generates the full default benchmark (6,000 images at 84x84): tens of seconds on 2 cores
def test_default_synthetic_benchmark_generates_and_verifies(tmp_path, monkeypatch):
    import time

    from metantk_zoo.data.convert import verify

    monkeypatch.setenv("METANTK_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    fs = load_fewshot("synthetic")
    print(f"generated the default synthetic benchmark in {time.perf_counter() - t0:.1f} s")
    report = verify(fs)
    assert report.ok, report.checks
    assert [len(fs.split(s)) for s in ("train", "val", "test")] == [3840, 960, 1200]
    row = load_images(fs.split("val"), [61])[0].permute(1, 2, 0).numpy()  # class 65, image 1
    assert np.array_equal(row, render_class(0, 65, [1], 84)[0])
