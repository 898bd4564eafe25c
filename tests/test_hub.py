"""Hub integration: export, push, pull, manifests, failures; against the local server in tests/hub_server.py."""

from __future__ import annotations

import hashlib

import pytest

from tests.hub_server import READ_TOKEN, patch_client


def test_local_hub_serves_the_real_client(local_hub, tmp_path, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

    patch_client(monkeypatch, local_hub, tmp_path / "cache")
    api = HfApi()
    assert api.whoami()["name"] == "tester"
    api.create_repo("org/demo", exist_ok=True)
    api.create_repo("org/demo", exist_ok=True)  # 409 -> fine
    blob = bytes(range(256)) * 64
    api.create_commit(
        "org/demo",
        [CommitOperationAdd("a.json", b'{"x": 1}'), CommitOperationAdd("w.safetensors", blob)],
        commit_message="add",
    )
    repo = local_hub.repo("org/demo")
    assert sorted(repo.files()) == [".gitattributes", "a.json", "w.safetensors"]
    assert local_hub.lfs_objects == {hashlib.sha256(blob).hexdigest(): blob}  # the binary went through LFS
    path = hf_hub_download("org/demo", "w.safetensors", cache_dir=tmp_path / "cache")
    assert open(path, "rb").read() == blob
    assert sorted(f.path for f in api.list_repo_tree("org/demo")) == [".gitattributes", "a.json", "w.safetensors"]


@pytest.mark.parametrize("token,status", [(None, 401), (READ_TOKEN, 403)])
def test_local_hub_refuses_writes_without_a_write_token(local_hub, tmp_path, monkeypatch, token, status):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    patch_client(monkeypatch, local_hub, tmp_path / "cache", token=token)
    with pytest.raises(HfHubHTTPError) as e:
        HfApi().create_repo("org/demo")
    assert e.value.response.status_code == status
    assert local_hub.repo("org/demo") is None


# ---------------------------------------------------------------------------------------------- helpers
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402

from metantk_zoo.errors import CheckpointError, GenotypeError, HubError  # noqa: E402
from metantk_zoo.hub import push_pull as hub  # noqa: E402
from metantk_zoo.models.genotypes import NAMED  # noqa: E402
from metantk_zoo.utils import rundir  # noqa: E402
from metantk_zoo.utils.io import sha256_file  # noqa: E402
from tests.hub_server import client_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVAL_ROW = {"protocol": "rfs", "n_way": 5, "n_shot": 1, "n_query": 15, "n_episodes": 600, "mean": 0.5123,
            "ci95": 0.0101, "dataset": "synthetic", "split": "test", "manifest_hash": "ab" * 32,
            "ci_formula": "t.ppf(0.975, n-1) * std(ddof=1) / sqrt(n)"}
SEARCHED = NAMED["tiered5_b"]  # a published genotype for the tests that need search records but not a search


@pytest.fixture(scope="module")
def searched_run(tmp_path_factory) -> Path:
    """A real search: ``metantk-zoo search --preset tiny`` with two candidate ops on synthetic data (a few seconds)."""
    from metantk_zoo.cli import main

    out = tmp_path_factory.mktemp("searched") / "search"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METANTK_NO_PROGRESS", "1")
        try:
            main(["search", "--preset", "tiny", "--ops", "skip_connect,max_pool_3x3BN", "--region-patches", "50",
                  "--dataset", "synthetic:size=32", "--seed", "3", "--out", str(out)])
        except SystemExit as e:
            assert not e.code, f"the search failed with exit code {e.code}"
    return out


def make_run(path: Path, architecture: str = "metantk_nano", model_args: dict | None = None, num_classes: int = 5,
             search: bool = False) -> torch.nn.Module:
    """A finished run directory: a few SGD steps on random data, model.json, weights, eval.json (+ search records)."""
    path.mkdir(parents=True)
    model_args = model_args or {}
    model = timm.create_model(architecture, num_classes=num_classes, **model_args)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, num_classes, (4,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rundir.write_model_spec(path, architecture, model_args, num_classes)
    rundir.save_model_weights(path, model)
    (path / "eval.json").write_text(json.dumps([EVAL_ROW]))
    (path / "metrics.jsonl").write_text('{"epoch": 1, "loss": 1.5}\n')
    if search:
        genotype = model.genotype
        (path / "genotype.json").write_text(genotype.to_json())
        (path / "search.json").write_text(json.dumps({
            "genotype": genotype.to_dict(), "genotype_darts": genotype.to_darts(), "seed": 7, "wall_time": 12.5,
            "device": "cpu", "data_fingerprint": "f" * 64, "config": {"method": "metantk", "kernel": "maml",
                                                                     "num_cells": 5}, "rounds": []}))
        (path / "config.json").write_text(json.dumps({"preset": "tiny", "seed": 7}))
    return model.eval()


def searched_args(genotype: dict | None = None) -> dict:
    return {"genotype": genotype or SEARCHED.to_dict(), "num_cells": 3, "init_channels": 4}


def make_searched_run(path: Path, search_run: Path) -> torch.nn.Module:
    """A run trained from a search run's genotype, holding that search's records as ``metantk-zoo train`` keeps them."""
    genotype = json.loads((search_run / "genotype.json").read_text())
    model = make_run(path, "metantk_cell", searched_args(genotype), num_classes=4)
    for name in ("genotype.json", "search.json"):
        (path / name).write_bytes((search_run / name).read_bytes())
    (path / "config.json").write_text(json.dumps({"preset": "rfs-mini", "seed": 3}))
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------------------------------------- round trip
_CLIENT = r"""
import json, sys, torch, timm
import metantk_zoo
from metantk_zoo.cli import main
from safetensors.torch import save_file
mode, out, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
res = {}
for run, repo in jobs:
    if mode == "online":
        for argv in (["push", run, "--repo", repo], ["pull", repo]):
            try:
                main(argv)
            except SystemExit as e:
                if e.code:
                    raise
    model = timm.create_model("hf-hub:" + repo, pretrained=True).eval()
    with torch.no_grad():
        res[repo] = model(x)
save_file(res, out)
"""

NANO_FILES = [".gitattributes", "README.md", "cells.png", "cells.svg", "config.json", "eval.json", "genotype.json",
              "metrics.jsonl", "model.safetensors"]


def _client(mode: str, env: dict, out: Path, jobs: list) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", _CLIENT, mode, str(out), json.dumps(jobs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_push_pull_hf_hub_round_trip_is_bit_identical_online_and_offline(local_hub, searched_run, tmp_path):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    zoo = make_run(tmp_path / "zoo_run")
    searched = make_searched_run(tmp_path / "search_run", searched_run)
    search_record = json.loads((searched_run / "search.json").read_text())
    jobs = [[str(tmp_path / "zoo_run"), "org/metantk_nano.test"], [str(tmp_path / "search_run"), "org/searched.test"]]
    hf_home = tmp_path / "client_home"  # an empty cache
    online = _client("online", client_env(local_hub, hf_home), tmp_path / "online.safetensors", jobs)

    # what the Hub holds: one commit per push on top of the repo's initial commit, exact file lists
    nano_repo, searched_repo = local_hub.repo("org/metantk_nano.test"), local_hub.repo("org/searched.test")
    assert sorted(nano_repo.files()) == NANO_FILES
    assert sorted(searched_repo.files()) == sorted(NANO_FILES + ["run_config.json", "search.json"])
    assert len(nano_repo.history) == 2 and len(searched_repo.history) == 2
    assert not any("pytorch_model.bin" in f for f in nano_repo.files())
    assert f"pushed org/metantk_nano.test at {nano_repo.refs['main']}" in online.stdout
    assert "hf_test" not in online.stdout + online.stderr  # the token is never printed

    config = json.loads(searched_repo.files()["config.json"])
    assert config["architecture"] == "metantk_cell"
    assert config["model_args"]["genotype"] == json.loads((searched_run / "genotype.json").read_text())
    assert config["model_args"]["genotype"] == search_record["genotype"]  # the genotype the search found
    assert json.loads(searched_repo.files()["search.json"]) == search_record
    assert config["model_args"]["num_cells"] == 3 and config["model_args"]["init_channels"] == 4
    card = ModelCard(searched_repo.files()["README.md"].decode())
    assert card.data.library_name == "timm" and card.data.license == "mit"
    assert "few-shot-learning" in card.data.tags and card.data.datasets == ["synthetic"]
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.metric_args["ci95"]) == ("accuracy", 51.23, 1.01)
    assert "import metantk_zoo" in card.text and search_record["data_fingerprint"] in card.text
    assert f"{search_record['wall_time']:.1f} s" in card.text and "| preset | tiny |" in card.text

    got = load_file(tmp_path / "online.safetensors")
    assert torch.equal(got["org/metantk_nano.test"], logits(zoo))
    assert torch.equal(got["org/searched.test"], logits(searched))

    local_hub.stop()  # offline, from the cache the pulls filled, with the server gone
    n_requests = len(local_hub.requests)
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
        for repo, model in (("org/metantk_nano.test", zoo), ("org/searched.test", searched)):
            loaded = timm.create_model(f"hf-hub:{repo}", pretrained=True)
            assert torch.equal(logits(loaded), logits(model))
    assert len(local_hub.requests) == n_requests


# ---------------------------------------------------------------------------------------------- manifests
_MANIFEST_CLIENT = r"""
import json, sys, torch, timm
import metantk_zoo
from metantk_zoo.errors import HubError
from metantk_zoo.utils.io import load_weights
state = load_weights(sys.argv[1])
model = timm.create_model("metantk_cell5.hubtest", pretrained=True)
assert model.pretrained_cfg["hf_hub_id"].startswith("org/metantk_cell5.hubtest@")
loaded = model.state_dict()
same = state.keys() == loaded.keys() and all(torch.equal(v, state[k]) for k, v in loaded.items())
try:
    timm.create_model("metantk_cell5.badhash", pretrained=True)
    refused = "loaded"
except HubError as e:
    refused = str(e)
print(json.dumps({"same": same, "refused": refused}))
"""


def test_manifest_tag_resolves_to_its_repository_with_the_hash_checked(local_hub, tmp_path, monkeypatch):
    from metantk_zoo.models._manifests import read_manifest

    run = tmp_path / "cell5"
    model = timm.create_model("metantk_cell5")
    rundir.write_model_spec(run, "metantk_cell5", {}, 64)
    rundir.save_model_weights(run, model)
    patch_client(monkeypatch, local_hub, tmp_path / "cache")
    result = hub.push(run, "org/metantk_cell5.hubtest")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    good = result.manifest("hubtest")
    assert good["revision"] == local_hub.repo("org/metantk_cell5.hubtest").refs["main"]
    assert good["files"]["model.safetensors"] == sha256_file(run / "model.safetensors")
    (manifests / "metantk_cell5.hubtest.json").write_text(json.dumps(good))
    bad = {**good, "tag": "badhash", "files": {"model.safetensors": "0" * 64}}
    (manifests / "metantk_cell5.badhash.json").write_text(json.dumps(bad))
    manifest = read_manifest(manifests / "metantk_cell5.hubtest.json")
    assert manifest.hf_hub_id == f"org/metantk_cell5.hubtest@{result.commit}"

    env = {**client_env(local_hub, tmp_path / "client_home"), "METANTK_HUB_MANIFESTS": str(manifests)}
    proc = subprocess.run([sys.executable, "-c", _MANIFEST_CLIENT, str(run / "model.safetensors")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] is True
    assert "does not match the manifest" in out["refused"]
    resolves = [p for m, p in local_hub.requests if m == "GET" and "/resolve/" in p]
    assert f"/org/metantk_cell5.hubtest/resolve/{result.commit}/model.safetensors" in resolves


def test_packaged_manifests_are_the_documented_hub_folder():
    from metantk_zoo.models._manifests import PACKAGED_DIR, load_manifests

    top = {p.name: p.read_bytes() for p in (ROOT / "hub").iterdir() if p.is_file()}
    packaged = {p.name: p.read_bytes() for p in PACKAGED_DIR.iterdir() if p.is_file()}
    assert top == packaged, "metantk_zoo/resources/hub/ must be an exact copy of hub/"
    assert load_manifests([ROOT / "hub"]) == []  # nothing published from here yet: no invented entries


@pytest.mark.parametrize("field,value,words", [("revision", "main", "40-hex"), ("files", {}, "model.safetensors"),
                                               ("tag", "Bad-Tag", "lower-case")])
def test_malformed_manifests_are_refused(tmp_path, field, value, words):
    from metantk_zoo.errors import ConfigError
    from metantk_zoo.models._manifests import read_manifest

    d = {"architecture": "metantk_cell5", "tag": "t", "repo_id": "org/x", "revision": "a" * 40,
         "files": {"model.safetensors": "b" * 64}, field: value}
    (tmp_path / "m.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=words):
        read_manifest(tmp_path / "m.json")


# ---------------------------------------------------------------------------------------------- failures
def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("token,status", [(None, "401"), (READ_TOKEN, "403")])
def test_push_refused_says_why_and_commits_nothing(local_hub, tmp_path, monkeypatch, token, status):
    make_run(tmp_path / "run")
    patch_client(monkeypatch, local_hub, tmp_path / "cache", token=token)
    with pytest.raises(HubError) as e:
        hub.push(tmp_path / "run", "org/refused")
    assert status in _one_line(e.value) and "org/refused" in str(e.value)
    assert local_hub.repo("org/refused") is None
    assert not any(m == "POST" and "/commit/" in p for m, p in local_hub.requests)


def test_push_when_the_server_dies_mid_upload_leaves_no_commit(local_hub, tmp_path, monkeypatch):
    make_run(tmp_path / "run")
    patch_client(monkeypatch, local_hub, tmp_path / "cache")
    local_hub.create_repo("org/dies")
    local_hub.die_on = "commit"
    with pytest.raises(HubError) as e:
        hub.push(tmp_path / "run", "org/dies")
    assert "push to org/dies failed" in _one_line(e.value)
    assert sorted(local_hub.repo("org/dies").files()) == [".gitattributes"]  # only the initial commit
    assert len(local_hub.repo("org/dies").history) == 1


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A good repository folder, exported once for the failure tests."""
    tmp = tmp_path_factory.mktemp("exported")
    make_run(tmp / "good")
    hub.export_run(tmp / "good", tmp / "repo", repo_id="org/broken")
    return tmp / "repo"


def _upload(local_hub, exported: Path, tmp_path: Path, repo_id: str, mutate) -> None:
    """Copy the good export, let ``mutate(folder)`` break it, upload the folder as it is."""
    import shutil

    from huggingface_hub import CommitOperationAdd, HfApi

    folder = tmp_path / "repo"
    shutil.copytree(exported, folder)
    mutate(folder)
    ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(folder.iterdir())]
    api = HfApi()
    api.create_repo(repo_id)
    api.create_commit(repo_id, ops, commit_message="broken on purpose")


def _edit_config(**changes):
    def mutate(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            if key == "genotype":
                cfg["model_args"]["genotype"] = value
            else:
                cfg[key] = value
        (folder / "config.json").write_text(json.dumps(cfg))

    return mutate


def _bad_genotype() -> dict:
    g = NAMED["mini5_a"].to_dict()
    g["normal"][0][0][0] = "sep_conv_7x7"
    return g


def _smaller_head(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["classifier.weight"] = state["classifier.weight"][:3].contiguous()
    state["classifier.bias"] = state["classifier.bias"][:3].contiguous()
    save_file(state, folder / "model.safetensors")


def _corrupt(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:8] + b"\xff" * 64 + data[72:])


@pytest.mark.parametrize(
    "mutate,error,words",
    [
        (lambda f: (f / "config.json").unlink(), HubError, "no config.json"),
        (_edit_config(architecture="resnet_does_not_exist"), HubError, "'resnet_does_not_exist'"),
        (_edit_config(genotype=_bad_genotype()), GenotypeError, "sep_conv_7x7"),
        (_smaller_head, CheckpointError, "shape mismatch"),
        (_corrupt, CheckpointError, "corrupt"),
    ],
    ids=["no-config", "unknown-architecture", "bad-genotype", "shape-mismatch", "corrupt-safetensors"],
)
def test_pull_refuses_a_broken_repository_and_keeps_nothing(local_hub, exported, tmp_path, monkeypatch, mutate, error,
                                                           words):
    cache = tmp_path / "cache"
    patch_client(monkeypatch, local_hub, cache)
    _upload(local_hub, exported, tmp_path, "org/broken", mutate)
    with pytest.raises(error) as e:
        hub.pull("org/broken", cache_dir=cache)
    assert words in _one_line(e.value)
    snapshots = cache / "models--org--broken" / "snapshots"
    assert not snapshots.exists() or list(snapshots.iterdir()) == []


def test_pull_of_a_missing_repository_says_so(local_hub, tmp_path, monkeypatch):
    patch_client(monkeypatch, local_hub, tmp_path / "cache")
    with pytest.raises(HubError) as e:
        hub.pull("org/nothing-here", cache_dir=tmp_path / "cache")
    assert "pull of org/nothing-here failed" in _one_line(e.value)
