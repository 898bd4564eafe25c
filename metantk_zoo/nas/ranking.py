"""The pruning decision rule: relative score changes, 3-significant-figure sort keys, dense rank sums (§6.2).

A candidate's ΔC (relative change of the MetaNTK condition number when the op is removed) is sorted descending
and its ΔR (relative change of the linear-region count) ascending; the op with the lowest rank sum on an edge is
pruned. MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .config import CELLS, SearchConfig
from .supernet import EDGES

__all__ = ["round_sig", "rank_candidates", "rank_stage"]


#: the reference's ``round_to(number, precision, eps=1e-8)`` adds this to ``|x|`` before rounding: it decides the
#: values that float stores just below a half (0.1235 -> 0.124, not 0.123) and gives near-zero means a key of 1e-8
ROUND_EPS = 1e-8


def round_sig(x: float, sig: int = 3) -> float:
    """Round to ``sig`` significant figures exactly as the reference's ``round_to`` sort keys (TE-NAS / MNN).

    ``sign(x) * round((|x| + 1e-8) / 10^p, sig) * 10^p`` with ``p = floor(log(|x| + 1e-8, 10)) + 1``; the rounding
    is numpy's (scale by ``10^sig``, round half to even, unscale), since the reference's means are
    ``numpy.float64``. 0 and non-finite values are returned unchanged.
    """
    if x == 0 or not math.isfinite(x):
        return x
    a = abs(x) + ROUND_EPS
    p = math.floor(math.log(a, 10)) + 1
    scale = 10.0**sig
    return math.copysign(round(a * 10.0 ** (-p) * scale) / scale * 10.0**p, x)


def _dense_ranks(order: list[int], values: Sequence[float]) -> dict[int, int]:
    ranks, prev, r = {}, None, -1
    for i in order:
        if prev is None or values[i] != values[prev]:  # ties on the exact (unrounded) means
            r += 1
        ranks[i] = r
        prev = i
    return ranks


def rank_candidates(d_cond: Sequence[float], d_regions: Sequence[float], precision: int = 3):
    """The reference's rank-sum (§6.2) over candidates given in iteration order.

    ΔC sorted descending and ΔR ascending by their ``precision``-significant-figure values (stable), dense ranks
    on exact equality of the unrounded values, total = rank_C + rank_R, candidates ordered by total (stable over
    the ΔC order). Non-finite scores sort as the least prunable.

    Returns:
        (order, rank_cond, rank_regions, total): ``order`` lists candidate indices, most prunable first.
    """
    n = len(d_cond)
    c_key = [round_sig(v, precision) if math.isfinite(v) else -math.inf for v in d_cond]
    r_key = [round_sig(v, precision) if math.isfinite(v) else math.inf for v in d_regions]
    order_c = sorted(range(n), key=lambda i: c_key[i], reverse=True)
    order_r = sorted(range(n), key=lambda i: r_key[i])
    rank_c, rank_r = _dense_ranks(order_c, d_cond), _dense_ranks(order_r, d_regions)
    total = {i: rank_c[i] + rank_r[i] for i in range(n)}
    order = sorted(order_c, key=lambda i: total[i])
    return order, [rank_c[i] for i in range(n)], [rank_r[i] for i in range(n)], [total[i] for i in range(n)]


def _delta(origin: float, cand: float, precision: int) -> float:
    """Relative drop ``(origin - cand) / origin`` rounded to ``precision`` decimals; NaN when undefined."""
    with_nan = (origin - cand) / origin if origin != 0 else math.nan
    return round(with_nan, precision) if math.isfinite(with_nan) else math.nan


def rank_stage(cands: list[tuple[int, int, int]], scores: dict, cfg: SearchConfig, kind: str) -> list[dict[str, Any]]:
    """Turn one stage's raw scores into ranked rows and mark the ops that the stage prunes.

    Args:
        cands: the stage's candidates ``(cell, edge, op)`` in iteration order.
        scores: per candidate, the scorer's per-repeat ``cond_origin``, ``cond``, ``regions_origin``, ``regions``
            and ``nonfinite``.
        cfg: the search settings (``precision``, ``repeats``, ``space``).
        kind: ``round`` (prune the most prunable op of every edge) or ``group`` (keep the two best edges).

    Returns:
        One row per candidate, in ``cands`` order: the raw scores, per-repeat and mean ΔC/ΔR, ranks, total and
        ``pruned``.
    """
    p = cfg.precision
    rows = []
    for key in cands:
        s = scores[key]
        d_c = [_delta(o, c, p) for o, c in zip(s["cond_origin"], s["cond"], strict=True)] or [0.0] * cfg.repeats
        d_r = [_delta(o, c, p) for o, c in zip(s["regions_origin"], s["regions"], strict=True)] or [0.0] * cfg.repeats
        c, e, o = key
        rows.append({"cell": CELLS[c], "edge": e, "edge_name": f"{EDGES[e][0]}<-{EDGES[e][1]}", "op": cfg.space[o],
                     "delta_cond": sum(d_c) / len(d_c), "delta_regions": sum(d_r) / len(d_r),
                     "delta_cond_repeats": d_c, "delta_regions_repeats": d_r, **s})
    order, rank_c, rank_r, total = rank_candidates([r["delta_cond"] for r in rows],
                                                   [r["delta_regions"] for r in rows], p)
    for i, row in enumerate(rows):
        row.update(rank_cond=rank_c[i], rank_regions=rank_r[i], total=total[i], pruned=False)
    if kind == "group":  # edge-group stage: one candidate per edge, keep the two with the highest totals
        for i in order[: max(0, len(order) - 2)]:
            rows[i]["pruned"] = True
    else:  # pruning round: the most prunable op of every edge
        done = set()
        for i in order:
            edge = (cands[i][0], cands[i][1])
            if edge not in done:
                rows[i]["pruned"] = True
                done.add(edge)
    return rows
