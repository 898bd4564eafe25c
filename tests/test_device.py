"""The one device rule (``metantk_zoo.utils.device``): the resolver, and every command and pipeline stage using it."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from metantk_zoo.errors import ConfigError, MetantkZooError
from metantk_zoo.utils.device import resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that reports two CUDA devices, the current one being 0 (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


# ------------------------------------------------------------------------------------------------- the resolver
@pytest.mark.parametrize("spec", ["auto", None, "AUTO", " auto "])
def test_auto_is_the_cpu_without_a_gpu(no_cuda, spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu", "CPU", torch.device("cpu"), "cpu:0"])
def test_cpu_is_always_there(no_cuda, spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec, expected", [("auto", "cuda:0"), (None, "cuda:0"), ("cuda", "cuda:0"),
                                            ("cuda:0", "cuda:0"), ("cuda:1", "cuda:1"),
                                            (torch.device("cuda", 1), "cuda:1"), ("cpu", "cpu")])
def test_auto_and_cuda_take_the_gpu_when_present(two_gpus, spec, expected):
    assert resolve_device(spec) == torch.device(expected)


def test_under_torchrun_cuda_and_auto_are_this_ranks_gpu(two_gpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins


@pytest.mark.parametrize("spec, words", [
    ("cuda", ["no CUDA GPU is available", "cpu"]),
    ("cuda:0", ["no CUDA GPU is available"]),
    ("cuda:3", ["no CUDA GPU is available"]),
    ("tpu", ["not a device", "auto, cpu, cuda or cuda:N"]),
    ("mps", ["mps devices are not supported"]),
    ("cpu:1", ["auto, cpu, cuda or cuda:N"]),
])
def test_a_device_that_is_not_there_is_one_line(no_cuda, spec, words):
    with pytest.raises(ConfigError) as e:
        resolve_device(spec)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"--device {spec}:")
    assert all(w in message for w in words), message
    assert isinstance(e.value, ValueError)  # ConfigError is a ValueError, as the error tree promises


def test_a_gpu_index_past_the_last_names_the_ones_there(two_gpus):
    with pytest.raises(ConfigError, match=r"no CUDA device 2 \(2 GPUs present\); this machine has cpu, cuda, "
                                          r"cuda:0, cuda:1"):
        resolve_device("cuda:2")


# ------------------------------------------------------------------------------------------ commands and stages
def _main(argv, capsys):
    from metantk_zoo.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


@pytest.mark.parametrize("command", [
    ["search", "--preset", "tiny", "--dataset", "synthetic:size=32"],
    ["train", "--model", "metantk_nano", "--dataset", "synthetic:size=32"],
    ["demo"],
])
def test_every_command_refuses_a_missing_device_before_writing(no_cuda, tmp_path, capsys, command):
    out = tmp_path / "run"
    code, captured = _main([*command, "--out", str(out), "--device", "cuda:1"], capsys)
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "--device cuda:1: no CUDA GPU is available" in lines[0], captured.err
    assert not out.exists()  # nothing was written


def test_eval_refuses_a_missing_device_before_loading(no_cuda, tmp_path, capsys, monkeypatch):
    import metantk_zoo.pipeline as pipeline

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded before the device was checked")

    monkeypatch.setattr(pipeline, "load_backbone", must_not_load)
    code, captured = _main(["eval", "metantk_nano", "--dataset", "synthetic:size=32", "--device", "cuda",
                            "--out", str(tmp_path / "eval.json")], capsys)
    assert code == 1 and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("name", ["search", "train", "eval", "demo"])
def test_every_command_documents_the_device_rule(name):
    import typer.main

    from metantk_zoo.cli import app

    command = typer.main.get_command(app).commands[name]
    (opt,) = [p for p in command.params if p.name == "device"]
    assert opt.opts == ["--device"] and opt.default == "auto"
    assert "auto, cpu, cuda or cuda:N" in opt.help and "default auto" in opt.help
    assert CliRunner().invoke(app, [name, "--help"]).exit_code == 0


@pytest.mark.parametrize("stage, call", [
    ("run_search", lambda p, out: p.run_search("tiny", "synthetic:size=32", out, device="cuda:1")),
    ("run_train", lambda p, out: p.run_train("metantk_nano", "synthetic:size=32", out, device="cuda:1")),
    ("run_demo", lambda p, out: p.run_demo(out, device="cuda:1")),
    ("run_eval", lambda p, out: p.run_eval(torch.nn.Identity(), "synthetic:size=32", device="cuda:1")),
    ("run_adapted_eval", lambda p, out: p.run_adapted_eval(torch.nn.Identity(), "x", "synthetic:size=32",
                                                           device="cuda:1")),
])
def test_pipeline_stages_resolve_before_any_work(two_gpus, tmp_path, monkeypatch, stage, call):
    """On a (mocked) two-GPU machine ``cuda:1`` is accepted: the stage gets past the rule and fails on the first
    thing it touches, which is stubbed to prove the device was resolved (to ``cuda:1``) first."""
    import metantk_zoo.pipeline as pipeline

    seen = []

    class Reached(Exception):
        pass

    def spy(spec):
        dev = resolve_device(spec)
        seen.append(dev)
        raise Reached

    monkeypatch.setattr(pipeline, "resolve_device", spy)
    out = tmp_path / "run"
    with pytest.raises(Reached):
        call(pipeline, out)
    assert seen == [torch.device("cuda", 1)] and not out.exists()


def test_pipeline_stages_default_to_auto():
    import inspect

    import metantk_zoo.pipeline as pipeline

    for name in ("run_search", "run_train", "run_eval", "run_adapted_eval", "run_demo"):
        assert inspect.signature(getattr(pipeline, name)).parameters["device"].default == "auto", name


def test_cli_passes_the_device_through(no_cuda, tmp_path, monkeypatch):
    """``--device`` reaches the pipeline unchanged, and its default is ``auto``."""
    import metantk_zoo.pipeline as pipeline
    from metantk_zoo.cli import app

    got = {}

    class Stop(MetantkZooError):
        pass

    def fake(name):
        def f(*a, device=None, **k):
            got[name] = device
            raise Stop("stopped")
        return f

    import metantk_zoo.cli.demo as demo_cli

    for name in ("run_search", "run_train", "run_demo"):
        monkeypatch.setattr(pipeline, name, fake(name))
    monkeypatch.setattr(demo_cli, "run_demo", fake("run_demo"))  # imported at module level there
    runner = CliRunner()
    runner.invoke(app, ["search", "--preset", "tiny", "--dataset", "synthetic", "--out", str(tmp_path / "s")])
    runner.invoke(app, ["train", "--model", "metantk_nano", "--dataset", "synthetic", "--out", str(tmp_path / "t"),
                        "--device", "cpu"])
    runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert got == {"run_search": "auto", "run_train": "cpu", "run_demo": "auto"}
