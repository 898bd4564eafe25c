"""The product's stages as functions: load a backbone, search, train, evaluate, card and export.

This is the one place that wires data to the procedures (``nas``, ``train``, ``meta``, ``fewshot``) and to the Hub
layer: a dataset spec goes in, tensors and run directories come out. The CLI commands and the scripts call these
functions; the demo is a sequence of them (:func:`run_demo`).

    from metantk_zoo import pipeline
    result = pipeline.run_search("tiny", "synthetic:size=32", "runs/tiny", seed=0)
    pipeline.run_train("runs/tiny", "synthetic:size=32", "runs/tiny_rfs", overrides={"epochs": 10})
    net = pipeline.load_backbone("runs/tiny_rfs")
    print(pipeline.run_eval(net, "synthetic:size=32", protocol="rfs").summary())

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ConfigError
from .utils.device import resolve_device
from .utils.io import as_float, encode_nonfinite, read_json, write_json, write_jsonl
from .utils.progress import progress
from .utils.rundir import check_out_dir, claim_out_dir, create_model_from_run, is_run_dir, write_model_spec

__all__ = [
    "resolve_model",
    "model_input_size",
    "load_backbone",
    "load_hub_model",
    "create_model_checked",
    "load_search_source",
    "run_search",
    "SplitBatches",
    "DATA_BUILDERS",
    "run_train",
    "episode_fn",
    "SplitImages",
    "run_eval",
    "run_adapted_eval",
    "write_genotype_card",
    "export_to_folder",
    "export_and_check",
    "DemoStages",
    "run_demo",
    "DEMO_ROWS",
]

logger = logging.getLogger(__name__)

Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------------- models
def _is_path(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # genotype text longer than a file name
        return False


def resolve_model(model: str, num_cells: int | None = None, init_channels: int | None = None) -> tuple[str, dict]:
    """``--model`` -> (timm architecture, model_args). Accepts a timm name, genotype text (DARTS or JSON), a
    ``genotype.json`` file or a search run directory holding one (-> ``metantk_cell`` with that genotype)."""
    import timm

    from .genotype import Genotype

    if timm.is_model(model):
        arch, args = model, {}
    else:
        path = Path(model)
        text = model
        if _is_path(path):
            file = path / "genotype.json" if path.is_dir() else path
            if not file.is_file():
                raise ConfigError(f"--model {model}: a directory must hold genotype.json (a search run directory)")
            text = file.read_text()
        elif not any(c in model for c in "({["):
            raise ConfigError(f"--model {model!r} is not a timm model name, a genotype, or a path to one; "
                              f"see `metantk-zoo models` or timm.list_models()")
        arch, args = "metantk_cell", {"genotype": Genotype.parse(text).to_dict()}
    if num_cells is not None or init_channels is not None:
        if not arch.startswith("metantk_"):
            raise ConfigError(f"--num-cells / --init-channels apply to metantk_* models, not {arch}")
        if num_cells is not None:
            args["num_cells"] = num_cells
        if init_channels is not None:
            args["init_channels"] = init_channels
    return arch, args


def model_input_size(model: torch.nn.Module, default: int = 84) -> int:
    """The square input side from the model's ``pretrained_cfg`` (84 for the zoo)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or (3, default, default)
    return int(size[-1])


def load_backbone(model: str, *, pretrained: bool = False, num_cells: int | None = None,
                  init_channels: int | None = None) -> torch.nn.Module:
    """A backbone from a run directory, an ``hf-hub:``/``local-dir:`` id (safetensors only, see
    :func:`load_hub_model`), a timm name or a genotype."""
    if is_run_dir(model):
        return create_model_from_run(model)
    if model.startswith(("hf-hub:", "local-dir:")):
        return load_hub_model(model)
    arch, args = resolve_model(model, num_cells, init_channels)
    return create_model_checked(arch, pretrained=pretrained, **args)


def load_hub_model(model_id: str) -> torch.nn.Module:
    """``hf-hub:ORG/NAME[@REV]`` or ``local-dir:PATH`` through the safetensors-only path: the repository is
    downloaded (``hub.pull``: checked, and dropped from the cache when it fails) or read from the folder, and the
    model is rebuilt from its ``config.json`` with ``model.safetensors`` loaded; a repository holding only
    ``pytorch_model.bin`` (pickle) is refused, never unpickled.

    Raises:
        HubError: malformed id, repository not there (or offline), no ``model.safetensors``.
        CheckpointError: corrupt weights or weights that do not fit.
    """
    from .errors import HubError
    from .hub import push_pull

    if model_id.startswith("local-dir:"):
        path = Path(model_id[len("local-dir:"):]).expanduser()
        if not path.is_dir():
            raise HubError(f"{model_id}: expected a folder holding config.json and model.safetensors, found none")
        return push_pull.check_repo_dir(path, source=model_id)
    repo, _, revision = model_id[len("hf-hub:"):].partition("@")
    result = push_pull.pull(repo, revision=revision or None)
    return push_pull.check_repo_dir(result.path, source=model_id)


