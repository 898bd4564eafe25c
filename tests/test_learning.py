"""Training works end to end: a short CPU RFS run of ``metantk_cell5`` (reduced width) on the embedded benchmark
beats chance and the same network's untrained features, on identical test episodes.

Slow (about 4 minutes on 2 cores): the embedded benchmark is built so that no trivial cue separates its classes, and
a narrower or shorter run than the demo's recipe (C=16, 3 cells, 32x32, 10 epochs) stays at chance. Run it with
``pytest -m slow tests/test_learning.py -s``; it prints the two accuracies. ``metantk-zoo demo`` prints the same
comparison for the searched genotype.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch

import metantk_zoo  # noqa: F401
from metantk_zoo.cli import main
from metantk_zoo.pipeline import run_eval
from metantk_zoo.utils.rundir import create_model_from_run

DATASET = "synthetic:size=32"
ARGS = {"num_cells": 3, "init_channels": 16}


def _cli(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as e:
        assert not e.code, f"{argv[0]} failed with exit code {e.code}"


@pytest.mark.slow
def test_short_rfs_training_beats_untrained_features_on_identical_episodes(tmp_path, capsys):
    run = tmp_path / "cell5"
    _cli(["train", "--model", "metantk_cell5", "--dataset", DATASET, "--out", str(run), "--epochs", "10",
          "--num-cells", "3", "--init-channels", "16", "--image-size", "32", "--seed", "0",
          "--set", "lr_decay_epochs=[7,9]"])
    trained = create_model_from_run(run)
    torch.manual_seed(0)
    untrained = timm.create_model("metantk_cell5", num_classes=trained.num_classes, **ARGS)
    assert trained.genotype == untrained.genotype

    kw = dict(protocol="rfs", image_size=32, n_way=5, n_shot=5, n_query=15, n_episodes=300, seed=0)
    after, before = run_eval(trained, DATASET, **kw), run_eval(untrained, DATASET, **kw)
    assert after.manifest_hash == before.manifest_hash  # identical episodes
    print(json.dumps({"trained": [after.mean, after.ci95], "untrained": [before.mean, before.ci95]}))
    assert after.mean - after.ci95 > 0.2 + 0.05, f"trained {after.mean:.3f} ± {after.ci95:.3f}: not above chance"
    assert after.mean - after.ci95 > before.mean + before.ci95, (
        f"trained {after.mean:.3f} ± {after.ci95:.3f} is not above untrained {before.mean:.3f} ± {before.ci95:.3f}")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # and the training loss went down
