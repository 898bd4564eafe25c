"""The one overwrite policy where it is not a refusal (those are in the bad-input catalogue): ``--overwrite`` of an
export, a demo and an ``eval --out`` results file; ``--resume`` of runs killed before their first checkpoint;
and the Hub and kernel code catching only the errors they mean to.
"""

from __future__ import annotations

import importlib
import json

import pytest

from metantk_zoo.cli import main
from tests._finished_runs import (  # noqa: F401  (session fixtures)
    META_TRAIN_FLAGS,
    NANO_TRAIN_FLAGS,
    RANDOM_SEARCH_FLAGS,
    TINY_DATA,
    before_first_checkpoint,
    copy_run,
    finished_meta,
    finished_search,
    finished_train,
    tree_hash,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ export
def test_export_overwrite_replaces_only_an_export_and_a_bad_run_keeps_it(finished_train, tmp_path,  # noqa: F811
                                                                         capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    push = ["push", "--repo", "org/nano", "--dry-run"]
    assert _run([*push[:1], str(finished_train), *push[1:], "--local-dir", str(ref)], capsys)[0] == 0
    assert _run([*push[:1], str(finished_train), *push[1:], "--local-dir", str(out)], capsys)[0] == 0
    assert tree_hash(out) == tree_hash(ref)
    (out / "stale.txt").write_text("left over from an older export\n")

    bad = copy_run(finished_train, tmp_path / "bad")  # weights of the wrong size: refused before out is touched
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    before = tree_hash(out)
    code, err = _run(["push", str(bad), *push[1:], "--local-dir", str(out), "--overwrite"], capsys)
    assert code == 1 and "model.safetensors" in err.strip().splitlines()[-1]
    assert tree_hash(out) == before

    assert _run([*push[:1], str(finished_train), *push[1:], "--local-dir", str(out), "--overwrite"], capsys)[0] == 0
    assert tree_hash(out) == tree_hash(ref)  # the stale file is gone: exactly a fresh export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out", "ref"]  # no staging folder left


# ------------------------------------------------------------------------------------------------ demo
def test_demo_overwrite_removes_only_a_demo_folder_this_tool_made(tmp_path, monkeypatch, capsys):
    from metantk_zoo import pipeline
    from metantk_zoo.utils.rundir import MARKER

    out = tmp_path / "demo"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "demo", "version": "0"}))
    (out / "demo.json").write_text(json.dumps({"settings": {"epochs": 99}, "done": {"search": {"result": 1}}}))
    (out / "old.txt").write_text("from the previous demo\n")
    searched = []

    def stop(*args, **kwargs):  # the new demo starts: stop it there
        searched.append(kwargs.get("resume"))
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_search", stop)
    code, _ = _run(["demo", "--out", str(out), "--overwrite", "--device", "cpu", "--epochs", "1"], capsys)
    assert code == 130 and searched == [False]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "demo.json"]  # the old folder's files are gone
    state = json.loads((out / "demo.json").read_text())
    assert state["done"] == {} and state["settings"]["epochs"] == 1
    assert json.loads((out / MARKER).read_text())["kind"] == "demo"


# ------------------------------------------------------------------------------------------------ eval --out
def test_eval_out_merges_into_its_results_file_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "results.json"
    base = ["eval", "metantk_nano", "--dataset", TINY_DATA, "--protocol", "rfs", "--episodes", "2", "--n-way", "2",
            "--n-query", "2", "--device", "cpu", "--json", "--out", str(out)]

    def run(*extra: str) -> dict:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*base, *extra])
        assert e.value.code == 0
        return json.loads(capsys.readouterr().out)

    one = run("--n-shot", "1")
    two = run("--n-shot", "2")
    rows = json.loads(out.read_text())
    assert [r["n_shot"] for r in rows] == [1, 2] and rows == [one, two]  # merged: one row per setting
    again = run("--n-shot", "1")
    assert [r["n_shot"] for r in json.loads(out.read_text())] == [2, 1]  # the same setting's row replaced
    assert again["manifest_hash"] == one["manifest_hash"]
    replaced = run("--n-shot", "2", "--overwrite")
    assert json.loads(out.read_text()) == [replaced]  # --overwrite: this result alone


# ------------------------------------------------------------------------------------------------ --resume early
def test_search_resumed_before_its_first_checkpoint_equals_the_finished_search(finished_search, tmp_path,  # noqa: F811
                                                                               capsys):
    run = before_first_checkpoint(finished_search, tmp_path / "search", keep=(".metantk-zoo.json", "config.json"))
    config = (run / "config.json").read_bytes()
    code, err = _run(["-q", "search", *RANDOM_SEARCH_FLAGS, "--resume", "--out", str(run)], capsys)
    assert code == 0, err
    assert (run / "config.json").read_bytes() == config
    for name in ("genotype.json", "model.json", "metrics.jsonl"):
        assert (run / name).read_bytes() == (finished_search / name).read_bytes(), name