def create_model_checked(arch: str, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with its constructor and weight errors as one-line package errors.

    Raises:
        ConfigError: the constructor refused the arguments (``ValueError``/``TypeError``, e.g. too few cells).
        CheckpointError: ``pretrained=True`` and timm has no weights for ``arch`` (or they cannot be loaded).
    """
    import timm

    from .errors import MetantkZooError

    try:
        return timm.create_model(arch, **kwargs)
    except MetantkZooError:
        raise
    except (ValueError, TypeError) as e:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "genotype")[:120]
        raise ConfigError(f"cannot build {arch} ({args}): {' '.join(str(e).split())[:200]}") from e
    except RuntimeError as e:
        if kwargs.get("pretrained"):
            raise CheckpointError(f"{arch} has no pretrained weights timm can load "
                                  f"({' '.join(str(e).split())[:160]}); drop --pretrained, or use a run directory "
                                  f"or an hf-hub: id") from e
        raise


# ---------------------------------------------------------------------------------------------------- search
_CHUNK = 512


def load_search_source(spec: str, resolution: int):
    """The dataset's train split as an in-memory search source (images resized to the search resolution once).

    Returns:
        ``(TensorSource over uint8 (N, 3, r, r) images and their labels, number of train classes)``.
    """
    from .data import load_fewshot, load_images
    from .nas import TensorSource, resize_uint8

    fs = load_fewshot(spec)
    split = fs.split("train")
    labels = torch.as_tensor(fs.labels("train"), dtype=torch.int64)
    chunks = []
    for start in progress(range(0, len(labels), _CHUNK), desc="loading search images"):
        idx = list(range(start, min(start + _CHUNK, len(labels))))
        chunks.append(resize_uint8(load_images(split, idx), resolution))
    images = torch.cat(chunks) if chunks else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
    return TensorSource(images, labels), len(fs.class_names("train"))


def _search_device(device: str | torch.device) -> torch.device:
    """Resolve ``device`` (:func:`~metantk_zoo.utils.device.resolve_device`; ``cuda`` and ``auto`` are this rank's
    GPU under ``torchrun``), then join the process group (gloo on CPU, NCCL with one GPU per rank)."""
    from .utils.distributed import setup_distributed

    dev = resolve_device(device)
    setup_distributed(dev)
    return dev


def run_search(preset: str, dataset: str, out: str | os.PathLike, *, seed: int = 0, resume: bool = False,
               device: str | torch.device = "auto", backend: str = "hook", share_inputs: bool = True,
               overrides: dict[str, Any] | None = None, overwrite: bool = False, candidate_batch: int | None = None,
               kernel_graph: str = "eager"):
    """Search a cell pair on ``dataset``'s train split and write the search run directory ``out``.

    ``candidate_batch`` (candidates per forward and backward; ``None``: chosen from free memory) and
    ``kernel_graph`` (``eager``, ``cuda-graph`` or ``fx``: each stage's kernel pass recorded once and replayed,
    :mod:`~metantk_zoo.nas.recorded`) change speed, not scores, so they are not part of the run's config and a
    resumed search may use others.

    Everything (preset, config, device, dataset, output folder, resume compatibility) is checked before the first
    write: a refused call changes nothing. ``out`` follows the one overwrite policy
    (:func:`~metantk_zoo.utils.rundir.check_out_dir`): a non-empty folder needs ``resume`` (a search run of the
    same settings) or ``overwrite`` (a folder this tool made). Writes ``config.json`` (before the search), then
    ``genotype.json``, ``search.json``, ``metrics.jsonl`` and, last, ``model.json`` (rank 0 only under
    ``torchrun``); each file is written atomically, so a killed search leaves either no ``model.json`` (resume
    it) or a complete run. The search checkpoints into ``out/checkpoints/``.

    Returns:
        The :class:`~metantk_zoo.nas.SearchResult`.
    """
    from .nas import PRESETS, SearchConfig, search
    from .nas.recorded import check_kernel_graph
    from .utils.distributed import current
    from .version import __version__

    if preset not in PRESETS:
        raise ConfigError(f"unknown search preset {preset!r}; known presets: {', '.join(PRESETS)}")
    cfg = SearchConfig.preset(preset, **(overrides or {}))
    device = str(_search_device(device))  # before any write: a device that is not there is one line
    check_kernel_graph(kernel_graph, torch.device(device))
    if kernel_graph != "eager" and backend != "hook":
        raise ConfigError(f"kernel_graph {kernel_graph!r} records the hook Gram; found backend {backend!r}")
    rank = current().rank
    out = Path(out)
    action = check_out_dir(out, "search", resume=resume, overwrite=overwrite)
    source, n_train_classes = load_search_source(dataset, cfg.resolution)
    options = {"preset": preset, "dataset": dataset, "seed": seed, "device": device, "backend": backend,
               "share_inputs": share_inputs, **cfg.to_dict()}
    options["ops"] = ",".join(cfg.ops)
    _check_search_data(source, cfg)
    stored = _check_search_resume(out, options, cfg, seed) if action == "resume" else None
    if rank == 0:
        claim_out_dir(out, "search", action)
        if stored != encode_nonfinite(options):
            write_json(out / "config.json", {"version": __version__, "command": "search", "config": options})
    result = search(source, cfg, seed=seed, device=device, checkpoint=out / "checkpoints" / "search.json",
                    resume=resume, backend=backend, share_inputs=share_inputs, candidate_batch=candidate_batch,
                    kernel_graph=kernel_graph)
    if rank != 0:
        return result
    g = result.genotype
    write_json(out / "genotype.json", g.to_dict())
    write_json(out / "search.json", {**result.to_dict(), "preset": preset, "dataset": dataset})
    write_jsonl(out / "metrics.jsonl", [
        {"stage": stage["name"], "candidates": len(stage["candidates"]),
         "pruned": [f"{c['cell']}/{c['edge_name']}/{c['op']}" for c in stage["candidates"] if c["pruned"]]}
        for stage in result.rounds])
    write_model_spec(out, "metantk_cell", {"genotype": g.to_dict(), "num_cells": cfg.num_cells},
                     num_classes=n_train_classes)  # last: a search run is complete when model.json is there
    return result


def _check_search_data(source: Any, cfg: Any) -> None:
    """The search's data requirements, checked before anything is written (the search checks them again)."""
    from .errors import DatasetError

    labels = torch.as_tensor(source.labels, dtype=torch.int64)
    if len(labels) == 0:
        raise DatasetError("the search data has no images; check --dataset")
    need = cfg.n_shot + cfg.n_query
    _, counts = torch.unique(labels, return_counts=True)
    enough = int((counts >= need).sum())
    if cfg.method in ("metantk", "metantk-only") and enough < cfg.n_way:
        raise DatasetError(f"the meta-batch needs {cfg.n_way} classes with at least {need} images each "
                           f"({cfg.n_shot} shot + {cfg.n_query} query); the data has {enough} such classes "
                           f"(of {len(counts)}); lower --n-way or use more data")


def _check_search_resume(out: Path, options: dict[str, Any], cfg: Any, seed: int) -> dict[str, Any] | None:
    """Refuse ``--resume`` of a search whose ``config.json`` or checkpoint was made with other settings (reads
    only). Returns the stored options (standard-JSON form), or ``None`` when the folder has no config yet."""
    from .nas import SearchConfig

    stored = None
    if (out / "config.json").is_file():
        data = read_json(out / "config.json", what="search run config")
        stored = data.get("config") if isinstance(data, dict) else None
        if not isinstance(stored, dict):
            raise CheckpointError(f"{out / 'config.json'}: expected a search run config, found {str(data)[:60]!r}")
        mine = encode_nonfinite(options)
        theirs = {k: encode_nonfinite(as_float(v)) if k == "inner_lr_time" else v for k, v in stored.items()}
        diff = sorted(k for k in set(mine) | set(theirs) if k != "device" and mine.get(k) != theirs.get(k))
        if diff:
            shown = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in diff[:3])
            raise ConfigError(f"--resume of {out} with other settings ({shown}); resume with the run's own "
                              f"settings (--config {out / 'config.json'}) or pick a new --out")
        stored = theirs
    ckpt = out / "checkpoints" / "search.json"
    if ckpt.is_file():
        d = read_json(ckpt, what="search checkpoint")
        try:
            same = isinstance(d, dict) and d.get("seed") == seed and SearchConfig.from_dict(d["config"]) == cfg
        except (KeyError, TypeError, ValueError):
            same = False
        if not same:
            raise CheckpointError(f"{ckpt} belongs to another search (other seed or settings) or is corrupt; "
                                  f"resume with the original settings or pick a new --out")
    return stored


