"""Cards as Markdown: the genotype card (cells, genotype, cost, provenance, results) and the results table.

The Hub model card (:mod:`metantk_zoo.hub.card`) embeds the Markdown body. MetaNTK-NAS:
https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

from typing import Any

from .data import CardData

__all__ = ["PAPER", "render_markdown", "render_results_table"]

PAPER = "MetaNTK-NAS (Wang et al., CVPR 2022, [arXiv:2203.09137](https://arxiv.org/abs/2203.09137))"


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
