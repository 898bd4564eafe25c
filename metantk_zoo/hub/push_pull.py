"""Share runs on the Hugging Face Hub: export a run as a timm Hub repository, push it, pull and check it.

A run directory (``rundir.py``) becomes one repository, uploaded in one commit::

    model.safetensors   the run's weights (safetensors only, never a pickle)
    config.json         timm's Hub config: architecture, num_classes, pretrained_cfg and model_args with the
                        genotype as plain JSON, so timm.create_model("hf-hub:ORG/NAME", pretrained=True) rebuilds it
    genotype.json       the genotype, canonical JSON
    search.json, run_config.json, metrics.jsonl, eval.json    the search and training records the run has
    cells.svg, cells.png                                      the cell diagram of the card
    README.md           Hub model card: YAML metadata (library_name: timm, tags, datasets, licence, model-index
                        with the few-shot results) and the genotype card

Tokens come from huggingface_hub's own resolution (``HF_TOKEN``, ``hf auth login``) and are never printed or
logged. Every failure is raised as :class:`~metantk_zoo.errors.HubError` (or ``CheckpointError`` /
``GenotypeError`` for bad local files) with a one-line message; a failed push leaves no commit, a failed pull
leaves no checked-out revision in the cache. This is the only module that imports ``huggingface_hub``.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import (
    CommitOperationAdd,
    EvalResult,
    HfApi,
    ModelCardData,
    scan_cache_dir,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from timm.models import is_model
from timm.models._hub import save_config_for_hf

from ..errors import CheckpointError, GenotypeError, HubError, MetantkZooError
from ..genotype import Genotype
from ..utils.io import load_weights, read_json, sha256_file, write_json
from ..utils.rundir import MODEL_SPEC, WEIGHTS, create_model_from_run, load_state_into
from . import cards

__all__ = [
    "REPO_FILES",
    "PushResult",
    "PullResult",
    "export_run",
    "push",
    "pull",
    "check_repo_dir",
    "model_card",
    "sha256_file",
]

logger = logging.getLogger(__name__)

#: Run files copied into the repository, with their name there (the run's config.json would clash with timm's).
RECORDS = {"genotype.json": "genotype.json", "search.json": "search.json", "config.json": "run_config.json",
           "metrics.jsonl": "metrics.jsonl", "eval.json": "eval.json"}
#: Files every exported repository has.
REPO_FILES = ("README.md", "config.json", "model.safetensors", "genotype.json", "cells.svg", "cells.png")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TAGS = ["timm", "image-classification", "few-shot-learning", "neural-architecture-search", "metantk-zoo"]


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


def _model_args(model: torch.nn.Module, spec: dict[str, Any]) -> dict[str, Any]:
    args = {k: v for k, v in spec.get("model_args", {}).items() if k not in ("drop_rate", "drop_path_rate")}
    args["genotype"] = model.genotype.to_dict()  # always explicit, as plain JSON
    args["num_cells"] = model.num_cells
    return args


def model_card(data: cards.CardData, config: dict[str, Any], repo_id: str) -> str:
    """The Hub model card: YAML metadata (timm, tags, datasets, licence, model-index) and the genotype card."""
    results = data.results
    datasets = sorted({str(r["dataset"]) for r in results if r.get("dataset")})
    name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name=f"few-shot image classification ({r.get('n_way')}-way {r.get('n_shot')}-shot)",
            dataset_type=str(r.get("dataset") or "unknown"),
            dataset_name=str(r.get("dataset") or "unknown"),
            dataset_split=r.get("split"),
            metric_type="accuracy",
            metric_name=f"{r.get('n_way')}-way {r.get('n_shot')}-shot accuracy (%)",
            metric_value=round(100 * float(r["mean"]), 2),
            metric_args={"ci95": round(100 * float(r["ci95"]), 2), "protocol": r.get("protocol"),
                         "episodes": r.get("n_episodes", r.get("episodes")), "n_query": r.get("n_query")},
        )
        for r in results
    ]
    meta = ModelCardData(
        library_name="timm",
        license="mit",
        tags=list(_TAGS),
        datasets=datasets or None,
        model_name=name,
        eval_results=eval_results or None,
        pipeline_tag="image-feature-extraction",
    )
    arch = config["architecture"]
    usage = (
        "## Usage\n\n```python\nimport timm\nimport metantk_zoo  # registers the metantk_* architectures in timm "
        "(timm has no plugin mechanism)\n\n"
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
        "cfg = timm.data.resolve_model_data_config(model)\n"
        "transform = timm.data.create_transform(**cfg)   # 84x84, mini-ImageNet statistics\n"
        "features = model.forward_head(model.forward_features(x), pre_logits=True)   # (B, "
        f"{config.get('num_features', 576)}) few-shot features\n```\n\n"
        f"Or with the command line: `metantk-zoo pull {repo_id}`. Install with `pip install metantk-zoo`."
    )
    body = "\n\n".join([
        f"# {name}",
        f"A `{arch}` few-shot backbone ({config.get('num_classes')}-way pre-training head) from "
        f"metantk-zoo, a timm model zoo of {cards.PAPER}. "
        "The genotype is stored as plain JSON in `config.json` (`model_args.genotype`) and in `genotype.json`.",
        usage,
        cards.render_markdown(data, svg="cells.svg", heading_level=2).strip(),
        "## Citation\n\n```bibtex\n@inproceedings{wang2022metantknas,\n  title     = {Global Convergence of MAML and "
        "Theory-Inspired Neural Architecture Search for Few-Shot Learning},\n  author    = {Wang, Haoxiang and Wang, "
        "Yite and Sun, Ruoyu and Li, Bo},\n  booktitle = {CVPR},\n  year      = {2022}\n}\n```",
    ])
    return f"---\n{meta.to_yaml()}\n---\n\n{body}\n"


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, repo_id: str = "ORG/NAME") -> list[str]:
    """Write the Hub repository of a run into ``out_dir`` (created; must be empty) and return its file list.

    The run's weights are loaded into the rebuilt network first, so a run whose weights do not fit its
    ``model.json`` is refused before anything is written.

    Raises:
        CheckpointError: not a run directory, missing or corrupt weights, weights of another shape.
        HubError: ``out_dir`` exists and is not empty.
    """
    run = Path(run_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HubError(f"{out} is not empty; export into a new folder")
    model = create_model_from_run(run)  # CheckpointError on anything wrong with the run
    spec = read_json(run / MODEL_SPEC, what="model spec")
    data = cards.card_data(run)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent if out.parent.exists() else None))
    try:
        shutil.copyfile(run / WEIGHTS, staging / "model.safetensors")
        save_config_for_hf(model, str(staging / "config.json"), model_args=_model_args(model, spec))
        config = json.loads((staging / "config.json").read_text())
        write_json(staging / "genotype.json", model.genotype.to_dict())
        for src, dst in RECORDS.items():
            if src != "genotype.json" and (run / src).is_file():
                shutil.copyfile(run / src, staging / dst)
        (staging / "cells.svg").write_text(cards.cell_diagram_svg(data.genotype, data.name))
        (staging / "cells.png").write_bytes(cards.cell_diagram_png(data.genotype, data.name))
        (staging / "README.md").write_text(model_card(data, config, repo_id))
        check_repo_dir(staging)  # what we would upload loads back
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    files = sorted(p.name for p in out.iterdir())
    logger.info("exported %s to %s: %s", run, out, ", ".join(files))
    return files


# ------------------------------------------------------------------------------------------------ checks
def check_repo_dir(path: str | os.PathLike, *, source: str | None = None) -> torch.nn.Module:
    """Check a downloaded or exported repository and return its model with the weights loaded.

    Checks that ``config.json`` and ``model.safetensors`` are present, that the architecture is registered,
    that ``model_args.genotype`` parses, and that the weights load with matching keys and shapes.

    Raises:
        HubError: a file is missing or the architecture is unknown. GenotypeError: the genotype does not parse.
        CheckpointError: corrupt safetensors or weights that do not fit the architecture.
    """
    path = Path(path)
    where = source or str(path)
    if not (path / "config.json").is_file():
        raise HubError(f"{where} has no config.json: not a timm repository")
    if not (path / "model.safetensors").is_file():
        raise HubError(f"{where} has no model.safetensors (metantk-zoo never loads pickled weights)")
    try:
        config = read_json(path / "config.json", what="config.json")
    except CheckpointError as e:
        raise HubError(f"{where}: {e}") from e
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(arch, str) or not is_model(arch):
        raise HubError(f"{where}/config.json names architecture {arch!r}, which timm does not know "
                       "(metantk-zoo architectures are metantk_*; did you `import metantk_zoo`?)")
    args = dict(config.get("model_args") or {})
    if args.get("genotype") is not None:
        try:
            args["genotype"] = Genotype.coerce(args["genotype"])
        except GenotypeError as e:
            raise GenotypeError(f"{where}/config.json: model_args.genotype does not parse: {e}") from e
    args.pop("num_classes", None)
    try:
        model = timm.create_model(arch, num_classes=config.get("num_classes", 0), **args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise HubError(f"{where}/config.json: cannot build {arch} from model_args: {e}") from e
    state = load_weights(path / "model.safetensors")
    load_state_into(model, state, source=f"{where}/model.safetensors", architecture=arch)
    return model.eval()


# ------------------------------------------------------------------------------------------------ push / pull
def _hub_error(action: str, target: str, e: Exception) -> HubError:
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        hint = {401: "not authenticated: set HF_TOKEN or run `hf auth login`",
                403: "the token may not write to this repository (needs a write token)",
                404: "not found"}.get(status, "")
        reason = f"HTTP {status}" + (f" ({hint})" if hint else "")
    else:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
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
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise _hub_error("push to", repo_id, e) from e
        except Exception as e:  # httpx transport errors (connection reset, server gone) have no common base
            if isinstance(e, MetantkZooError):
                raise
            raise _hub_error("push to", repo_id, e) from e
    logger.info("pushed %s to %s at %s", run_dir, repo_id, info.oid)
    return PushResult(repo_id, info.oid, info.commit_url, tuple(files), hashes, config["architecture"],
                      results if isinstance(results, list) else [results])


def _forget_revision(repo_id: str, commit: str, cache_dir: str | None) -> None:
    try:
        info = scan_cache_dir(cache_dir)
    except Exception:  # noqa: BLE001  (no cache yet: nothing to forget)
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
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise _hub_error("pull of", repo_id, e) from e
    except Exception as e:  # httpx transport errors
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


def write_manifest_files(path: str | os.PathLike) -> dict[str, str]:
    """``{file: sha256}`` of a repository folder's files (what a ``hub/`` manifest records)."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.startswith(".")}


__all__.append("write_manifest_files")