# ---------------------------------------------------------------------------------------------------- training
def reseed(transform: Any) -> None:
    """Seed a data-layer transform's own generator from torch's global RNG (checkpointed / seeded by callers)."""
    gen = getattr(transform, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))


class SplitBatches:
    """A :class:`~metantk_zoo.train.BatchSource` over one split: ``[indices] -> (augmented images, labels)``.

    The augmentation's generator is re-seeded from torch's RNG at every batch, so checkpointing torch's RNG state
    is enough to replay it on resume (and DataLoader workers, seeded per epoch, stay deterministic).
    """

    def __init__(self, dataset: Any, labels: np.ndarray, transform: Callable):
        self.dataset, self.labels, self.transform = dataset, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        from .data import load_images

        reseed(self.transform)
        idx = np.asarray(indices, dtype=np.int64)
        return load_images(self.dataset, idx, self.transform), torch.as_tensor(self.labels[idx], dtype=torch.long)


def _batches_builder(fs: Any, cfg: Any, image_size: int) -> tuple[SplitBatches, int]:
    from .data import train_transform

    labels = fs.labels("train")
    classes, dense = np.unique(labels, return_inverse=True)
    return SplitBatches(fs.split("train"), dense.astype(np.int64), train_transform(image_size)), len(classes)


def episode_fn(fs: Any, split: str, n_way: int, n_shot: int, n_query: int, *, seed: int,
               size: int = 84, n_episodes: int = 1000) -> Callable[[int], Episode]:
    """``i -> (x_spt, y_spt, x_qry, y_qry)``: episode ``i`` of ``split`` (a pure function of ``seed`` and ``i``).

    The sampler is the one ``metantk-zoo eval`` uses, so the same seed and shape give the same episodes. Images go
    through the evaluation transform (resize to ``size``, normalise); one batched read per episode.
    """
    from .data import EpisodeSampler, eval_transform, load_images

    sampler = EpisodeSampler(fs.labels(split), n_way, n_shot, n_query, seed=seed, n_episodes=n_episodes,
                             class_names=fs.class_names(split))
    ds, tf = fs.split(split), eval_transform(size)

    def get(i: int) -> Episode:
        ep = sampler.episode(i)
        x = load_images(ds, np.concatenate([ep.support, ep.query]), tf)  # (N*(K+Q), C, H, W)
        ns = len(ep.support)
        return x[:ns], torch.as_tensor(ep.y_support), x[ns:], torch.as_tensor(ep.y_query)

    get.sampler = sampler  # type: ignore[attr-defined]
    return get


