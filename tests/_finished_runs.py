"""Finished nano runs shared by the bad-input, crash-safety and JSON tests (built once per session, never modified:
tests that need to change a run work on a copy), and the helpers those tests share.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

#: a 10-class synthetic benchmark at 16x16, 6 images per class: 6 train classes (36 images), 2 val, 2 test
TINY_DATA = "synthetic:size=16,per_class=6,classes=10"
#: a nano search: 2 candidate ops, C=4, 3 cells, 8x8 inputs, one repeat of 2 tasks x 2 ways
NANO_SEARCH = dict(channels=4, num_cells=3, resolution=8, repeats=1, n_tasks=2, n_way=2, region_patches=50,
                   region_batches=1, ops=("skip_connect", "max_pool_3x3BN"), episode_pool=50)
NANO_SEARCH_FLAGS = ["--preset", "tiny", "--dataset", TINY_DATA, "--channels", "4", "--num-cells", "3",
                     "--resolution", "8", "--repeats", "1", "--n-tasks", "2", "--n-way", "2", "--region-patches", "50",
                     "--region-batches", "1", "--ops", "skip_connect,max_pool_3x3BN", "--episode-pool", "50",
                     "--device", "cpu"]
#: a nano RFS training: metantk_nano at C=4, 16x16, batch 12
NANO_TRAIN_FLAGS = ["--model", "metantk_nano", "--dataset", TINY_DATA, "--init-channels", "4", "--image-size", "16",
                    "--set", "batch_size=12", "--device", "cpu"]
#: a nano FO-MAML meta-training: metantk_nano at C=4, 16x16, 2-way 1-shot 2-query episodes, one task per meta-batch,
#: 4 epochs of 2 meta-steps (a checkpoint per epoch)
META_TRAIN = dict(epochs=4, n_way=2, n_shot=1, n_query=2, meta_batch=1, steps_per_epoch=2)
META_TRAIN_FLAGS = ["--method", "fomaml", "--preset", "demo", "--model", "metantk_nano", "--dataset", TINY_DATA,
                    "--init-channels", "4", "--image-size", "16", "--epochs", "4",
                    *[x for k, v in META_TRAIN.items() if k != "epochs" for x in ("--set", f"{k}={v}")],
                    "--device", "cpu"]
#: the same with the random-cell baseline: a finished search run in a second (no scoring)
RANDOM_SEARCH_FLAGS = [*NANO_SEARCH_FLAGS, "--method", "random"]
#: the fields of a record that are clocks, not results
CLOCK_FIELDS = ("wall_time", "seconds", "images_per_s", "time", "sec_per_step")
#: one build per session, whichever test module asks first (the fixtures are imported into several modules)
_BUILT: dict[str, Path] = {}


def tree_hash(path: Path) -> str:
    """sha256 over the relative paths and bytes of every file under ``path`` (``""`` if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return ""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def strict_json(text: str):
    """``json.loads`` that rejects ``NaN``, ``Infinity`` and ``-Infinity`` (RFC 8259)."""
    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


@contextlib.contextmanager
def _one_thread():
    """Build the finished runs with one thread whichever test asks first: float reductions depend on the thread
    count, and the tests that redo a run in process (with the ``one_thread`` fixture) compare bitwise."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _built(key: str, tmp_path_factory, build) -> Path:
    """The finished run ``key``, built once per session by ``build(out)`` with one thread (see :func:`_one_thread`)."""
    if key not in _BUILT:
        out = tmp_path_factory.mktemp("finished") / key
        with _one_thread():
            build(out)
        _BUILT[key] = out
    return _BUILT[key]


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory) -> Path:
    """A finished search run directory of the random-cell baseline with the nano settings (do not modify; copy
    it): every record of a search run, in a second."""
    from metantk_zoo.pipeline import run_search

    return _built("search", tmp_path_factory, lambda out: run_search(
        "tiny", TINY_DATA, out, seed=0, device="cpu", overrides={**NANO_SEARCH, "method": "random"}))


@pytest.fixture(scope="session")
def scored_search(tmp_path_factory) -> Path:
    """A finished, scored nano MetaNTK-NAS search run directory (minutes on a loaded 2-core runner; slow tests)."""
    from metantk_zoo.pipeline import run_search

    return _built("scored", tmp_path_factory, lambda out: run_search(
        "tiny", TINY_DATA, out, seed=0, device="cpu", overrides=dict(NANO_SEARCH)))


@pytest.fixture(scope="session")
def finished_train(tmp_path_factory) -> Path:
    """A finished 2-epoch nano RFS training run directory (do not modify; copy it)."""
    from metantk_zoo.pipeline import run_train

    return _built("train", tmp_path_factory, lambda out: run_train(
        "metantk_nano", TINY_DATA, out, init_channels=4, image_size=16, device="cpu",
        overrides={"epochs": 2, "batch_size": 12}))


@pytest.fixture(scope="session")
def finished_meta(tmp_path_factory) -> Path:
    """A finished nano FO-MAML meta-training run directory (:data:`META_TRAIN`; do not modify; copy it)."""
    from metantk_zoo.pipeline import run_train

    return _built("meta", tmp_path_factory, lambda out: run_train(
        "metantk_nano", TINY_DATA, out, method="fomaml", preset="demo", init_channels=4, image_size=16,
        device="cpu", overrides=dict(META_TRAIN)))


def before_first_checkpoint(src: Path, dst: Path, keep: tuple[str, ...] = (".metantk-zoo.json", "config.json",
                                                                          "model.json")) -> Path:
    """``dst``: the run directory ``src`` as a kill before its first checkpoint leaves it (only ``keep``)."""
    dst.mkdir(parents=True)
    for name in keep:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    return dst
