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