def _episodes_builder(fs: Any, cfg: Any, image_size: int):
    """``DATA_BUILDERS['episodes']``: meta-train episodes of ``cfg``'s shape, and the head width ``n_way``."""
    return episode_fn(fs, "train", cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed, size=image_size), cfg.n_way


#: data_kind -> ``(few-shot dataset, method config, image size) -> (data for method.train, num_classes)``
DATA_BUILDERS: dict[str, Callable[[Any, Any, int], tuple[Any, int]]] = {
    "batches": _batches_builder,
    "episodes": _episodes_builder,
}


def _carry_search_records(model: str, out: Path) -> None:
    """Copy a search run's ``genotype.json`` and ``search.json`` into the training run, so that its card and Hub
    repository say where the architecture came from (preset, seed, data fingerprint, search time, device)."""
    src = Path(model)
    if not (_is_path(src) and src.is_dir() and (src / "search.json").is_file()):
        return
    for name in ("genotype.json", "search.json"):
        if (src / name).is_file():
            write_json(out / name, read_json(src / name, what=f"search record {name}"))


def _check_train_resume(out: Path, config: dict[str, Any], model_spec: dict[str, Any]) -> None:
    """Refuse ``--resume`` of a training run made with other settings; reads only. Its ``config.json`` (written
    before the first epoch) must equal ``config``; a run killed before even that is checked by its ``model.json``."""
    import json

    from .train.loop import check_resume_config
    from .utils.io import dumps_json
    from .utils.rundir import MODEL_SPEC, read_model_spec

    check_resume_config(out, config)
    if is_run_dir(out):
        stored, mine = read_model_spec(out), json.loads(dumps_json(model_spec))
        if stored != mine:
            diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
            raise ConfigError(f"--resume of {out} with another model ({', '.join(diff)} differ from its "
                              f"{MODEL_SPEC}); resume with the run's own --model and sizes, or use a new --out")


