"""Share runs on the Hugging Face Hub: push an exported run in one commit, pull a repository and check it.

A run directory (:mod:`metantk_zoo.utils.rundir`) is exported (:mod:`.export`, which lists the repository's files)
and uploaded in one commit; :func:`pull` downloads a repository and checks it loads (:func:`.export.check_repo_dir`).

Tokens come from huggingface_hub's own resolution (``HF_TOKEN``, ``hf auth login``) and are never printed or
logged. Every failure is raised as :class:`~metantk_zoo.errors.HubError` (or ``CheckpointError`` /
``GenotypeError`` for bad local files) with a one-line message; a failed push leaves no commit, a failed pull
leaves no checked-out revision in the cache. Only ``hub/`` imports ``huggingface_hub``.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, scan_cache_dir, snapshot_download
from huggingface_hub.errors import CacheNotFound, CorruptedCacheException, HfHubHTTPError, LocalEntryNotFoundError

from ..errors import HubError, MetantkZooError
from .export import check_repo_dir, export_run, write_manifest_files

__all__ = ["PushResult", "PullResult", "push", "pull"]

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PushResult:
    """What :func:`push` uploaded: repository, commit and file list."""

    repo_id: str
    commit: str
    url: str
    files: tuple[str, ...]
    sha256: dict[str, str]
    architecture: str
    results: list[dict[str, Any]]

    def manifest(self, tag: str) -> dict[str, Any]:
        """The ``hub/`` manifest of this push under timm tag ``tag`` (see ``manifests.py``)."""
        return {"architecture": self.architecture, "tag": tag, "repo_id": self.repo_id, "revision": self.commit,
                "files": {k: v for k, v in self.sha256.items() if k in ("model.safetensors", "config.json")},
                "results": self.results}


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` downloaded and checked."""

    repo_id: str
    revision: str
    path: Path
    architecture: str
    files: tuple[str, ...]


def _check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id or ""):
        raise HubError(f"invalid repository id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")


def _client_errors() -> tuple[type[Exception], ...]:
    """What a Hub call raises when the Hub or the connection fails, and nothing else (a bug stays a bug).

    huggingface_hub's own errors (``HfHubHTTPError``; ``LocalEntryNotFoundError`` offline), ``OSError`` (requests'
    errors in huggingface_hub < 1 derive from it; file errors) and ``ValueError`` (bad revision or id), plus the
    error base of the HTTP client huggingface_hub >= 1 uses: ``httpx.HTTPError`` (``httpx2`` in huggingface_hub 2),
    which connection resets, timeouts and a server that goes away raise and which shares no base with ``OSError``.
    """
    import importlib

    errors: list[type[Exception]] = [HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


_CLIENT_ERRORS = _client_errors()


def _hub_error(action: str, target: str, e: Exception) -> HubError:
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        hint = {401: "not authenticated: set HF_TOKEN or run `hf auth login`",
                403: "the token may not write to this repository (needs a write token)",
                404: "not found"}.get(status, "")
        reason = f"HTTP {status}" + (f" ({hint})" if hint else "")
    else:
        first = " ".join(str(e).split())[:200]
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return HubError(f"{action} {target} failed: {reason}")


def push(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Export a run and upload it to ``repo_id`` in one commit (the repository is created if needed).

    Args:
        run_dir: a run directory (``model.json`` + ``model.safetensors``; see ``rundir.py``).
        repo_id: ``ORG/NAME``; by convention ``<org>/<architecture>.<tag>``.
        revision: branch to commit to (default ``main``).
        private: create the repository private.
        commit_message: defaults to "Upload <run> with metantk-zoo".
        token: a token; ``None`` uses huggingface_hub's resolution (``HF_TOKEN``, stored login). Never logged.
        endpoint: Hub URL; ``None`` uses ``HF_ENDPOINT``.

    Raises:
        HubError: invalid id, refused (401/403), connection lost; nothing is committed then.
        CheckpointError: the run cannot be exported.
    """
    _check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="metantk-push-") as tmp:
        folder = Path(tmp) / "repo"
        files = export_run(run_dir, folder, repo_id=repo_id)
        api = HfApi(endpoint=endpoint, token=token, library_name="metantk-zoo")
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
        hashes = write_manifest_files(folder)
        config = json.loads((folder / "config.json").read_text())
        results = json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").is_file() else []
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=commit_message or f"Upload {Path(run_dir).name} with metantk-zoo",
                revision=revision,
            )
        except MetantkZooError:
            raise
        except _CLIENT_ERRORS as e:  # anything else (a TypeError: a bug) propagates as it is
            raise _hub_error("push to", repo_id, e) from e
    logger.info("pushed %s to %s at %s", run_dir, repo_id, info.oid)
    return PushResult(repo_id, info.oid, info.commit_url, tuple(files), hashes, config["architecture"],
                      results if isinstance(results, list) else [results])


def _forget_revision(repo_id: str, commit: str, cache_dir: str | None) -> None:
    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, CorruptedCacheException, OSError):  # no cache yet (or not ours): nothing to forget
        return
    hashes = [rev.commit_hash for repo in info.repos if repo.repo_id == repo_id for rev in repo.revisions
              if rev.commit_hash == commit]
    if hashes:
        info.delete_revisions(*hashes).execute()


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> PullResult:
    """Download a repository into the Hugging Face cache and check it (files, architecture, genotype, weights).

    After a successful pull, ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` works offline too
    (``HF_HUB_OFFLINE=1``), once ``metantk_zoo`` is imported. A repository that fails the checks is removed
    from the cache again.

    Raises:
        HubError: not found, refused, connection lost, missing files or unknown architecture.
        GenotypeError / CheckpointError: the genotype does not parse, the weights are corrupt or do not fit.
    """
    _check_repo_id(repo_id)
    cache = str(cache_dir) if cache_dir is not None else None
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, token=token, endpoint=endpoint))
    except _CLIENT_ERRORS as e:  # anything else (a TypeError: a bug) propagates as it is
        raise _hub_error("pull of", repo_id, e) from e
    commit = path.name
    try:
        model = check_repo_dir(path, source=f"{repo_id}@{commit[:12]}")
    except MetantkZooError:
        _forget_revision(repo_id, commit, cache)
        raise
    config = json.loads((path / "config.json").read_text())
    files = tuple(sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()))
    del model
    logger.info("pulled %s@%s into %s", repo_id, commit[:12], path)
    return PullResult(repo_id, commit, path, config["architecture"], files)
