"""``metantk-zoo train``: wire a dataset spec and a model (timm name or genotype) to a training method.

Methods come from :data:`metantk_zoo.train.TRAINING_METHODS`; ``DATA_BUILDERS`` maps a method's ``data_kind`` to the
function that turns the loaded few-shot dataset into what the method's ``train`` takes. Another CLI module can
register a method and, if needed, a data builder, before this command runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from ..errors import ConfigError
from ..io import read_json, write_json
from ..rundir import is_run_dir, write_model_spec
from .. import meta as _meta  # noqa: F401  (registers maml, fomaml, hfmaml, anil, fobmaml)
from ..train import TRAINING_METHODS
from ._app import app
from ._options import ConfigOption

__all__ = ["train_command", "resolve_model", "DATA_BUILDERS", "model_input_size"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- models
def resolve_model(model: str, num_cells: int | None = None, init_channels: int | None = None) -> tuple[str, dict]:
    """``--model`` -> (timm architecture, model_args). Accepts a timm name, genotype text (DARTS or JSON), a
    ``genotype.json`` file or a search run directory holding one (-> ``metantk_cell`` with that genotype)."""
    import timm

    import metantk_zoo  # noqa: F401  (registers the zoo)
    from ..genotype import Genotype

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


def _carry_search_records(model: str, out: Path) -> None:
    """Copy a search run's ``genotype.json`` and ``search.json`` into the training run, so that its card and Hub
    repository say where the architecture came from (preset, seed, data fingerprint, search time, device)."""
    src = Path(model)
    if not (_is_path(src) and src.is_dir() and (src / "search.json").is_file()):
        return
    for name in ("genotype.json", "search.json"):
        if (src / name).is_file():
            write_json(out / name, read_json(src / name, what=f"search record {name}"))


def _is_path(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # genotype text longer than a file name
        return False


def model_input_size(model: torch.nn.Module, default: int = 84) -> int:
    """The square input side from the model's ``pretrained_cfg`` (84 for the zoo)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or (3, default, default)
    return int(size[-1])


# ---------------------------------------------------------------------------------------------------- data
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
        from ..data import load_images

        reseed(self.transform)
        idx = np.asarray(indices, dtype=np.int64)
        return load_images(self.dataset, idx, self.transform), torch.as_tensor(self.labels[idx], dtype=torch.long)


def reseed(transform: Any) -> None:
    """Seed a data-layer transform's own generator from torch's global RNG (checkpointed / seeded by callers)."""
    gen = getattr(transform, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))


def _batches_builder(fs: Any, cfg: Any, image_size: int) -> tuple[SplitBatches, int]:
    from ..data import train_transform

    labels = fs.labels("train")
    classes, dense = np.unique(labels, return_inverse=True)
    return SplitBatches(fs.split("train"), dense.astype(np.int64), train_transform(image_size)), len(classes)


#: data_kind -> ``(few-shot dataset, method config, image size) -> (data for method.train, num_classes)``
DATA_BUILDERS: dict[str, Callable[[Any, Any, int], tuple[Any, int]]] = {"batches": _batches_builder}


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects FIELD=VALUE, found {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


# ---------------------------------------------------------------------------------------------------- command
@app.command("train")
def train_command(
    model: Annotated[str, typer.Option("--model", help="timm model name, or a genotype (DARTS/JSON text, "
                                                       "genotype.json, or a search run directory).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset spec, e.g. synthetic or synthetic:size=32.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or continue with --resume).")],
    method: Annotated[str, typer.Option("--method", help="Training method: "
                                        f"{', '.join(TRAINING_METHODS) or 'rfs'} (registry TRAINING_METHODS).")] = "rfs",
    preset: Annotated[str | None, typer.Option("--preset", help="Recipe preset, e.g. rfs-mini, rfs-tiered.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override the preset's epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the initial learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Override the global batch size.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Data-order and augmentation seed.")] = None,
    num_workers: Annotated[int | None, typer.Option("--workers", help="Data-loading worker processes.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config field, FIELD=VALUE (JSON "
                                                  "value), repeatable: --set lr_decay_epochs=[30,40]")] = None,
    num_cells: Annotated[int | None, typer.Option("--num-cells", help="Cells of a metantk model.")] = None,
    init_channels: Annotated[int | None, typer.Option("--init-channels", help="Width C of a metantk model.")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Training resolution (default: the "
                                                   "model's input size, 84 for the zoo).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if present).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    config: ConfigOption = None,
) -> None:
    """Train a backbone on the meta-train classes and write a run directory (config, metrics, plot, weights).

    Example: metantk-zoo train --model metantk_cell5 --dataset synthetic --preset rfs-mini --epochs 10 --out runs/c5
    """
    import timm

    from ..data import load_fewshot

    if method not in TRAINING_METHODS:
        raise typer.BadParameter(f"unknown method {method!r}; known: {', '.join(TRAINING_METHODS)}",
                                 param_hint="--method")
    spec = TRAINING_METHODS[method]
    preset = preset or spec.presets[0]
    if preset not in spec.presets:
        raise typer.BadParameter(f"method {method} has presets {', '.join(spec.presets)}, not {preset!r}",
                                 param_hint="--preset")
    arch, model_args = resolve_model(model, num_cells, init_channels)
    overrides = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "num_workers": num_workers,
                 **_parse_sets(set_ or [])}
    fs = load_fewshot(dataset)
    probe_model = timm.create_model(arch, num_classes=0, **model_args)
    cells = model_args.get("num_cells", getattr(probe_model, "num_cells", None))
    cfg = spec.make_config(preset, cells, {k: v for k, v in overrides.items() if v is not None})
    size = image_size or model_input_size(probe_model)
    data, num_classes = DATA_BUILDERS[spec.data_kind](fs, cfg, size)
    net = timm.create_model(arch, num_classes=num_classes, **model_args)
    if int(os.environ.get("RANK", "0")) == 0 and (not resume or not is_run_dir(out)):
        write_model_spec(out, arch, model_args, num_classes)
        _carry_search_records(model, out)
    extra = {"model": {"architecture": arch, "model_args": model_args, "num_classes": num_classes},
             "dataset": {"spec": fs.spec, "fingerprint": fs.fingerprint, "split": "train"},
             "preset": preset, "image_size": size}
    result = spec.train(net, data, cfg, run_dir=out, architecture=arch, resume=resume, device=device,
                        extra_config=extra)
    final = result.final
    typer.echo(json.dumps({"run_dir": str(out), "epochs": result.epochs, "resumed_from": result.resumed_from,
                           **{k: final.get(k) for k in ("loss", "acc")}}))