def training_method(method: str, preset: str | None):
    """The registered :class:`~metantk_zoo.train.TrainingMethod` and its preset (the method's first by default)."""
    from . import meta  # noqa: F401  (registers maml, fomaml, hfmaml, anil, fobmaml)
    from .train import TRAINING_METHODS

    if method not in TRAINING_METHODS:
        raise ConfigError(f"unknown training method {method!r}; known: {', '.join(TRAINING_METHODS)}")
    spec = TRAINING_METHODS[method]
    preset = preset or spec.presets[0]
    if preset not in spec.presets:
        raise ConfigError(f"method {method} has presets {', '.join(spec.presets)}, not {preset!r}")
    return spec, preset


def run_train(model: str, dataset: str, out: str | os.PathLike, *, method: str = "rfs", preset: str | None = None,
              overrides: dict[str, Any] | None = None, num_cells: int | None = None,
              init_channels: int | None = None, image_size: int | None = None,
              device: str | torch.device | None = "auto", resume: bool = False, overwrite: bool = False):
    """Train ``model`` (timm name, genotype or search run) on ``dataset``'s train split into the run directory ``out``.

    Model, dataset, config, device and ``out`` are all checked before the first write (a refused call changes
    nothing); ``out`` follows the one overwrite policy (:func:`~metantk_zoo.utils.rundir.check_out_dir`), and a
    ``resume`` with other settings is refused by the training loop before it writes.

    Returns:
        The method's :class:`~metantk_zoo.train.TrainResult`.
    """
    from .data import load_fewshot
    from .train.loop import run_config

    dev = resolve_device(device)  # before any write
    out = Path(out)
    action = check_out_dir(out, "train", resume=resume, overwrite=overwrite)  # reads only
    spec, preset = training_method(method, preset)
    arch, model_args = resolve_model(model, num_cells, init_channels)
    fs = load_fewshot(dataset)
    probe_model = create_model_checked(arch, num_classes=0, **model_args)
    cells = model_args.get("num_cells", getattr(probe_model, "num_cells", None))
    try:
        cfg = spec.make_config(preset, cells, {k: v for k, v in (overrides or {}).items() if v is not None})
    except TypeError as e:  # an unknown or ill-typed --set field reaching the config dataclass
        given = ", ".join(f"{k}={v!r}" for k, v in (overrides or {}).items() if v is not None)
        raise ConfigError(f"{method} config: a field is unknown or has the wrong type ({given}): "
                          f"{' '.join(str(e).split())}; see `metantk-zoo train --help`") from e
    size = image_size or model_input_size(probe_model)
    data, num_classes = DATA_BUILDERS[spec.data_kind](fs, cfg, size)
    torch.manual_seed(cfg.seed)  # the initialisation is the run's seed's, whatever ran before (issue 16, item 11)
    net = create_model_checked(arch, num_classes=num_classes, **model_args)
    extra = {"model": {"architecture": arch, "model_args": model_args, "num_classes": num_classes},
             "dataset": {"spec": fs.spec, "fingerprint": fs.fingerprint, "split": "train"},
             "preset": preset, "image_size": size}
    if action == "resume":  # the same settings, checked before any write, checkpoint or not
        _check_train_resume(out, run_config(method, cfg, extra), extra["model"])
    if int(os.environ.get("RANK", "0")) == 0:
        claim_out_dir(out, "train", action)
    if int(os.environ.get("RANK", "0")) == 0 and (action != "resume" or not is_run_dir(out)):
        write_model_spec(out, arch, model_args, num_classes)
        _carry_search_records(model, out)
    return spec.train(net, data, cfg, run_dir=out, architecture=arch, resume=resume, device=dev,
                      extra_config=extra)


# ---------------------------------------------------------------------------------------------------- evaluation
class SplitImages:
    """:class:`~metantk_zoo.fewshot.ImageSource` over one split: plain (eval) or augmented (RFS A) images."""

    def __init__(self, dataset: Any, size: int):
        from .data import eval_transform, train_transform

        self.dataset, self.plain, self.augment = dataset, eval_transform(size), train_transform(size)

    def load(self, indices, augment: bool) -> torch.Tensor:
        from .data import load_images

        if augment:
            reseed(self.augment)  # seeded through torch's RNG, which evaluate_fewshot seeds
        return load_images(self.dataset, np.asarray(indices, dtype=np.int64), self.augment if augment else self.plain)


