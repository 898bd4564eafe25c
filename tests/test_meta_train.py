"""Episodic meta-training on the shared trainer: run directory, resume replays the same run, bad inputs."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from metantk_zoo.errors import CheckpointError, ConfigError
from metantk_zoo.meta import MetaConfig, NormalizedSGD, train_meta
from metantk_zoo.train import TRAINING_METHODS

pytestmark = pytest.mark.usefixtures("one_thread")


def _episodes(i: int, n_way: int = 3, n_shot: int = 1, n_query: int = 2, size: int = 16):
    g = torch.Generator().manual_seed(1000 + i)
    protos = torch.randn(n_way, 3, size, size, generator=g)
    def draw(k):
        y = torch.arange(n_way).repeat_interleave(k)
        return protos[y] + 0.3 * torch.randn(len(y), 3, size, size, generator=g), y
    return (*draw(n_shot), *draw(n_query))


def _model(seed=0):
    torch.manual_seed(seed)
    return timm.create_model("metantk_conv4", width=4, num_classes=3, img_size=16)


def _cfg(method="fobmaml", **kw):
    base = dict(n_way=3, n_shot=1, n_query=2, inner_steps=1, inner_lr=0.1, meta_batch=2, meta_steps=4,
                steps_per_epoch=2, val_episodes=2)
    return MetaConfig(method=method, **{**base, **kw})


def test_methods_are_registered():
    for m in ("maml", "fomaml", "hfmaml", "anil", "fobmaml"):
        assert TRAINING_METHODS[m].data_kind == "episodes" and TRAINING_METHODS[m].config_cls is MetaConfig
    cfg = TRAINING_METHODS["maml"].make_config("mini-5shot", None, {"epochs": 3, "lr": 0.01, "batch_size": 8})
    assert (cfg.meta_steps, cfg.outer_lr, cfg.meta_batch, cfg.n_shot) == (1500, 0.01, 8, 5)
    with pytest.raises(ConfigError, match="unknown setting"):
        TRAINING_METHODS["anil"].make_config("mini-1shot", None, {"drop_path": 0.1})


def test_run_directory_and_resume_replays_the_run(tmp_path):
    full = train_meta(_model(), _episodes, _cfg(), run_dir=tmp_path / "full", architecture="metantk_conv4",
                      val_data=_episodes)
    assert [h["epoch"] for h in full.history] == [1, 2] and all("val_acc" in h for h in full.history)
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "checkpoints/last.safetensors"):
        assert (tmp_path / "full" / name).is_file(), name
    assert json.loads((tmp_path / "full" / "config.json").read_text())["method"] == "fobmaml"

    class Stop(Exception):
        pass

    def stop(epoch, metrics):
        raise Stop

    with pytest.raises(Stop):
        train_meta(_model(), _episodes, _cfg(), run_dir=tmp_path / "cut", architecture="metantk_conv4",
                   val_data=_episodes, on_epoch_end=stop)
    resumed_model = _model(seed=7)  # other weights: resume must restore them
    resumed = train_meta(resumed_model, _episodes, _cfg(), run_dir=tmp_path / "cut", architecture="metantk_conv4",
                         resume=True, val_data=_episodes)
    assert resumed.resumed_from == 1
    strip = lambda hs: [{k: v for k, v in h.items() if k != "sec_per_step"} for h in hs]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    ref = _model()
    from metantk_zoo.utils.io import load_weights

    ref.load_state_dict(load_weights(tmp_path / "full" / "model.safetensors"))
    for (n, a), b in zip(resumed_model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="3-way head"):
        train_meta(timm.create_model("metantk_conv4", width=4, num_classes=5), _episodes, _cfg(),
                   run_dir=tmp_path / "a")
    train_meta(_model(), _episodes, _cfg(meta_steps=2), run_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="already holds a training run"):
        train_meta(_model(), _episodes, _cfg(meta_steps=2), run_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="different config"):
        train_meta(_model(), _episodes, _cfg(meta_steps=2, inner_lr=0.2), run_dir=tmp_path / "b", resume=True)
    (tmp_path / "b" / "checkpoints" / "last.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train_meta(_model(), _episodes, _cfg(meta_steps=2), run_dir=tmp_path / "b", resume=True)
    with pytest.raises(ConfigError, match="diverged"):
        train_meta(_model(), _episodes, _cfg("maml", meta_steps=2, inner_lr=1e30), run_dir=tmp_path / "c")


def test_normalized_sgd_state_survives_a_checkpoint(tmp_path):
    model = _model()
    train_meta(model, _episodes, _cfg(meta_steps=2), run_dir=tmp_path / "r")
    from metantk_zoo.train import Checkpointer

    tensors, meta = Checkpointer(tmp_path / "r").load()
    assert any(k.endswith("momentum_buffer") for k in tensors)
    opt = NormalizedSGD(_model().parameters())
    assert opt.defaults["clip"] == 1.0
