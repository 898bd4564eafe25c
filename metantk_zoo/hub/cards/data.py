"""Card data: what a genotype is, where it came from (provenance), what it costs and how well it does.

A card gathers, for any genotype (a zoo name, genotype text/JSON, a ``genotype.json`` or a run directory), the
cell pair, the registered timm architectures that build it, parameters and multiply-adds at 84x84 for 5 and 8
cells (:mod:`metantk_zoo.models.complexity`), its provenance (the paper's script and example, or the search run:
preset, seed, data fingerprint, search time, device) and the few-shot results of a run.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import CheckpointError, GenotypeError
from ...genotype import Genotype
from ...models._registry import ZOO_ENTRIES
from ...models.complexity import complexity
from ...models.genotypes import NAMED, PUBLISHED
from ...utils.io import read_json

__all__ = ["CardData", "card_data"]


@dataclass
class CardData:
    """Everything a card shows, as plain data (``to_dict`` is the card's JSON).

    Attributes:
        name: card title, e.g. ``mini5_a`` or a run folder's name.
        genotype: the cell pair.
        architectures: registered timm names that build this genotype (may be empty).
        provenance: ``{"kind": "paper" | "search" | "user", ...}`` with the fields of its kind.
        complexity: one row per cell count: ``num_cells``, ``params``, ``macs`` (84x84 input, 64-way head).
        results: few-shot results (the ``eval.json`` rows of a run); empty when there are none.
        model: the run's ``model.json`` (architecture, model_args, num_classes) when built from a run.
    """

    name: str
    genotype: Genotype
    architectures: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    complexity: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "genotype": self.genotype.to_dict(),
            "genotype_darts": self.genotype.to_darts(),
            "architectures": list(self.architectures),
            "provenance": self.provenance,
            "complexity": self.complexity,
            "results": self.results,
            "model": self.model,
        }


def _architectures_of(key: str) -> list[str]:
    return [name for name, entry in ZOO_ENTRIES.items() if entry[0] == key and name != "metantk_nano"]


def _zoo_card(key: str) -> CardData:
    pub = next(p for p in PUBLISHED if p.key == key)
    prov = {"kind": "paper", "source": pub.source, "dataset": pub.dataset, "num_cells": pub.num_cells,
            "kernel": pub.kernel, "text": pub.text}
    return CardData(key, pub.genotype, _architectures_of(key), prov)


def _search_provenance(run: Path) -> dict[str, Any]:
    prov: dict[str, Any] = {"kind": "search", "run": run.name}
    search = read_json(run / "search.json", what="search record") if (run / "search.json").is_file() else {}
    config = read_json(run / "config.json", what="run config") if (run / "config.json").is_file() else {}
    scfg = search.get("config", {}) if isinstance(search, dict) else {}
    for key, value in (
        # a training run keeps its search's search.json beside its own config.json: the search record wins
        ("preset", search.get("preset") or scfg.get("preset") or scfg.get("name") or config.get("preset")),
        ("seed", search.get("seed", config.get("seed"))),
        ("data_fingerprint", search.get("data_fingerprint") or config.get("data_fingerprint")),
        ("search_time_s", search.get("wall_time")),
        ("device", search.get("device") or config.get("device")),
        ("method", scfg.get("method")),
        ("kernel", scfg.get("kernel")),
        ("num_cells", scfg.get("num_cells")),
        ("dataset", search.get("dataset") or scfg.get("dataset") or config.get("dataset")),
        ("versions", search.get("versions")),
    ):
        if value not in (None, "", {}):
            prov[key] = value
    return prov


def _genotype_of_run(run: Path, spec: dict[str, Any] | None) -> Genotype:
    if (run / "genotype.json").is_file():
        return Genotype.coerce(read_json(run / "genotype.json", what="genotype"))
    if spec is not None:
        args = spec.get("model_args", {})
        if args.get("genotype") is not None:
            return Genotype.coerce(args["genotype"])
        key = ZOO_ENTRIES.get(spec.get("architecture", ""), (None,))[0]
        if key is not None:
            return NAMED[key]
    raise CheckpointError(f"{run}: no genotype.json and model.json names no genotype")


def card_data(source: str | os.PathLike | Genotype, *, with_complexity: bool = True) -> CardData:
    """Gather a card from a zoo name, genotype text/JSON, a ``genotype.json`` path or a run directory.

    Args:
        source: ``metantk_cell5`` / ``mini5_a`` (zoo), ``Genotype(...)`` or JSON text, a file holding a genotype,
            a run directory (``model.json`` and/or ``genotype.json``, optional ``search.json``, ``eval.json``),
            or a :class:`Genotype`.
        with_complexity: count parameters and multiply-adds (5 and 8 cells at 84x84).

    Raises:
        GenotypeError: text that is not a genotype or a zoo name.
        CheckpointError: a run directory or file that cannot be read.
    """
    if isinstance(source, Genotype):
        data = CardData("genotype", source, provenance={"kind": "user"})
    else:
        text = str(source)
        path = Path(text)
        key = ZOO_ENTRIES[text][0] if text in ZOO_ENTRIES else (text if text in NAMED else None)
        is_text = text.lstrip().startswith(("Genotype", "{"))
        if key is not None:
            data = _zoo_card(key)
        elif text in ZOO_ENTRIES:
            raise GenotypeError(f"{text} has no fixed genotype; give a genotype, a genotype.json or a run directory")
        elif is_text:
            data = CardData("genotype", Genotype.parse(text), provenance={"kind": "user"})
        elif path.is_dir():
            data = _run_card(path)
        elif path.is_file():
            raw = path.read_text()
            try:
                genotype = Genotype.coerce(json.loads(raw))
            except json.JSONDecodeError:
                genotype = Genotype.parse(raw)
            data = CardData(path.stem, genotype, provenance={"kind": "user", "file": path.name})
        else:
            raise GenotypeError(
                f"{text!r} is neither a zoo name ({', '.join(n for n, e in ZOO_ENTRIES.items() if e[0])}), "
                "genotype text/JSON, a genotype.json file nor a run directory"
            )
    if not data.architectures:
        data.architectures = [n for n, e in ZOO_ENTRIES.items() if e[0] and NAMED[e[0]] == data.genotype
                              and n != "metantk_nano"]
    if with_complexity:
        data.complexity = complexity(data.genotype)
    return data


def _run_card(run: Path) -> CardData:
    from ...utils.rundir import is_run_dir, read_model_spec

    spec = read_model_spec(run) if is_run_dir(run) else None
    genotype = _genotype_of_run(run, spec)
    if (run / "search.json").is_file() or (run / "genotype.json").is_file():
        prov = _search_provenance(run)
    else:
        key = ZOO_ENTRIES.get(spec["architecture"], (None,))[0] if spec else None
        prov = _zoo_card(key).provenance if key else {"kind": "user"}
        prov = {**prov, "run": run.name}
    results = []
    if (run / "eval.json").is_file():
        rows = read_json(run / "eval.json", what="evaluation results")
        results = rows if isinstance(rows, list) else [rows]
    return CardData(run.name, genotype, [], prov, results=results, model=spec)
