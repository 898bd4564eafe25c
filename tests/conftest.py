"""Shared fixtures. Area-specific fixtures live in the area's own test module or a ``tests/_<area>.py`` helper."""

from __future__ import annotations

import os

import pytest
import torch

import metantk_zoo  # noqa: F401  (registers the timm models)
from metantk_zoo.models.genotypes import NAMED

#: ``METANTK_TEST_DEVICE=cuda pytest -m gpu`` runs the device-aware tests on a GPU (timm's TORCH_DEVICE pattern).
TEST_DEVICE = torch.device(os.environ.get("METANTK_TEST_DEVICE", "cpu"))


@pytest.fixture
def device() -> torch.device:
    return TEST_DEVICE


@pytest.fixture
def one_thread():
    """Tiny tensors: OpenMP barriers between 2 threads cost far more than they save on a shared 2-core runner.

    Modules of tiny-tensor tests use it for all their tests: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def nano_genotype():
    return NAMED["mini5_a"]


@pytest.fixture(autouse=True, scope="session")
def metantk_cache(tmp_path_factory):
    """One cache folder per test session (the synthetic benchmark is generated once, never in the user's cache)."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("metantk_cache")
        mp.setenv("METANTK_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def hub_isolation(tmp_path, monkeypatch):
    """No test touches the user's Hugging Face cache or token, or the network."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("METANTK_NO_PROGRESS", "1")
    torch.manual_seed(0)


@pytest.fixture
def local_hub():
    """A Hub-compatible server on 127.0.0.1 (``tests/hub_server.py``), stopped when the test ends.

    Writes need ``tests.hub_server.WRITE_TOKEN``; drive the client with ``client_env`` (subprocess) or
    ``patch_client`` (in process).
    """
    from tests.hub_server import READ_TOKEN, WRITE_TOKEN, LocalHub

    with LocalHub(token=WRITE_TOKEN, read_token=READ_TOKEN) as hub:
        yield hub
