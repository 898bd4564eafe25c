#!/usr/bin/env python
"""Aggregate the seeds of ``scripts/reproduce_table1.sh`` into the Table-1 row, as JSON and Markdown.

    python scripts/aggregate_table1.py runs/mini5            # reads runs/mini5/seed*/eval_{1,5}shot.json
    python scripts/aggregate_table1.py runs/mini5 --label "MetaNTK-NAS (ours, mini5)"

For each setting (5-way 1-shot, 5-way 5-shot) the row is the mean over seeds ± their standard deviation
(``std(ddof=1)``: the sample standard deviation, the paper's "±" over >= 3 search-train-evaluate runs); each seed's
own accuracy is listed with its 95% confidence half-width over episodes (the ``ci95`` of ``metantk-zoo eval``).
Writes ``OUT_ROOT/table1.json`` and ``OUT_ROOT/table1.md`` (atomically) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metantk_zoo.errors import MetantkZooError  # noqa: E402
from metantk_zoo.utils.io import atomic_write, read_json, write_json  # noqa: E402

SHOTS = (1, 5)


def aggregate(root: Path) -> dict:
    """``root/seed*/eval_{shot}shot.json`` -> {"seeds": [...], "settings": {"5-way 1-shot": {...}, ...}}.

    Accuracies are in percent. Raises SystemExit with one line when a seed lacks a result or none is found.
    """
    seeds = sorted((p for p in root.glob("seed*") if p.is_dir() and re.fullmatch(r"seed\d+", p.name)),
                   key=lambda p: int(p.name[4:]))
    if not seeds:
        raise SystemExit(f"no seed*/ folders under {root}: expected the OUT_ROOT of scripts/reproduce_table1.sh")
    settings = {}
    for shot in SHOTS:
        runs = []
        for s in seeds:
            path = s / f"eval_{shot}shot.json"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: expected one evaluation per seed and shot "
                                 "(re-run scripts/reproduce_table1.sh with the same arguments)")
            r = read_json(path, what="evaluation result")
            runs.append({"seed": int(s.name[4:]), "accuracy": 100 * float(r["mean"]), "ci95": 100 * float(r["ci95"]),
                         "episodes": int(r["n_episodes"]), "n_way": int(r["n_way"])})
        accs = [r["accuracy"] for r in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else None  # sample std (ddof=1)
        settings[f"{runs[0]['n_way']}-way {shot}-shot"] = {"mean": statistics.mean(accs), "std": std, "runs": runs}
    return {"root": str(root), "seeds": [int(s.name[4:]) for s in seeds], "std": "sample std over seeds (ddof=1)",
            "settings": settings}


def to_markdown(table: dict, label: str) -> str:
    """The Table-1 row and one row per seed."""
    names = list(table["settings"])
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]

    def cell(s: dict) -> str:
        return f"{s['mean']:.2f} ± {s['std']:.2f}" if s["std"] is not None else f"{s['mean']:.2f} (one seed)"

    lines.append(f"| {label} | " + " | ".join(cell(table["settings"][n]) for n in names) + " |")
    for i, seed in enumerate(table["seeds"]):
        runs = [table["settings"][n]["runs"][i] for n in names]
        lines.append(f"| seed {seed} | " + " | ".join(f"{r['accuracy']:.2f} ± {r['ci95']:.2f} (95% CI)" for r in runs)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="OUT_ROOT of scripts/reproduce_table1.sh")
    p.add_argument("--label", default=None, help="the row's name (default: the folder's name)")
    a = p.parse_args(argv)
    try:
        table = aggregate(a.root)
    except (MetantkZooError, KeyError, TypeError, ValueError) as e:  # a malformed result file: one line
        raise SystemExit(f"aggregate_table1: {' '.join(str(e).split())}") from None
    md = to_markdown(table, a.label or a.root.name)
    write_json(a.root / "table1.json", table)
    with atomic_write(a.root / "table1.md", "w") as f:
        f.write(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
