"""What the slow tests show, at a size the default suite can afford (issue 16, item 8).

* ``metantk-zoo train`` (RFS) interrupted after its first epoch's checkpoint and continued with ``--resume`` ends
  with the weights, metrics and ``eval`` accuracy of the uninterrupted run (bitwise).
* Every meta method trains through the CLI and ``eval --adapt`` runs with it.
* A search on two gloo processes (``torchrun``) returns the single-process genotype and every score row.

The baselines' searches are in ``test_known_search.py`` (a planted problem with a hand-derived answer, per method).
"""

from __future__ import annotations

import json
import multiprocessing
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from metantk_zoo.cli import app
from metantk_zoo.genotype import Genotype
from metantk_zoo.meta.config import METHODS as META_METHODS
from metantk_zoo.nas import search
from metantk_zoo.train import loop as train_loop
from tests._search_helpers import DIST_CONFIG, nano_config, nano_source

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "synthetic:size=16,classes=30,per_class=6"


class _Interrupted(Exception):
    pass


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_cli_train_interrupted_and_resumed_equals_uninterrupted_and_evaluates_the_same(tmp_path, monkeypatch):
    runner = CliRunner()
    common = ["train", "--model", "metantk_conv4", "--dataset", DATA, "--epochs", "2", "--batch-size", "16",
              "--image-size", "16", "--set", "lr_decay_epochs=[1]"]
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "full")])
    assert res.exit_code == 0, res.output
    assert _last_json(res.stdout)["epochs"] == 2

    save = train_loop.Checkpointer.save

    def save_then_stop(self, *args, **kwargs):  # the process dies right after epoch 1's checkpoint
        save(self, *args, **kwargs)
        raise _Interrupted

    monkeypatch.setattr(train_loop.Checkpointer, "save", save_then_stop)
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "cut")])
    assert isinstance(res.exception, _Interrupted)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.setattr(train_loop.Checkpointer, "save", save)
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "cut"), "--resume"])
    assert res.exit_code == 0, res.output
    assert _last_json(res.stdout)["resumed_from"] == 1

    full, cut = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)
    metrics = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("full", "cut")]
    losses = [[json.loads(x)["loss"] for x in m] for m in metrics]
    assert len(losses[0]) == 2 and losses[0] == losses[1]

    evals = []
    for run in ("full", "cut"):
        res = runner.invoke(app, ["eval", str(tmp_path / run), "--dataset", DATA, "--protocol", "rfs", "--episodes",
                                  "4", "--n-way", "3", "--n-query", "2", "--image-size", "16", "--json"])
        assert res.exit_code == 0, res.output
        evals.append(json.loads(res.stdout))
        assert json.loads((tmp_path / run / "eval.json").read_text())[0]["mean"] == evals[-1]["mean"]
    assert evals[0]["n_episodes"] == 4 and evals[0]["manifest_hash"] == evals[1]["manifest_hash"]
    assert evals[0]["mean"] == evals[1]["mean"]
    # 4 episodes x 3 ways x 2 queries: each episode's accuracy is k/6, so their mean is a multiple of 1/24
    assert 0 <= evals[0]["mean"] <= 1 and round(evals[0]["mean"] * 24, 9) % 1 == 0


@pytest.fixture(scope="module")
def meta_runs(tmp_path_factory):
    """One CLI meta-training run per method (same seed, data and initialisation), kept for the module."""
    root = tmp_path_factory.mktemp("meta")
    runner, outputs = CliRunner(), {}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in META_METHODS:
            args = ["train", "--method", method, "--preset", "demo", "--model", "metantk_conv4", "--dataset", DATA,
                    "--image-size", "16", "--out", str(root / method), "--epochs", "1",
                    "--set", "steps_per_epoch=1", "--set", "meta_batch=1", "--set", "n_way=3", "--set", "n_shot=1",
                    "--set", "n_query=1", "--set", "inner_steps=1", "--set", "val_episodes=0"]
            res = runner.invoke(app, args)
            outputs[method] = res
    finally:
        torch.set_num_threads(n)
    return root, outputs


@pytest.mark.parametrize("method", META_METHODS)
def test_each_meta_method_trains_and_adapts_through_the_cli(meta_runs, method):
    root, outputs = meta_runs
    res = outputs[method]
    assert res.exit_code == 0, res.output
    assert _last_json(res.stdout)["epochs"] == 1
    cfg = json.loads((root / method / "config.json").read_text())
    assert cfg["method"] == method and cfg["config"]["meta_steps"] == 1 and cfg["config"]["inner_steps"] == 1
    assert json.loads((root / method / "model.json").read_text())["num_classes"] == 3
    weights = load_file(root / method / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    # the method is used: from the same seed, initialisation and episodes, no two methods end at the same weights
    for other in META_METHODS:
        if other != method and outputs[other].exit_code == 0:
            theirs = load_file(root / other / "model.safetensors")
            assert any(not torch.equal(weights[k], theirs[k]) for k in weights), (method, other)
    res = CliRunner().invoke(app, ["eval", str(root / method), "--dataset", DATA, "--protocol", "rfs", "--episodes",
                                   "2", "--n-way", "3", "--n-query", "1", "--image-size", "16", "--json", "--adapt"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["protocol"].startswith(f"rfs+adapt:{method}(") and out["n_episodes"] == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _search_rank(rank: int, port: int, out: str) -> None:
    """One gloo rank of the nano search (a forked child: the parent's imports, no interpreter start-up)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        res = search(nano_source(), nano_config(**DIST_CONFIG), seed=3, show_progress=False)
        if rank == 0:
            Path(out).write_text(json.dumps({**res.to_dict(), "world_size": dist.get_world_size()}))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_single_process_search(tmp_path):
    """Two forked gloo ranks (``tests/_search_dist.py`` under ``torchrun`` is the slow form of this test) score
    disjoint halves of every stage and return the single-process genotype and every score row."""
    out = tmp_path / "dist.json"
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_search_rank, args=(r, port, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    try:
        one = search(nano_source(), nano_config(**DIST_CONFIG), seed=3, show_progress=False)
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0, f"rank exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    got = json.loads(out.read_text())
    assert got["world_size"] == 2
    assert Genotype.from_dict(got["genotype"]) == one.genotype
    assert got["rounds"] == json.loads(json.dumps(one.rounds))  # every score of every candidate
    assert sum(len(st["candidates"]) for st in got["rounds"]) == 36 + 14
