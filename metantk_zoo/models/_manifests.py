"""Manifests of published zoo weights: one JSON file per Hub repository, read by the timm registry.

A manifest says that ``<architecture>.<tag>`` has weights in a Hub repository at a pinned revision, with the
sha256 of its files and its few-shot results::

    {
      "architecture": "metantk_cell5",
      "tag": "rfs_miniimagenet",
      "repo_id": "ORG/metantk_cell5.rfs_miniimagenet",
      "revision": "<40-hex commit>",
      "files": {"model.safetensors": "<sha256>", "config.json": "<sha256>"},
      "results": [{"protocol": "rfs", "n_way": 5, "n_shot": 1, "mean": 0.61, "ci95": 0.008, ...}]
    }

With it, ``timm.create_model("metantk_cell5.rfs_miniimagenet", pretrained=True)`` downloads
``model.safetensors`` from that revision and refuses it when its sha256 differs. The documented source is the
repository's top-level ``hub/`` folder; the package ships an identical copy in ``metantk_zoo/resources/hub/``
so that installed wheels see it. ``METANTK_HUB_MANIFESTS`` (folders separated by ``os.pathsep``) adds more
manifests, e.g. for your own repositories. A manifest is added only for weights that exist.
No ``huggingface_hub`` import here: the hash check is done in ``hub.py`` when weights are loaded.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, HubError
from ..utils.io import sha256_file

__all__ = ["Manifest", "PACKAGED_DIR", "ENV_VAR", "manifest_dirs", "load_manifests", "read_manifest", "find",
           "verify_cached_files"]

PACKAGED_DIR = Path(__file__).resolve().parents[1] / "resources" / "hub"
ENV_VAR = "METANTK_HUB_MANIFESTS"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
_TAG = re.compile(r"^[a-z0-9_]+$")

_REGISTRY: dict[str, Manifest] = {}  # "architecture.tag" -> manifest (filled by load_manifests / register)


@dataclass(frozen=True)
class Manifest:
    """One published repository (see the module docstring for the JSON form)."""

    architecture: str
    tag: str
    repo_id: str
    revision: str
    files: dict[str, str]
    results: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""

    @property
    def name(self) -> str:
        """The timm name with tag, e.g. ``metantk_cell5.rfs_miniimagenet``."""
        return f"{self.architecture}.{self.tag}"

    @property
    def hf_hub_id(self) -> str:
        """``repo_id@revision``: timm downloads exactly the pinned commit."""
        return f"{self.repo_id}@{self.revision}"

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "tag": self.tag, "repo_id": self.repo_id,
                "revision": self.revision, "files": dict(self.files), "results": list(self.results)}


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate one manifest file.

    Raises:
        ConfigError: unreadable JSON or a field missing or malformed (the message names the file and field).
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"hub manifest {path}: cannot read it as JSON: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"hub manifest {path}: expected a JSON object")
    for key in ("architecture", "tag", "repo_id", "revision", "files"):
        if key not in d:
            raise ConfigError(f"hub manifest {path}: missing field {key!r}")
    if not _TAG.match(str(d["tag"])):
        raise ConfigError(f"hub manifest {path}: tag {d['tag']!r} must be lower-case letters, digits and '_'")
    if not _SHA.match(str(d["revision"])):
        raise ConfigError(f"hub manifest {path}: revision must be a 40-hex commit id, found {d['revision']!r}")
    if "/" not in str(d["repo_id"]):
        raise ConfigError(f"hub manifest {path}: repo_id must be ORG/NAME, found {d['repo_id']!r}")
    files = d["files"]
    if not isinstance(files, dict) or "model.safetensors" not in files:
        raise ConfigError(f"hub manifest {path}: files must map names to sha256 and include model.safetensors")
    for name, digest in files.items():
        if not _SHA256.match(str(digest)):
            raise ConfigError(f"hub manifest {path}: files[{name!r}] is not a sha256 hex digest")
    return Manifest(str(d["architecture"]), str(d["tag"]), str(d["repo_id"]), str(d["revision"]),
                    {k: str(v).removeprefix("sha256:") for k, v in files.items()}, list(d.get("results", [])),
                    str(path))


def manifest_dirs() -> list[Path]:
    """The packaged manifests, then the folders named in ``METANTK_HUB_MANIFESTS``."""
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return [PACKAGED_DIR, *extra]


def load_manifests(dirs: list[Path] | None = None) -> list[Manifest]:
    """Every ``*.json`` manifest of ``dirs`` (default :func:`manifest_dirs`), sorted by file name per folder.

    Raises:
        ConfigError: a malformed manifest, or two manifests for the same ``architecture.tag``.
    """
    seen: dict[str, Manifest] = {}
    for folder in dirs if dirs is not None else manifest_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            m = read_manifest(path)
            if m.name in seen and seen[m.name].to_dict() != m.to_dict():
                raise ConfigError(f"hub manifests {seen[m.name].path} and {path} both define {m.name}")
            seen[m.name] = m
    return list(seen.values())


def register(manifest: Manifest) -> None:
    """Remember a manifest so the weight loader can check its hashes (``models.py`` adds the timm tag)."""
    _REGISTRY[manifest.name] = manifest


def find(architecture: str, tag: str | None) -> Manifest | None:
    """The registered manifest of ``architecture.tag``, if any."""
    return _REGISTRY.get(f"{architecture}.{tag}") if tag else None


def verify_cached_files(repo_id: str, revision: str, expected: dict[str, str], *, required: tuple[str, ...] = (),
                        cache_dir: str | os.PathLike | None = None) -> None:
    """Check the sha256 of the cached files of ``repo_id@revision`` against ``expected`` (``{file: sha256}``).

    Files of ``expected`` that are not in the cache are skipped (timm downloads only the weights), unless
    they are ``required``.

    Raises:
        HubError: a cached file's hash differs (the message names the file and both hashes).
    """
    from huggingface_hub import try_to_load_from_cache  # lazy: `import metantk_zoo` stays light

    for name, want in expected.items():
        cached = try_to_load_from_cache(repo_id, name, revision=revision, cache_dir=cache_dir)
        if not isinstance(cached, str):
            if name in required:
                raise HubError(f"{repo_id}@{revision[:12]}/{name} is not in the Hugging Face cache; cannot check "
                               "its sha256 against the manifest")
            continue
        got = sha256_file(cached)
        if got != want.removeprefix("sha256:"):
            raise HubError(f"{repo_id}@{revision[:12]}/{name}: sha256 {got[:16]}... does not match the manifest's "
                           f"{want.removeprefix('sha256:')[:16]}...; refusing these weights")
