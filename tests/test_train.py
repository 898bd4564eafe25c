"""RFS training: presets, the loop's run directory, kill-and-resume equality, and checkpoint failure modes."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from metantk_zoo.errors import CheckpointError, ConfigError
from metantk_zoo.train import (
    TRAINING_METHODS,
    Checkpointer,
    drop_path_at_epoch,
    epoch_batches,
    lr_at_epoch,
    preset_config,
    train_rfs,
)
from metantk_zoo.utils.io import read_weights_metadata
from tests._train_helpers import tiny_cfg, tiny_data, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

HELPER = Path(__file__).with_name("_train_helpers.py")


def test_presets_follow_the_reference_recipe():
    mini5, mini8 = preset_config("rfs-mini", num_cells=5), preset_config("rfs-mini", num_cells=8)
    tiered8 = preset_config("rfs-tiered", num_cells=8)
    got = (mini5.epochs, mini5.lr, mini5.lr_decay_epochs, mini5.batch_size, mini5.drop_path)
    assert got == (100, 0.02, (60, 80), 64, 0.2)
    assert mini8.batch_size == 40 and tiered8.batch_size == 56 and tiered8.lr_decay_epochs == (30, 40, 50)
    assert (mini5.momentum, mini5.weight_decay) == (0.9, 5e-4)
    assert (mini5.amp, mini8.amp, tiered8.amp) == (False, False, False)  # fp32, as the reference trained
    assert preset_config("rfs-mini", amp=True).amp  # bf16 autocast on CUDA stays an option
    lrs = [lr_at_epoch(mini5, e) for e in (1, 60, 61, 80, 81, 100)]
    assert lrs == pytest.approx([0.02, 0.02, 2e-3, 2e-3, 2e-4, 2e-4])
    assert [lr_at_epoch(tiered8, e) for e in (30, 31, 41, 51)] == pytest.approx([0.01, 1e-3, 1e-4, 1e-5])
    assert drop_path_at_epoch(mini5, 1) == pytest.approx(0.002) and drop_path_at_epoch(mini5, 100) == pytest.approx(0.2)
    assert preset_config("rfs-mini", epochs=3, lr=0.1).epochs == 3
    with pytest.raises(ConfigError, match="unknown training option"):
        preset_config("rfs-mini", learning_rate=0.1)
    with pytest.raises(ConfigError, match="known presets"):
        preset_config("rfs-huge")
    assert "rfs" in TRAINING_METHODS


def test_epoch_batches_are_a_seeded_permutation_with_drop_last():
    b = epoch_batches(50, 8, seed=3, epoch=2)
    assert b.shape == (6, 8) and len(set(b.flatten().tolist())) == 48
    assert torch.equal(b, epoch_batches(50, 8, seed=3, epoch=2))
    assert not torch.equal(b, epoch_batches(50, 8, seed=3, epoch=3))


def test_run_directory_holds_config_metrics_plot_weights(tmp_path):
    res = train_rfs(tiny_model(), tiny_data(), tiny_cfg(2), run_dir=tmp_path, device="cpu", architecture="metantk_nano")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows == res.history
    assert rows[0]["lr"] == 0.05 and rows[1]["lr"] == pytest.approx(0.005)
    assert rows[1]["drop_path"] == pytest.approx(0.2) and all(r["loss"] > 0 and 0 <= r["acc"] <= 1 for r in rows)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["method"] == "rfs" and cfg["config"]["batch_size"] == 8
    with Image.open(tmp_path / "metrics.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]
    assert read_weights_metadata(tmp_path / "model.safetensors")["architecture"] == "metantk_nano"
    with pytest.raises(ConfigError, match="already holds a training run"):
        train_rfs(tiny_model(), tiny_data(), tiny_cfg(2), run_dir=tmp_path, device="cpu")
    with pytest.raises(ConfigError, match="different config"):
        train_rfs(tiny_model(), tiny_data(), tiny_cfg(3), run_dir=tmp_path, device="cpu", resume=True)


def test_kill_and_resume_gives_the_same_final_weights(tmp_path):
    """A run hard-killed (SIGKILL) after epoch 2 and resumed ends bit-identical to an uninterrupted run."""
    killed = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "cut"), "3", "--kill-after", "2"], timeout=120)
    assert killed.returncode == -9
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert Checkpointer(tmp_path / "cut").load()[1]["epoch"] == 2
    kw = dict(device="cpu", architecture="metantk_nano")
    train_rfs(tiny_model(), tiny_data(), tiny_cfg(3), run_dir=tmp_path / "full", **kw)
    res = train_rfs(tiny_model(), tiny_data(), tiny_cfg(3), run_dir=tmp_path / "cut", resume=True, **kw)
    assert res.resumed_from == 2
    full, cut = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert full.keys() == cut.keys()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert (tmp_path / "full" / "metrics.jsonl").read_text().count("\n") == 3
    a = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert a == b


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_overwritten(tmp_path):
    train_rfs(tiny_model(), tiny_data(), tiny_cfg(1), run_dir=tmp_path, device="cpu", architecture="metantk_nano")
    (tmp_path / "model.safetensors").unlink()
    ckpt = Checkpointer(tmp_path).path
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="corrupt"):
        train_rfs(tiny_model(), tiny_data(), tiny_cfg(1), run_dir=tmp_path, device="cpu", resume=True)
    assert ckpt.read_bytes() == before and not (tmp_path / "model.safetensors").exists()


def test_checkpoint_of_another_architecture_names_both(tmp_path):
    train_rfs(tiny_model(), tiny_data(), tiny_cfg(2), run_dir=tmp_path, device="cpu", architecture="metantk_nano")
    with pytest.raises(CheckpointError, match=r"'metantk_nano'.*'mlp'"):
        Checkpointer(tmp_path).restore(model=tiny_model(mlp=True), optimizer=torch.optim.SGD(
            tiny_model(mlp=True).parameters(), lr=0.1), architecture="mlp")
    with pytest.raises(CheckpointError, match=r"metantk_nano.*do not fit"):  # no name recorded by the caller
        m = tiny_model(mlp=True)
        Checkpointer(tmp_path).restore(model=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import metantk_zoo.utils.io as io

    real_fsync, calls = io.os.fsync, {"n": 0}

    def on_epoch_end(epoch, metrics):
        if epoch == 1:
            def full_disk(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(io.os, "fsync", full_disk)

    with pytest.raises(CheckpointError, match="(?i)no space left.*previous checkpoint"):
        train_rfs(tiny_model(), tiny_data(), tiny_cfg(2), run_dir=tmp_path, device="cpu",
                  architecture="metantk_nano", on_epoch_end=on_epoch_end)
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    _, meta = Checkpointer(tmp_path).load()
    assert meta["epoch"] == 1 and len(meta["history"]) == 1
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no half-written leftovers
    res = train_rfs(tiny_model(), tiny_data(), tiny_cfg(2), run_dir=tmp_path, device="cpu",
                    architecture="metantk_nano", resume=True)
    assert res.resumed_from == 1 and [r["epoch"] for r in res.history] == [1, 2]
    del calls


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_train_help_and_bad_method():
    from typer.testing import CliRunner

    from metantk_zoo.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--help"])
    assert res.exit_code == 0 and "--method" in res.stdout and "--resume" in res.stdout
    res = runner.invoke(app, ["train", "--model", "metantk_nano", "--dataset", "synthetic", "--out", "x",
                              "--method", "reptile"])
    assert res.exit_code == 2 and "known: rfs" in res.output


def test_cli_model_resolution(tmp_path):
    from metantk_zoo.models.genotypes import NAMED
    from metantk_zoo.pipeline import resolve_model

    assert resolve_model("metantk_nano") == ("metantk_nano", {})
    g = NAMED["mini5_a"]
    (tmp_path / "genotype.json").write_text(g.to_json())
    for spec in (g.to_darts(), g.to_json(), str(tmp_path), str(tmp_path / "genotype.json")):
        arch, args = resolve_model(spec, num_cells=3, init_channels=8)
        assert arch == "metantk_cell" and args == {"genotype": g.to_dict(), "num_cells": 3, "init_channels": 8}
    with pytest.raises(ConfigError, match="not a timm model name"):
        resolve_model("resnet_does_not_exist")
    with pytest.raises(ConfigError, match="apply to metantk"):
        resolve_model("resnet18", num_cells=3)


def test_training_from_a_search_run_keeps_the_search_records(tmp_path):
    """``train --model SEARCH_RUN`` copies the search's genotype.json and search.json into the training run, so its
    card and Hub repository say where the architecture came from; other model sources copy nothing."""
    from metantk_zoo.models.genotypes import NAMED
    from metantk_zoo.pipeline import _carry_search_records

    search = tmp_path / "search"
    search.mkdir()
    g = NAMED["mini5_a"]
    record = {"genotype": g.to_dict(), "seed": 4, "wall_time": 13.25, "data_fingerprint": "ab" * 32, "preset": "tiny"}
    (search / "genotype.json").write_text(g.to_json())
    (search / "search.json").write_text(json.dumps(record))
    run = tmp_path / "train"
    run.mkdir()
    _carry_search_records(str(search), run)
    assert json.loads((run / "search.json").read_text()) == record
    assert json.loads((run / "genotype.json").read_text()) == g.to_dict()

    other = tmp_path / "train_other"
    other.mkdir()
    _carry_search_records("metantk_nano", other)
    _carry_search_records(str(search / "genotype.json"), other)  # a genotype file is not a search run
    assert list(other.iterdir()) == []


@pytest.mark.slow
def test_cli_train_resume_and_eval_end_to_end(tmp_path):
    """metantk-zoo train (nano, 32x32 synthetic) -> eval of the run directory -> eval.json; then a foreign
    checkpoint."""
    from typer.testing import CliRunner

    from metantk_zoo.cli import app, main

    runner = CliRunner()
    data = "synthetic:size=32,classes=30,per_class=20"
    args = ["train", "--model", "metantk_nano", "--dataset", data, "--epochs", "2", "--batch-size", "16",
            "--image-size", "32", "--out", str(tmp_path / "run"), "--set", "lr_decay_epochs=[1]"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["epochs"] == 2
    res = runner.invoke(app, [*args, "--resume"])  # already finished: a no-op
    assert res.exit_code == 0 and json.loads(res.stdout.strip().splitlines()[-1])["resumed_from"] == 2
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--dataset", data, "--protocol", "rfs", "--episodes",
                              "20", "--n-query", "5", "--image-size", "32", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_episodes"] == 20 and out["protocol"] == "rfs" and len(out["manifest_hash"]) == 64
    assert json.loads((tmp_path / "run" / "eval.json").read_text())[0]["mean"] == out["mean"]
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    spec["model_args"]["init_channels"] = 4
    (tmp_path / "run" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path / "run"), "--dataset", data, "--episodes", "5"])
    assert e.value.code == 1
