#!/usr/bin/env python
"""What ``protocol="shared"`` changes: the same search under both protocols over several seeds, in one run.

    python scripts/compare_protocols.py                        # the tiny preset, seeds 0-4, synthetic:size=32
    python scripts/compare_protocols.py --seeds 0 1 2 --json protocols.json

``reference`` (the paper presets' default) draws a fresh meta-batch and recomputes the unpruned network's kernel for
every candidate and repeat, as the reference does; ``shared`` computes the unpruned kernel once per round and
repeat on one meta-batch that the round's candidates share. Both are the same rank-sum rule on different random
draws, so they may choose different genotypes. For each seed both searches run back to back (the order alternating
from seed to seed); the script prints whether they chose the same genotype (normal and reduction cells, op for op),
how many of the ops pruned in the rounds agree, and the time ratio reference / shared. As the scale for those
agreements it also prints how many pruned ops the reference protocol's searches of consecutive seeds share: the
search's own seed-to-seed variation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metantk_zoo.nas import SearchConfig, search  # noqa: E402
from metantk_zoo.pipeline import load_search_source  # noqa: E402
from metantk_zoo.utils.device import resolve_device  # noqa: E402

PROTOCOLS = ("reference", "shared")


def _pruned(result) -> set[tuple[int, str, str]]:
    """The ops the pruning rounds removed, as (cell, edge, op)."""
    return {(c["cell"], c["edge_name"], c["op"]) for stage in result.rounds for c in stage["candidates"]
            if c["pruned"] and stage["name"].startswith("round")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--dataset", default="synthetic:size=32")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    base = SearchConfig.preset(a.preset)
    source, _ = load_search_source(a.dataset, base.resolution)
    rows, reference_pruned = [], []
    for i, seed in enumerate(a.seeds):
        order = PROTOCOLS if i % 2 == 0 else PROTOCOLS[::-1]
        res, secs = {}, {}
        for protocol in order:
            cfg = SearchConfig.preset(a.preset, protocol=protocol)
            t = time.perf_counter()
            res[protocol] = search(source, cfg, seed=seed, device=device, show_progress=False)
            secs[protocol] = time.perf_counter() - t
        ref, sh = _pruned(res["reference"]), _pruned(res["shared"])
        reference_pruned.append(ref)
        row = {"seed": seed, "same_genotype": res["reference"].genotype == res["shared"].genotype,
               "pruned_ops_agreeing": len(ref & sh), "pruned_ops": len(ref),
               "seconds": secs, "genotypes": {k: str(v.genotype) for k, v in res.items()}}
        rows.append(row)
        print(f"seed {seed}: same genotype {row['same_genotype']}, pruned ops agreeing {len(ref & sh)}/{len(ref)}, "
              f"reference {secs['reference']:.1f} s, shared {secs['shared']:.1f} s", file=sys.stderr, flush=True)
    same = sum(r["same_genotype"] for r in rows)
    agree = sum(r["pruned_ops_agreeing"] for r in rows)
    total = sum(r["pruned_ops"] for r in rows)
    t_ref = sum(r["seconds"]["reference"] for r in rows)
    t_sh = sum(r["seconds"]["shared"] for r in rows)
    between = [len(p & q) for p, q in zip(reference_pruned, reference_pruned[1:], strict=False)]
    summary = {"preset": a.preset, "dataset": a.dataset, "seeds": a.seeds, "same_genotype": same, "n": len(rows),
               "pruned_ops_agreeing": agree, "pruned_ops": total, "time_ratio_reference_over_shared": t_ref / t_sh,
               "reference_consecutive_seeds_pruned_ops_agreeing": sum(between),
               "reference_consecutive_seeds_pruned_ops": sum(len(p) for p in reference_pruned[1:]),
               "machine": {"device": str(device), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                           "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                           "load_average_at_end": os.getloadavg()}}
    print(f"{a.preset} on {a.dataset}: same genotype in {same} of {len(rows)} seeds; pruned ops agreeing "
          f"{agree}/{total}; time reference / shared = {t_ref / t_sh:.2f} ({t_ref:.0f} s vs {t_sh:.0f} s)")
    if between:
        print(f"scale: the reference protocol's searches of consecutive seeds share "
              f"{sum(between)}/{sum(len(p) for p in reference_pruned[1:])} pruned ops")
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "seeds": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