def run_eval(model: torch.nn.Module, dataset: str, *, split: str = "test", protocol: str = "paper",
             image_size: int | None = None, device: str | torch.device | None = "auto",
             model_name: str | None = None, **overrides: Any):
    """Load ``dataset``, draw the protocol's episodes (seeded) and evaluate ``model`` with the linear probe.

    Returns:
        The :class:`~metantk_zoo.fewshot.EvalResult` (mean accuracy and 95% CI over episodes).
    """
    from .data import EpisodeSampler, load_fewshot
    from .fewshot import Episodes, evaluate_fewshot, protocol_config

    dev = resolve_device(device)
    cfg = protocol_config(protocol, **overrides)
    fs = load_fewshot(dataset)
    sampler = EpisodeSampler(fs.labels(split), cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed,
                             n_episodes=cfg.n_episodes, class_names=fs.class_names(split))
    manifest = sampler.manifest(dataset=fs.spec, fingerprint=fs.fingerprint, split=split)
    eps = manifest.episodes
    episodes = Episodes(
        support=torch.as_tensor(np.stack([e.support for e in eps])),
        y_support=torch.as_tensor(np.stack([e.y_support for e in eps])),
        query=torch.as_tensor(np.stack([e.query for e in eps])),
        y_query=torch.as_tensor(np.stack([e.y_query for e in eps])),
        manifest_hash=manifest.sha256,
    )
    size = image_size or model_input_size(model)
    result = evaluate_fewshot(model, SplitImages(fs.split(split), size), episodes, cfg, device=dev)
    result.model, result.dataset, result.split = model_name, fs.spec, split
    return result


def run_adapted_eval(model: torch.nn.Module, model_ref: str, dataset: str, *, split: str = "test",
                     protocol: str = "rfs", image_size: int | None = None,
                     device: str | torch.device | None = "auto", **overrides: Any):
    """Few-shot accuracy with the meta-learning algorithm's own adaptation as the classifier.

    Episodes are drawn exactly as :func:`run_eval` draws them for the same protocol, seed and shape (the manifest
    hash is the same), so the result compares episode for episode with the linear probe. The method, inner lr and
    test-time inner steps are the run's (``config.json``) when ``model_ref`` is a meta-training run directory, else
    MAML's (full adaptation, lr 0.01, 10 steps).
    """
    from .data import load_fewshot
    from .fewshot import EvalResult, mean_confidence_interval, protocol_config
    from .meta import METHODS, adapted_accuracies

    dev = resolve_device(device)
    cfg = protocol_config(protocol, **overrides)
    run_cfg = read_json(Path(model_ref) / "config.json", what="run config") if is_run_dir(model_ref) else {}
    method = run_cfg.get("method") if run_cfg.get("method") in METHODS else "maml"
    saved = run_cfg.get("config", {}) if method == run_cfg.get("method") else {}
    lr, steps = saved.get("inner_lr", 0.01), saved.get("inner_steps_test", 10)
    fs = load_fewshot(dataset)
    get = episode_fn(fs, split, cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed, n_episodes=cfg.n_episodes,
                     size=image_size or model_input_size(model))
    manifest = get.sampler.manifest(dataset=fs.spec, fingerprint=fs.fingerprint, split=split)
    model.to(dev)
    episodes = (get(i) for i in progress(range(cfg.n_episodes), desc="eval (adapt)", unit="episode"))
    accs = adapted_accuracies(model, episodes, method=method, lr=lr, steps=steps, device=dev)
    mean, ci = mean_confidence_interval(accs)
    return EvalResult(mean=mean, ci95=ci, n_episodes=cfg.n_episodes, n_way=cfg.n_way, n_shot=cfg.n_shot,
                      n_query=cfg.n_query, n_aug_support=0,
                      protocol=f"{protocol}+adapt:{method}(lr={lr},steps={steps})",
                      manifest_hash=manifest.sha256, model=model_ref, dataset=fs.spec, split=split,
                      accuracies=accs.tolist())


# ---------------------------------------------------------------------------------------------------- card, export
def write_genotype_card(source: str | os.PathLike, out: str | os.PathLike) -> dict[str, str]:
    """Write the genotype card of ``source`` (zoo name, genotype, ``genotype.json`` or run) into ``out``."""
    from .hub import card_data, write_card

    paths = write_card(card_data(source), out)
    return {k: str(v) for k, v in paths.items()}