@pytest.mark.parametrize("kind", ["train", "meta"])
def test_training_resumed_before_its_first_checkpoint_equals_the_finished_run(kind, finished_train,  # noqa: F811
                                                                              finished_meta, tmp_path, capsys):  # noqa: F811
    from safetensors.torch import load_file

    src, flags = {"train": (finished_train, [*NANO_TRAIN_FLAGS, "--epochs", "2"]),
                  "meta": (finished_meta, META_TRAIN_FLAGS)}[kind]
    run = before_first_checkpoint(src, tmp_path / "run")
    code, err = _run(["-q", "train", *flags, "--resume", "--out", str(run)], capsys)
    assert code == 0, err
    for name in ("config.json", "model.json"):
        assert (run / name).read_bytes() == (src / name).read_bytes(), name
    got, want = load_file(run / "model.safetensors"), load_file(src / "model.safetensors")
    assert sorted(got) == sorted(want) and all(got[k].equal(want[k]) for k in want)


# ------------------------------------------------------------------------------------------------ narrow excepts
class _Api:
    """A stand-in ``HfApi`` whose ``create_repo`` raises ``error``."""

    error: BaseException = TypeError("create_repo() got an unexpected keyword argument 'privat'")

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, *args, **kwargs):
        raise self.error


def test_a_bug_inside_a_hub_call_is_not_turned_into_a_hub_error(finished_train, monkeypatch):  # noqa: F811
    from metantk_zoo.errors import HubError
    from metantk_zoo.hub import push_pull

    def buggy_download(*args, **kwargs):
        raise TypeError("snapshot_download() got an unexpected keyword argument 'revison'")

    monkeypatch.setattr(push_pull, "snapshot_download", buggy_download)
    with pytest.raises(TypeError, match="revison"):
        push_pull.pull("org/nano")
    monkeypatch.setattr(push_pull, "HfApi", _Api)
    with pytest.raises(TypeError, match="privat") as info:
        push_pull.push(finished_train, "org/nano")
    assert not isinstance(info.value, HubError)


def test_a_dropped_connection_is_one_hub_error_line(finished_train, monkeypatch):  # noqa: F811
    from metantk_zoo.errors import HubError
    from metantk_zoo.hub import push_pull

    for name in ("httpx2", "httpx"):  # the HTTP client of this huggingface_hub (httpx2 from huggingface_hub 2)
        try:
            client = importlib.import_module(name)
            break
        except ImportError:
            continue
    transport = type("ReadError", (client.TransportError,), {})  # neither an OSError nor an HfHubHTTPError
    assert not issubclass(transport, OSError)

    def dropped(*args, **kwargs):
        raise transport("peer closed connection\nwithout sending a complete message body")

    monkeypatch.setattr(push_pull, "snapshot_download", dropped)
    with pytest.raises(HubError) as info:
        push_pull.pull("org/nano")
    assert str(info.value) == ("pull of org/nano failed: ReadError: peer closed connection without sending a "
                               "complete message body")
    monkeypatch.setattr(_Api, "error", transport("connection reset by peer"))
    monkeypatch.setattr(push_pull, "HfApi", _Api)
    with pytest.raises(HubError, match=r"^push to org/nano failed: ReadError: connection reset by peer$"):
        push_pull.push(finished_train, "org/nano")


@pytest.mark.parametrize("raised,caught", [(NotImplementedError("Model contains a trainable layer\nwith buffers"),
                                            "KernelError"),
                                           (TypeError("GradSampleModule() got an unexpected keyword"), "TypeError")])
def test_the_opacus_backend_translates_only_opacus_refusals(raised, caught, monkeypatch):
    import opacus
    import torch

    from metantk_zoo.errors import KernelError
    from metantk_zoo.nas.kernels import empirical_ntk

    def refuse(*args, **kwargs):
        raise raised

    monkeypatch.setattr(opacus, "GradSampleModule", refuse)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    with pytest.raises((KernelError, TypeError)) as info:
        empirical_ntk(model, torch.randn(2, 4, dtype=torch.float64), backend="opacus")
    assert type(info.value).__name__ == caught
    if caught == "KernelError":
        assert str(info.value) == "opacus cannot wrap this model: Model contains a trainable layer with buffers"
