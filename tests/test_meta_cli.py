"""``metantk-zoo train --method <meta>`` and ``eval --adapt`` end to end on a tiny synthetic benchmark."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from metantk_zoo.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "synthetic:size=16,classes=30,per_class=6"


@pytest.mark.slow
def test_train_fobmaml_resume_and_eval_adapt(tmp_path):
    runner = CliRunner()
    args = ["train", "--method", "fobmaml", "--preset", "demo", "--model", "metantk_conv4", "--dataset", DATA,
            "--image-size", "16", "--out", str(tmp_path / "run"), "--epochs", "1",
            "--set", "steps_per_epoch=2", "--set", "n_way=3", "--set", "n_shot=1", "--set", "n_query=2",
            "--set", "val_episodes=0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["epochs"] == 1
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["method"] == "fobmaml" and cfg["config"]["meta_steps"] == 2 and cfg["config"]["outer"] is None
    assert json.loads((tmp_path / "run" / "model.json").read_text())["num_classes"] == 3
    res = runner.invoke(app, [*args, "--resume"])  # finished: a no-op
    assert res.exit_code == 0 and json.loads(res.stdout.strip().splitlines()[-1])["resumed_from"] == 1
    common = ["--dataset", DATA, "--protocol", "rfs", "--episodes", "4", "--n-way", "3", "--n-query", "2",
              "--image-size", "16", "--json"]
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), *common, "--adapt"])
    assert res.exit_code == 0, res.output
    adapted = json.loads(res.stdout)
    assert adapted["protocol"] == "rfs+adapt:fobmaml(lr=0.1,steps=5)" and adapted["n_episodes"] == 4
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), *common])
    probe = json.loads(res.stdout)
    assert probe["manifest_hash"] == adapted["manifest_hash"]  # identical episodes


def test_bad_meta_options(tmp_path):
    runner = CliRunner()
    base = ["train", "--model", "metantk_conv4", "--dataset", DATA, "--out", str(tmp_path / "r")]
    res = runner.invoke(app, [*base, "--method", "maml", "--set", "drop_path=0.1"])
    assert res.exit_code != 0 and "unknown setting(s) drop_path" in str(res.exception)
    res = runner.invoke(app, [*base, "--method", "anil", "--preset", "rfs-mini"])
    assert res.exit_code == 2 and "presets" in res.output
    res = runner.invoke(app, [*base, "--method", "maml", "--set", "inner_steps=0"])
    assert res.exit_code != 0 and "inner_steps" in str(res.exception)
