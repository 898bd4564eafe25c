"""Same seed, same result: training the same command twice on the CPU gives bitwise the same weights and metrics.

Every random draw of a training run (initialisation, data order, augmentation in the main process and in every
DataLoader worker, drop-path, episode sampling) must come from the run's seed, so that nothing depends on what the
process did before. Each test first disturbs torch's global RNG differently before each run, as a different
earlier command or import order would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metantk_zoo.pipeline import run_train

DATA = "synthetic:size=16,per_class=8,classes=20"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _history(result) -> list:
    timing = ("sec", "per_s", "time")
    return [{k: v for k, v in row.items() if not any(t in k for t in timing)} for row in result.history]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _train_twice(tmp_path: Path, method: str, overrides: dict, **kw):
    runs = []
    for i, disturb in enumerate((1, 2)):
        torch.manual_seed(1000 + disturb)  # what ran before must not matter
        torch.rand(disturb)
        out = tmp_path / f"run{i}"
        res = run_train("metantk_nano", DATA, out, method=method, overrides=overrides, init_channels=4,
                        image_size=16, device="cpu", **kw)
        runs.append((out, res))
    return runs


def test_rfs_same_seed_gives_bitwise_identical_weights(tmp_path):
    # 2 loader workers (augmentation in the workers) and drop-path 0.2 (ramped to 0.2 at epoch 1 of 1)
    overrides = {"epochs": 1, "batch_size": 16, "num_workers": 2, "drop_path": 0.2, "seed": 7}
    (a, ra), (b, rb) = _train_twice(tmp_path, "rfs", overrides)
    differ = _same(_weights(a), _weights(b))
    assert not differ, f"{len(differ)} of {len(_weights(a))} tensors differ, e.g. {differ[:3]}"
    assert _history(ra) == _history(rb)


@pytest.mark.parametrize("method", ["fomaml"])
def test_meta_method_same_seed_gives_bitwise_identical_weights(tmp_path, method):
    overrides = {"meta_steps": 2, "steps_per_epoch": 1, "meta_batch": 2, "n_shot": 1, "n_query": 2,
                 "inner_steps": 1, "seed": 3}
    (a, ra), (b, rb) = _train_twice(tmp_path, method, overrides, preset="demo")
    differ = _same(_weights(a), _weights(b))
    assert not differ, f"{len(differ)} of {len(_weights(a))} tensors differ, e.g. {differ[:3]}"
    assert _history(ra) == _history(rb)


@pytest.mark.slow
def test_a_different_seed_gives_different_weights(tmp_path):
    outs = []
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        run_train("metantk_nano", DATA, out, method="rfs", overrides={"epochs": 1, "batch_size": 16, "seed": seed},
                  init_channels=4, image_size=16, device="cpu")
        outs.append(_weights(out))
    assert _same(*outs)  # the seed is used at all