def export_to_folder(run: str | os.PathLike, local_dir: str | os.PathLike, *, repo_id: str = "ORG/NAME",
                     overwrite: bool = False, option: str = "--local-dir") -> list[str]:
    """Export ``run`` as a Hub repository folder ``local_dir`` under the one overwrite policy
    (:func:`~metantk_zoo.utils.rundir.check_out_dir`): a missing or empty folder is written; an existing non-empty
    one is refused unless ``overwrite`` and it is a folder this tool made (an export). The new export is built and
    checked in a staging sibling first, so a bad run or a kill leaves the previous folder as it was.

    Returns:
        The repository's file names.

    Raises:
        ConfigError: ``local_dir`` cannot be used (the message says why and what to do).
        CheckpointError: the run cannot be exported (nothing is written then).
    """
    import shutil

    from .hub import export_run
    from .utils.io import make_staging_dir, replace_dir

    local_dir = Path(local_dir)
    action = check_out_dir(local_dir, "export", overwrite=overwrite, option=option)
    if action != "overwrite":
        return export_run(run, local_dir, repo_id=repo_id)
    staging = make_staging_dir(local_dir.parent, f".{local_dir.name}.export-new-")
    try:
        files = export_run(run, staging / "repo", repo_id=repo_id)
        replace_dir(staging / "repo", local_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files


def export_and_check(run: str | os.PathLike, local_dir: str | os.PathLike, *,
                     overwrite: bool = False) -> dict[str, Any]:
    """Export ``run`` as a Hub repository folder (:func:`export_to_folder`) and load it back through
    ``timm.create_model('local-dir:...')``.

    Raises:
        CheckpointError: the reloaded model's logits differ from the run's.
    """
    import timm

    files = export_to_folder(run, local_dir, overwrite=overwrite)
    original = create_model_from_run(run).eval()
    reloaded = timm.create_model(f"local-dir:{local_dir}", pretrained=True).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # any size: the net is fully conv
    with torch.no_grad():
        same = torch.equal(original(x), reloaded(x))
    if not same:
        raise CheckpointError(f"the export in {local_dir} does not reproduce the trained model's logits")
    return {"local_dir": str(local_dir), "files": sorted(files), "logits_equal": same}


# ---------------------------------------------------------------------------------------------------- demo
DEMO_STATE_FILE = "demo.json"
DEMO_STAGES = ("search", "random", "train-search", "train-random", "eval", "card", "export")
#: the rows of the demo's table: both trained networks, and the searched one untrained (same episodes)
DEMO_ROWS = {"search": "MetaNTK-NAS (tiny)", "random": "random cell", "untrained": "MetaNTK-NAS, untrained"}


class DemoStages:
    """The demo's completed stages and their results, persisted atomically after each one."""

    def __init__(self, out: Path, resume: bool, settings: dict[str, Any], log: Callable[[str], None] = logger.info,
                 *, action: str | None = None):
        self.path = out / DEMO_STATE_FILE
        self.log = log
        if self.path.exists() and not resume and action != "overwrite":
            raise CheckpointError(f"{out} already holds a demo run; add --resume to continue it or pick another --out")
        self.state: dict[str, Any] = {"settings": settings, "done": {}}
        if resume and self.path.exists():
            state = read_json(self.path, what="demo state")
            if not isinstance(state, dict) or not isinstance(state.get("done"), dict):
                raise CheckpointError(f"{self.path}: expected a demo state with 'settings' and 'done', found "
                                      f"{str(state)[:60]!r}; pick another --out")
            if state.get("settings") != settings:
                theirs = state.get("settings") if isinstance(state.get("settings"), dict) else {}
                diff = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
                shown = ", ".join(f"{k}: {theirs.get(k)!r} -> {settings.get(k)!r}" for k in diff[:3])
                raise CheckpointError(f"--resume of {out} with other settings ({shown}); resume with the demo's own "
                                      f"options or pick another --out")
            self.state = state
        # everything is checked: from here on the demo writes
        claim_out_dir(out, "demo", action or ("resume" if resume else "new"))
        write_json(self.path, self.state)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if name in self.state["done"]:
            self.log(f"[demo] {name}: done earlier, skipped")
            return self.state["done"][name]["result"]
        self.log(f"[demo] {name} ...")
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            result = fn()
        seconds = time.perf_counter() - start
        self.state["done"][name] = {"seconds": round(seconds, 1), "result": result}
        write_json(self.path, self.state)
        self.log(f"[demo] {name}: {seconds:.1f} s")
        return result


def _demo_eval(trained: dict[str, Path], dataset: str, seed: int, episodes: int, n_query: int, image_size: int,
               device: str | torch.device) -> dict[str, Any]:
    """5-way 1- and 5-shot accuracies of every demo row, on identical episodes."""
    from .fewshot import save_eval_result

    results: dict[str, Any] = {}
    for name in DEMO_ROWS:
        if name == "untrained":  # the searched architecture with fresh weights: what training added
            torch.manual_seed(seed)
            net = create_model_from_run(trained["search"], pretrained=False)
        else:
            net = load_backbone(str(trained[name]))
        for shot in (1, 5):
            r = run_eval(net, dataset, protocol="rfs", image_size=image_size, device=device, model_name=name,
                         n_shot=shot, n_query=n_query, n_episodes=episodes, seed=seed)
            results[f"{name}/{shot}"] = r.to_dict()
            if name != "untrained":
                save_eval_result(trained[name] / "eval.json", r)
    hashes = {k.split("/")[1]: set() for k in results}
    for k, r in results.items():
        hashes[k.split("/")[1]].add(r["manifest_hash"])
    assert all(len(h) == 1 for h in hashes.values()), "every row must see identical episodes"
    return results


def run_demo(out: str | os.PathLike, *, resume: bool = False, dataset: str = "synthetic:size=32", seed: int = 0,
             epochs: int = 10, init_channels: int = 16, num_cells: int = 3, episodes: int = 300, n_query: int = 15,
             image_size: int = 32, device: str | torch.device | None = "auto",
             log: Callable[[str], None] = logger.info, overwrite: bool = False) -> dict[str, Any]:
    """The main job end to end: search, a random-cell baseline, RFS training of both, evaluation, card, export.

    Each stage is recorded in ``out/demo.json`` when done so that ``resume`` skips it (the search and training
    stages resume from their own checkpoints when they were interrupted part-way). ``out`` follows the one
    overwrite policy (:func:`~metantk_zoo.utils.rundir.check_out_dir`): a non-empty folder needs ``resume`` (a demo
    run with the same settings) or ``overwrite`` (a folder this tool made); all is checked before the first write.

    Returns:
        The summary written to ``out/summary.json``.
    """
    import json

    device = str(resolve_device(device))  # before any write
    out = Path(out)
    action = check_out_dir(out, "demo", resume=resume, overwrite=overwrite)  # reads only
    settings = dict(dataset=dataset, seed=seed, epochs=epochs, init_channels=init_channels, num_cells=num_cells,
                    episodes=episodes, n_query=n_query, image_size=image_size, device=device)
    stages = DemoStages(out, resume, settings, log, action=action)
    runs = {"search": out / "search", "random": out / "random"}
    trained = {"search": out / "train_search", "random": out / "train_random"}

    def search_stage(name: str, method: str) -> dict[str, Any]:
        run_search("tiny", dataset, runs[name], seed=seed, resume=resume or runs[name].exists(), device=device,
                   overrides={"method": method})
        return {"run": str(runs[name]), "genotype": read_json(runs[name] / "genotype.json")}

    def train_stage(name: str) -> dict[str, Any]:
        decay = sorted({max(1, round(0.7 * epochs)), max(1, round(0.9 * epochs))})  # RFS decays at 60%/80% of 100
        result = run_train(model=str(runs[name]), dataset=dataset, out=trained[name], preset="rfs-mini",
                           overrides={"epochs": epochs, "seed": seed, "lr_decay_epochs": decay},
                           num_cells=num_cells, init_channels=init_channels, image_size=image_size, device=device,
                           resume=trained[name].exists())
        log(json.dumps({"run_dir": str(trained[name]), "epochs": result.epochs,
                        "resumed_from": result.resumed_from, **{k: result.final.get(k) for k in ("loss", "acc")}}))
        return {"run": str(trained[name])}

    for name, method in (("search", "metantk"), ("random", "random")):
        stages.run(name, lambda name=name, method=method: search_stage(name, method))
    for name in ("search", "random"):
        stages.run(f"train-{name}", lambda name=name: train_stage(name))
    results = stages.run("eval", lambda: _demo_eval(trained, dataset, seed, episodes, n_query, image_size, device))
    card = stages.run("card", lambda: write_genotype_card(trained["search"], out / "card"))
    # overwrite: a kill after the export was published but before demo.json recorded it leaves a complete export
    export = stages.run("export", lambda: export_and_check(trained["search"], out / "hub_export", overwrite=True))

    summary = {
        "out": str(out),
        "device": device,
        "genotypes": {name: read_json(runs[name] / "genotype.json") for name in runs},
        "results": {
            name: {f"5way_{shot}shot": {"mean": results[f"{name}/{shot}"]["mean"],
                                        "ci95": results[f"{name}/{shot}"]["ci95"]} for shot in (1, 5)}
            for name in DEMO_ROWS
        },
        "episodes": episodes,
        "manifest_hashes": {str(shot): results[f"search/{shot}"]["manifest_hash"] for shot in (1, 5)},
        "card": card,
        "export": export,
        "seconds": {k: v["seconds"] for k, v in stages.state["done"].items()},
    }
    write_json(out / "summary.json", summary)
    return summary
