"""Genotype cards: what a genotype is, where it came from, what it costs and how well it does.

A card gathers, for any genotype (a zoo name, genotype text/JSON, a ``genotype.json`` or a run directory):
the cell pair drawn as a diagram (SVG, and PNG drawn with Pillow: no graphviz), the genotype in both notations
(canonical JSON and the published DARTS text), parameters and multiply-adds at 84x84 for 5 and 8 cells, its
provenance (the paper's script and example, or the search run: preset, seed, data fingerprint, search time,
device) and, when there are results, the few-shot table with protocol and confidence intervals. JSON is for
machines, Markdown for people; the Hub model card (``hub.py``) embeds the Markdown body.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, GenotypeError
from ..genotype import Genotype
from ..models._registry import ZOO_ENTRIES
from ..models.genotypes import NAMED, PUBLISHED
from ..models.network import FewShotNetwork
from ..utils.io import atomic_write, read_json, write_json

__all__ = [
    "CardData",
    "card_data",
    "count_macs",
    "complexity",
    "render_markdown",
    "render_results_table",
    "cell_diagram_svg",
    "cell_diagram_png",
    "write_card",
    "CARD_FILES",
]

logger = logging.getLogger(__name__)

#: The files :func:`write_card` writes into a card folder.
CARD_FILES = ("card.md", "card.json", "cells.svg", "cells.png")
PAPER = "MetaNTK-NAS (Wang et al., CVPR 2022, [arXiv:2203.09137](https://arxiv.org/abs/2203.09137))"


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


# --------------------------------------------------------------------------------------------- cost
def count_macs(model: torch.nn.Module, input_size: tuple[int, ...] = (1, 3, 84, 84)) -> int:
    """Multiply-adds of one forward pass per image, counted with forward hooks on Conv2d and Linear.

    A convolution costs ``out_elements * in_chs / groups * kh * kw``, a linear layer ``in * out`` per row;
    BatchNorm, pooling and additions are not counted (the usual convention of ptflops / thop).
    Runs on the ``meta`` device when the model is there (no memory, no arithmetic).
    """
    total = 0

    def conv_hook(mod: torch.nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: torch.nn.Linear, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    device = next(model.parameters()).device
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=device))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total


def complexity(genotype: Genotype, cells: tuple[int, ...] = (5, 8), num_classes: int = 64) -> list[dict[str, Any]]:
    """Parameters and multiply-adds at 84x84 of the evaluation network (C=48) for each cell count."""
    return [dict(row) for row in _complexity(genotype, tuple(cells), num_classes)]


@functools.lru_cache(maxsize=64)
def _complexity(genotype: Genotype, cells: tuple[int, ...], num_classes: int) -> tuple[dict[str, Any], ...]:
    rows = []
    for num_cells in cells:
        with torch.device("meta"):
            model = FewShotNetwork(genotype, num_cells=num_cells, init_channels=48, num_classes=num_classes)
        rows.append({"num_cells": num_cells, "init_channels": 48, "num_classes": num_classes, "input_size": 84,
                     "params": sum(p.numel() for p in model.parameters()), "macs": count_macs(model)})
    return tuple(rows)


# --------------------------------------------------------------------------------------------- gathering
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
    from ..utils.rundir import is_run_dir, read_model_spec

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


# --------------------------------------------------------------------------------------------- Markdown
def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_results_table(results: list[dict[str, Any]]) -> str:
    """Few-shot results as a Markdown table (accuracy ± 95% CI, in percent)."""
    lines = ["| dataset | split | protocol | setting | episodes | accuracy (%) | 95% CI (%) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        episodes = r.get("n_episodes", r.get("episodes", "?"))
        setting = f"{r.get('n_way', '?')}-way {r.get('n_shot', '?')}-shot, {r.get('n_query', '?')} queries"
        lines.append(f"| {r.get('dataset') or '-'} | {r.get('split') or '-'} | {r.get('protocol', '?')} | {setting} "
                     f"| {episodes} | {100 * float(r['mean']):.2f} | ± {100 * float(r['ci95']):.2f} |")
    formulas = sorted({r["ci_formula"] for r in results if r.get("ci_formula")})
    note = f"\n\nConfidence interval: {'; '.join(formulas)}." if formulas else ""
    hashes = sorted({r["manifest_hash"] for r in results if r.get("manifest_hash")})
    if hashes:
        note += f" Episode manifest hash(es): {', '.join(f'`{h[:16]}`' for h in hashes)}."
    return "\n".join(lines) + note


def _provenance_md(prov: dict[str, Any]) -> str:
    kind = prov.get("kind")
    if kind == "paper":
        rows = [("source", prov["source"]), ("search dataset", prov.get("dataset")),
                ("cells searched", prov.get("num_cells")), ("MetaNTK", prov.get("kernel"))]
        out = "Published genotype, " + PAPER + " / MetaNAS.\n\n"
    elif kind == "search":
        rows = [("run", prov.get("run")), ("preset", prov.get("preset")), ("seed", prov.get("seed")),
                ("method", prov.get("method")), ("kernel", prov.get("kernel")),
                ("cells searched", prov.get("num_cells")), ("dataset", prov.get("dataset")),
                ("data fingerprint", f"`{prov['data_fingerprint']}`" if prov.get("data_fingerprint") else None),
                ("search time", f"{prov['search_time_s']:.1f} s" if prov.get("search_time_s") is not None else None),
                ("device", prov.get("device"))]
        out = "Searched with metantk-zoo (training-free MetaNTK-NAS search).\n\n"
    else:
        rows = [("file", prov.get("file")), ("run", prov.get("run"))]
        out = "Genotype given by the user.\n\n"
    rows = [(k, v) for k, v in rows if v not in (None, "")]
    if rows:
        out += "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return out.rstrip()


def render_markdown(data: CardData, *, svg: str | None = "cells.svg", png: str | None = None,
                    heading_level: int = 1) -> str:
    """The card as Markdown; the diagram is embedded by relative path (``svg`` or ``png``)."""
    h = "#" * heading_level
    g = data.genotype
    parts = [f"{h} Genotype card: {data.name}"]
    if data.architectures:
        parts.append("timm architectures: " + ", ".join(f"`{a}`" for a in data.architectures))
    image = svg or png
    if image:
        parts.append(f"![normal and reduction cells of {data.name}]({image})")
    parts.append(
        f"{h}# Cells\n\nEach cell has two inputs, c_{{k-2}} and c_{{k-1}}, and three nodes; each node sums two ops on "
        "two earlier states, and the cell output concatenates the three nodes.\n\n"
        + "| cell | node | op (input) | op (input) |\n|---|---|---|---|\n"
        + "\n".join(
            f"| {cell} | {n} | `{a[0]}` ({_input_name(a[1])}) | `{b[0]}` ({_input_name(b[1])}) |"
            for cell, nodes in (("normal", g.normal), ("reduction", g.reduce))
            for n, (a, b) in enumerate(nodes)
        )
    )
    parts.append(f"{h}# Genotype\n\nDARTS notation (as published):\n\n```python\n{g.to_darts()}\n```\n\n"
                 f"JSON (`model_args.genotype` on the Hub, `genotype.json` in runs):\n\n```json\n{g.to_json()}\n```")
    if data.complexity:
        rows = "\n".join(f"| {r['num_cells']} | {r['init_channels']} | {_fmt_int(r['params'])} | "
                         f"{r['macs'] / 1e6:,.1f} M |" for r in data.complexity)
        parts.append(f"{h}# Cost\n\nEvaluation network at 84x84 with a {data.complexity[0]['num_classes']}-way head "
                     "(multiply-adds counted on Conv2d and Linear layers):\n\n"
                     f"| cells | C | parameters | multiply-adds |\n|---|---|---|---|\n{rows}")
    parts.append(f"{h}# Provenance\n\n{_provenance_md(data.provenance)}")
    if data.results:
        parts.append(f"{h}# Few-shot results\n\n{render_results_table(data.results)}")
    return "\n\n".join(parts) + "\n"


def _input_name(idx: int) -> str:
    return ("c_{k-2}", "c_{k-1}")[idx] if idx < 2 else f"node {idx - 2}"


# --------------------------------------------------------------------------------------------- diagram
# One layout, two renderers (SVG text and Pillow PNG): inputs on the left, nodes on a diagonal, output right.
_OP_COLOURS = {
    "skip_connect": "#7f7f7f",
    "sep_conv_3x3": "#1f77b4",
    "dil_conv_3x3": "#2ca02c",
    "conv_3x3": "#d62728",
    "conv_1x5_5x1": "#9467bd",
    "max_pool_3x3BN": "#ff7f0e",
    "avg_pool_3x3BN": "#8c564b",
}
_PANEL_W, _PANEL_H, _R = 640, 330, 24


def _layout(genotype: Genotype, which: str, x0: int) -> dict[str, Any]:
    nodes = genotype.normal if which == "normal" else genotype.reduce
    # zig-zag node positions: no edge passes through a node it does not touch
    pos = {0: (x0 + 60, 95), 1: (x0 + 60, 255), 2: (x0 + 225, 75), 3: (x0 + 335, 255), 4: (x0 + 475, 150)}
    out = (x0 + 570, 285)
    labels = {0: "c_{k-2}", 1: "c_{k-1}", 2: "0", 3: "1", 4: "2"}
    edges = []
    for n, node in enumerate(nodes):
        for j, (op, idx) in enumerate(node):
            edges.append({"src": pos[idx], "dst": pos[n + 2], "op": op, "t": 0.5})
    title = "normal cell" if which == "normal" else "reduction cell"
    return {"title": title, "x0": x0, "pos": pos, "labels": labels, "out": out, "edges": edges}


def _point(a: tuple[int, int], b: tuple[int, int], t: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _trim(a: tuple[int, int], b: tuple[int, int], r: float) -> tuple[tuple[float, float], tuple[float, float]]:
    dx, dy = b[0] - a[0], b[1] - a[1]
    d = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    return (a[0] + dx / d * r, a[1] + dy / d * r), (b[0] - dx / d * r, b[1] - dy / d * r)


def cell_diagram_svg(genotype: Genotype, title: str = "") -> str:
    """Both cells side by side as standalone SVG text (deterministic: same genotype, same bytes)."""
    width, height = 2 * _PANEL_W, _PANEL_H + (30 if title else 0)
    dy = 30 if title else 0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width // 2}" y="22" font-size="18" font-weight="bold" text-anchor="middle">'
                   f"{_esc(title)}</text>")
    out.append(f'<g transform="translate(0,{dy})">')
    for i, which in enumerate(("normal", "reduce")):
        lay = _layout(genotype, which, i * _PANEL_W)
        x0 = lay["x0"]
        out.append(f'<text x="{x0 + _PANEL_W // 2}" y="24" font-size="16" font-weight="bold" text-anchor="middle">'
                   f'{lay["title"]}</text>')
        for e in lay["edges"]:
            (x1, y1), (x2, y2) = _trim(e["src"], e["dst"], _R + 2)
            colour = _OP_COLOURS[e["op"]]
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                       'stroke-width="2.5" marker-end="url(#arrow)"/>')
        for n in (2, 3, 4):
            (x1, y1), (x2, y2) = _trim(lay["pos"][n], lay["out"], _R + 2)
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#999" '
                       'stroke-width="1.5" stroke-dasharray="5,4" marker-end="url(#arrow)"/>')
        for e in lay["edges"]:
            lx, ly = _point(e["src"], e["dst"], e["t"])
            w = 7.2 * len(e["op"]) + 8
            out.append(f'<rect x="{lx - w / 2:.1f}" y="{ly - 10:.1f}" width="{w:.1f}" height="18" rx="4" fill="white" '
                       f'stroke="{_OP_COLOURS[e["op"]]}" stroke-width="1"/>')
            out.append(f'<text x="{lx:.1f}" y="{ly + 4:.1f}" font-size="12" text-anchor="middle" '
                       f'fill="{_OP_COLOURS[e["op"]]}">{e["op"]}</text>')
        for n, (x, y) in lay["pos"].items():
            fill = "#e8f0fe" if n < 2 else "#fff4d6"
            out.append(f'<circle cx="{x}" cy="{y}" r="{_R}" fill="{fill}" stroke="#333" stroke-width="1.5"/>')
            out.append(f'<text x="{x}" y="{y + 5}" font-size="{12 if n < 2 else 15}" text-anchor="middle">'
                       f'{_esc(lay["labels"][n])}</text>')
        ox, oy = lay["out"]
        out.append(f'<rect x="{ox - 34}" y="{oy - 20}" width="68" height="40" rx="8" fill="#e6f4ea" stroke="#333" '
                   'stroke-width="1.5"/>')
        out.append(f'<text x="{ox}" y="{oy + 5}" font-size="14" text-anchor="middle">c_{{k}}</text>')
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cell_diagram_png(genotype: Genotype, title: str = "", scale: int = 2) -> bytes:
    """The same diagram as PNG bytes, drawn with Pillow (for places that cannot show SVG)."""
    from io import BytesIO

    from PIL import Image, ImageDraw, ImageFont

    dy = 30 if title else 0
    width, height = 2 * _PANEL_W, _PANEL_H + dy
    img = Image.new("RGB", (width * scale, height * scale), "white")
    draw = ImageDraw.Draw(img)

    def font(size: int) -> Any:
        try:
            return ImageFont.load_default(size=size * scale)
        except TypeError:  # Pillow < 10.1 has no sized default font
            return ImageFont.load_default()

    def s(p: tuple[float, float]) -> tuple[float, float]:
        return p[0] * scale, (p[1] + dy) * scale

    def arrow(a: tuple[float, float], b: tuple[float, float], colour: str, width_px: float, dashed: bool = False):
        if dashed:
            n = 12
            for k in range(0, n, 2):
                draw.line([s(_point(a, b, k / n)), s(_point(a, b, (k + 1) / n))], fill=colour, width=int(width_px * scale))
        else:
            draw.line([s(a), s(b)], fill=colour, width=int(width_px * scale))
        dx, dy_ = b[0] - a[0], b[1] - a[1]
        d = max((dx * dx + dy_ * dy_) ** 0.5, 1e-6)
        ux, uy = dx / d, dy_ / d
        tip = b
        left = (b[0] - 9 * ux + 4.5 * uy, b[1] - 9 * uy - 4.5 * ux)
        right = (b[0] - 9 * ux - 4.5 * uy, b[1] - 9 * uy + 4.5 * ux)
        draw.polygon([s(tip), s(left), s(right)], fill="#333")

    if title:
        draw.text((width * scale / 2, 14 * scale), title, fill="black", font=font(18), anchor="mm")
    for i, which in enumerate(("normal", "reduce")):
        lay = _layout(genotype, which, i * _PANEL_W)
        draw.text(s((lay["x0"] + _PANEL_W / 2, 18)), lay["title"], fill="black", font=font(16), anchor="mm")
        for e in lay["edges"]:
            a, b = _trim(e["src"], e["dst"], _R + 2)
            arrow(a, b, _OP_COLOURS[e["op"]], 2.5)
        for n in (2, 3, 4):
            a, b = _trim(lay["pos"][n], lay["out"], _R + 2)
            arrow(a, b, "#999999", 1.5, dashed=True)
        for e in lay["edges"]:
            lx, ly = _point(e["src"], e["dst"], e["t"])
            w = 7.2 * len(e["op"]) + 8
            draw.rounded_rectangle([s((lx - w / 2, ly - 10)), s((lx + w / 2, ly + 8))], radius=4 * scale,
                                   fill="white", outline=_OP_COLOURS[e["op"]], width=scale)
            draw.text(s((lx, ly - 1)), e["op"], fill=_OP_COLOURS[e["op"]], font=font(12), anchor="mm")
        for n, (x, y) in lay["pos"].items():
            fill = "#e8f0fe" if n < 2 else "#fff4d6"
            draw.ellipse([s((x - _R, y - _R)), s((x + _R, y + _R))], fill=fill, outline="#333333", width=scale)
            draw.text(s((x, y)), lay["labels"][n], fill="black", font=font(12 if n < 2 else 15), anchor="mm")
        ox, oy = lay["out"]
        draw.rounded_rectangle([s((ox - 34, oy - 20)), s((ox + 34, oy + 20))], radius=8 * scale, fill="#e6f4ea",
                               outline="#333333", width=scale)
        draw.text(s((ox, oy)), "c_{k}", fill="black", font=font(14), anchor="mm")
    buf = BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- files
def write_card(data: CardData, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``card.md``, ``card.json``, ``cells.svg`` and ``cells.png`` into ``out_dir`` (atomically each)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in CARD_FILES}
    with atomic_write(paths["cells.svg"], "w") as f:
        f.write(cell_diagram_svg(data.genotype, data.name))
    with atomic_write(paths["cells.png"]) as f:
        f.write(cell_diagram_png(data.genotype, data.name))
    write_json(paths["card.json"], data.to_dict())
    with atomic_write(paths["card.md"], "w") as f:
        f.write(render_markdown(data, svg="cells.svg"))
    logger.info("wrote card of %s to %s", data.name, out)
    return paths


def zoo_card_keys() -> list[str]:
    """Genotype keys of every registered zoo architecture (one card each), in registry order."""
    keys: list[str] = []
    for key, *_ in ZOO_ENTRIES.values():
        if key is not None and key not in keys:
            keys.append(key)
    return keys


def render_cards_folder() -> dict[str, bytes]:
    """The content of ``cards/``: ``<key>/card.{md,json}``, ``<key>/cells.{svg,png}`` and ``README.md``."""
    files: dict[str, bytes] = {}
    index = ["# Genotype cards", "",
             "One card per genotype of the registered zoo, generated by `python scripts/make_cards.py` "
             "(`tests/test_cards.py` fails when a card is out of date with the code).", "",
             "| genotype | timm architectures | source | params (5 / 8 cells) | multiply-adds (5 / 8 cells) |",
             "|---|---|---|---|---|"]
    for key in zoo_card_keys():
        data = card_data(key)
        files[f"{key}/card.md"] = render_markdown(data, svg="cells.svg").encode()
        files[f"{key}/card.json"] = (json.dumps(data.to_dict(), indent=2) + "\n").encode()
        files[f"{key}/cells.svg"] = cell_diagram_svg(data.genotype, data.name).encode()
        files[f"{key}/cells.png"] = cell_diagram_png(data.genotype, data.name)
        c5, c8 = data.complexity
        archs = ", ".join(f"`{a}`" for a in data.architectures)
        index.append(f"| [{key}]({key}/card.md) | {archs} | {data.provenance['source']} | "
                     f"{c5['params'] / 1e6:.2f}M / {c8['params'] / 1e6:.2f}M | "
                     f"{c5['macs'] / 1e9:.2f}G / {c8['macs'] / 1e9:.2f}G |")
    files["README.md"] = ("\n".join(index) + "\n").encode()
    return files


__all__ += ["zoo_card_keys", "render_cards_folder"]
