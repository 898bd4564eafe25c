"""The search's decisions against independent truths: the reference's rank-sum rule transcribed here (method-facts
§6), injected per-candidate scores with hand-known outcomes, meta-batches of distinct episodes, and small searches
whose right genotype is known in advance.

The transcription below (``_ref_*``) was written from method-facts §6.2-6.3 and TE-NAS ``prune_tenas.py``
(``round_to``, ``prune_func_rank``, ``prune_func_rank_group``), not from ``metantk_zoo``: lists of
``[mean, key]`` sorted by ``round_to(mean, 3)`` (``eps=1e-8`` added to the magnitude), dense ranks on exact
equality of the unrounded means, a dict of ranks in ΔC order, a stable sort by the rank sum, then per edge the
first candidate (rounds) or all but the last two (edge groups). Means are ``numpy.float64`` as in the reference.
"""

from __future__ import annotations

import collections
import itertools
import math
import sys

import numpy as np
import pytest
import torch

from metantk_zoo.nas import SearchConfig, TensorSource, rank_candidates, round_sig, search

# ---------------------------------------------------------------------------------- the reference, transcribed
_GROUPS = ((0, 2), (2, 5), (5, 9))  # edges entering nodes 0, 1, 2
_EDGE_INPUT = (0, 1, 0, 1, 2, 0, 1, 2, 3)  # input state of edges 0..8


def _ref_round_to(number, precision, eps=1e-8):
    """TE-NAS / MNN ``round_to``: round to ``precision`` significant figures after adding ``eps`` to |number|."""
    if number == 0:
        return number
    sign = number / abs(number)
    number = abs(number) + eps
    power = math.floor(math.log(number, 10)) + 1
    return sign * round(number * 10 ** (-power), precision) * 10 ** (power)


def _ref_rankings(ntk_all, regions_all, precision=3):
    """``ntk_all`` / ``regions_all``: lists of [mean, key] in iteration order. Returns rankings_sum (key, [rc, rr])."""
    ntk_all = sorted(ntk_all, key=lambda tup: _ref_round_to(tup[0], precision), reverse=True)
    rankings = {}
    for idx, data in enumerate(ntk_all):
        if idx == 0:
            rankings[data[1]] = [idx]
        elif data[0] == ntk_all[idx - 1][0]:
            rankings[data[1]] = [rankings[ntk_all[idx - 1][1]][0]]
        else:
            rankings[data[1]] = [rankings[ntk_all[idx - 1][1]][0] + 1]
    regions_all = sorted(regions_all, key=lambda tup: _ref_round_to(tup[0], precision), reverse=False)
    for idx, data in enumerate(regions_all):
        if idx == 0:
            rankings[data[1]].append(idx)
        elif data[0] == regions_all[idx - 1][0]:
            rankings[data[1]].append(rankings[regions_all[idx - 1][1]][1])
        else:
            rankings[data[1]].append(rankings[regions_all[idx - 1][1]][1] + 1)
    rankings_list = [[k, v] for k, v in rankings.items()]
    return sorted(rankings_list, key=lambda tup: sum(tup[1]), reverse=False)


def _ref_round_choices(rankings_sum, prune_number=1):
    edge2choice = {}
    for (cell_idx, edge_idx, op_idx), _ in rankings_sum:
        if (cell_idx, edge_idx) not in edge2choice:
            edge2choice[(cell_idx, edge_idx)] = [(cell_idx, edge_idx, op_idx)]
        elif len(edge2choice[(cell_idx, edge_idx)]) < prune_number:
            edge2choice[(cell_idx, edge_idx)].append((cell_idx, edge_idx, op_idx))
    return [k for v in edge2choice.values() for k in v]


def _ref_delta(origin, cand, precision=3):
    return round((origin - cand) / origin, precision)


def _ref_search(n_ops, scores, repeats):
    """The reference's pruning loop over injected scores.

    Args:
        n_ops: candidate ops (op indices 1..n_ops; 0 is ``none``).
        scores: ``(stage_kind, key, repeat) -> (cond_origin, cond, regions_origin, regions)``.

    Returns:
        (alive dict (cell, edge) -> sorted live ops, list of pruned keys per stage).
    """
    alive = {(c, e): list(range(1, n_ops + 1)) for c in range(2) for e in range(9)}
    history = []

    def means(key, kind):
        d_c, d_r = [], []
        for r in range(repeats):
            c_o, c_c, r_o, r_c = scores(kind, key, r)
            d_c.append(_ref_delta(np.float64(c_o), np.float64(c_c)))
            d_r.append(_ref_delta(float(r_o), float(r_c)))
        return np.mean(d_c), np.mean(d_r)

    while any(len(v) > 1 for v in alive.values()):
        ntk_all, regions_all = [], []
        for c in range(2):
            for e in range(9):
                if len(alive[(c, e)]) == 1:
                    continue
                for o in alive[(c, e)]:
                    m_c, m_r = means((c, e, o), "round")
                    ntk_all.append([m_c, (c, e, o)])
                    regions_all.append([m_r, (c, e, o)])
        pruned = _ref_round_choices(_ref_rankings(ntk_all, regions_all))
        for c, e, o in pruned:
            alive[(c, e)].remove(o)
        history.append(sorted(pruned))
    for c in range(2):
        for lo, hi in _GROUPS:
            if hi - lo <= 2:
                continue
            ntk_all, regions_all = [], []
            for e in range(lo, hi):
                for o in alive[(c, e)]:
                    m_c, m_r = means((c, e, o), "group")
                    ntk_all.append([m_c, (c, e, o)])
                    regions_all.append([m_r, (c, e, o)])
            choices = [item[0] for item in _ref_rankings(ntk_all, regions_all)[:-2]]
            for cc, e, o in choices:
                alive[(cc, e)].remove(o)
            history.append(sorted(choices))
    return alive, history


def _ref_genotype(alive, space):
    """Per node, the (op, input) pairs of its live edges (the loop leaves exactly two per node)."""
    cells = []
    for c in range(2):
        cells.append([sorted((space[alive[(c, e)][0]], _EDGE_INPUT[e]) for e in range(lo, hi) if alive[(c, e)])
                      for lo, hi in _GROUPS])
    return cells


# ------------------------------------------------------------------------------------------ 1. the rank-sum rule
def _random_round(rng: np.random.Generator, n: int) -> tuple[list[float], list[float]]:
    """Candidate means as the search produces them: means of 3 per-repeat values rounded to 3 decimals, over
    magnitudes 1e-4 (near-zero means, many exact zeros) to 100, with about a third exact ties."""

    def draw():
        scale = 10.0 ** rng.integers(-4, 3, size=n)
        reps = np.round(rng.standard_normal((n, 3)) * scale[:, None], 3)
        dup = rng.random(n) < 0.3
        reps[dup] = reps[rng.integers(0, n, size=int(dup.sum()))]
        near_zero = rng.random(n) < 0.1  # e.g. (0.001 + 0.002 - 0.003) / 3 = 1.4e-19, not 0
        reps[near_zero] = rng.choice([-0.003, -0.002, -0.001, 0.0, 0.001, 0.002, 0.003], size=(int(near_zero.sum()), 3))
        return [float(v) for v in reps.mean(1)]

    return draw(), draw()


def test_rank_rule_agrees_with_the_reference_transcription_on_12000_random_rounds():
    rng = np.random.default_rng(2026)
    rounds, differences, ties, near_zero = 12000, 0, 0, 0
    for _ in range(rounds):
        n = int(rng.integers(2, 40))
        d_c, d_r = _random_round(rng, n)
        ties += len(set(d_c)) < n
        near_zero += any(0 < abs(v) < 1e-12 for v in d_c + d_r)
        order, rank_c, rank_r, total = rank_candidates(d_c, d_r)
        ref = _ref_rankings([[np.float64(v), i] for i, v in enumerate(d_c)],
                            [[np.float64(v), i] for i, v in enumerate(d_r)])
        ref_order = [k for k, _ in ref]
        ref_ranks = dict(ref)
        same = (order == ref_order and rank_c == [ref_ranks[i][0] for i in range(n)]
                and rank_r == [ref_ranks[i][1] for i in range(n)] and total == [sum(ref_ranks[i]) for i in range(n)])
        differences += not same
    assert ties > 1000 and near_zero > 100  # the draw exercises both
    assert differences == 0, f"{differences} of {rounds} rounds differ from the reference's rank-sum rule"


@pytest.mark.parametrize("x, key", [
    (0.1235, 0.124),  # the float below 0.1235 rounds down without round_to's eps, up with it
    (-0.1235, -0.124),
    (12.35, 12.4),
    (0.0012345, 0.00123),
    (-1234.5, -1230.0),
    (1e-19, 1e-8),  # eps dominates a near-zero mean
    (0.0, 0.0),
])
def test_sort_keys_are_round_to_with_its_eps(x, key):
    assert round_sig(x) == pytest.approx(key, rel=1e-12, abs=0)
    assert round_sig(x) == _ref_round_to(np.float64(x), 3)


def test_sort_key_eps_decides_an_actual_round():
    # with round_to's eps both keys are 0.124, so the stable sort keeps the iteration order and candidate 0 (ΔC
    # 0.1235) is pruned first; without it 0.1235 sorts as 0.123, below 0.1239, and the order flips
    order, rank_c, _, total = rank_candidates([0.1235, 0.1239], [0.0, 0.0])
    assert order == [0, 1] and rank_c == [0, 1] and total == [0, 1]
    order, _, _, total = rank_candidates([0.1235, 0.1239], [0.0, -1.0])
    assert order == [0, 1] and total == [1, 1]


def test_ties_and_non_finite_scores():
    # all equal: every rank 0, the iteration order decides (the first candidate of every edge is pruned)
    order, rank_c, rank_r, total = rank_candidates([0.5] * 4, [0.1] * 4)
    assert order == [0, 1, 2, 3] and rank_c == rank_r == total == [0] * 4
    # same sort key, different means: the stable sort keeps iteration order, the dense rank still steps
    order, rank_c, _, _ = rank_candidates([0.12341, 0.12349, 0.12345], [0.0] * 3)
    assert order == [0, 1, 2] and rank_c == [0, 1, 2]
    # NaN / inf ΔC and ΔR are the least prunable (the reference's round_to would raise on them)
    # keys: ΔC (NaN, 0.1, inf, -0.2) -> (-inf, 0.1, -inf, -0.2): ranks (2, 0, 3, 1) (NaN != inf: a new rank);
    # ΔR (0, NaN, 0, 0) -> (0, +inf, 0, 0): ranks (0, 1, 0, 0); totals (2, 1, 3, 1)
    order, rank_c, rank_r, total = rank_candidates([math.nan, 0.1, math.inf, -0.2], [0.0, math.nan, 0.0, 0.0])
    assert (rank_c, rank_r, total, order) == ([2, 0, 3, 1], [0, 1, 0, 0], [2, 1, 3, 1], [1, 3, 0, 2])


# ---------------------------------------------------------------------------------- injected scores through search()
_OPS = ("skip_connect", "sep_conv_3x3", "max_pool_3x3BN")
_SPACE = ("none", *_OPS)


def _cfg(**overrides) -> SearchConfig:
    base = dict(channels=4, num_cells=3, resolution=8, repeats=3, n_tasks=2, n_way=2, region_patches=20,
                region_batches=1, ops=_OPS, episode_pool=20)
    base.update(overrides)
    return SearchConfig(**base)


def _source() -> TensorSource:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 12, 12), dtype=torch.uint8, generator=g)
    return TensorSource(images, torch.arange(24) % 6)


def _inject(monkeypatch, scores):
    """Replace the per-candidate scorer by ``scores(kind, key, repeat) -> (c_orig, c_cand, r_orig, r_cand)``."""
    mod = sys.modules[search.__module__]
    repeats = {}

    def score(self, stage, key, *args, **kwargs):
        kind = "group" if str(stage).startswith("group") else "round"
        vals = [scores(kind, tuple(key), r) for r in range(self.cfg.repeats)]
        repeats[stage] = self.cfg.repeats
        return {"cond_origin": [v[0] for v in vals], "cond": [v[1] for v in vals],
                "regions_origin": [v[2] for v in vals], "regions": [v[3] for v in vals], "nonfinite": False}

    monkeypatch.setattr(mod._Scorer, "score", score)


def _genotype_lists(genotype):
    return [[sorted(tuple(p) for p in node) for node in genotype.normal],
            [sorted(tuple(p) for p in node) for node in genotype.reduce]]


def _pruned(res):
    return [sorted((0 if r["cell"] == "normal" else 1, r["edge"], _SPACE.index(r["op"])) for r in st["candidates"]
                   if r["pruned"]) for st in res.rounds]


# the planted answer: per (cell, edge) the op that must survive, and per node the two input edges that must survive
_KEEP_OP = {(c, e): 1 + (3 * c + e) % 3 for c in range(2) for e in range(9)}
_KEEP_EDGES = {0: {1: (2, 4), 2: (6, 8)}, 1: {1: (2, 3), 2: (5, 7)}}


def _planted(kind, key, r):
    """Removing a to-be-pruned op lowers cond (ΔC > 0) and keeps the regions (ΔR = 0); removing a keeper raises
    cond by 50% and loses 40% of the regions. Rounds prune in a fixed op preference among the non-keepers."""
    c, e, o = key
    if kind == "round":
        if o == _KEEP_OP[(c, e)]:
            return 100.0, 150.0, 1000, 600
        # the non-keeper pruned first: the higher op index (a larger ΔC, the same ΔR)
        return 100.0, 80.0 - 10 * o, 1000, 1000
    node = 1 if e in (2, 3, 4) else 2
    if e in _KEEP_EDGES[c][node]:
        return 100.0, 150.0 + e, 1000, 500 + e
    return 100.0, 50.0, 1000, 1000


def _planted_genotype():
    cells = []
    for c in range(2):
        nodes = [sorted((_SPACE[_KEEP_OP[(c, e)]], _EDGE_INPUT[e]) for e in (0, 1))]
        for node in (1, 2):
            nodes.append(sorted((_SPACE[_KEEP_OP[(c, e)]], _EDGE_INPUT[e]) for e in _KEEP_EDGES[c][node]))
        cells.append(nodes)
    return cells


def test_planted_scores_give_the_planted_genotype(monkeypatch):
    _inject(monkeypatch, _planted)
    res = search(_source(), _cfg(), seed=0, show_progress=False)
    assert _genotype_lists(res.genotype) == _planted_genotype()
    # round 0 prunes, on every edge, the non-keeper with the larger ΔC (the higher op index)
    first = {(c, e): o for c, e, o in _pruned(res)[0]}
    assert first == {(c, e): max(o for o in (1, 2, 3) if o != _KEEP_OP[(c, e)]) for c in range(2) for e in range(9)}
    r0 = res.rounds[0]["candidates"][0]  # normal edge 0, skip_connect: a keeper (ΔC = (100-150)/100)
    assert r0["delta_cond_repeats"] == [-0.5] * 3 and r0["delta_regions_repeats"] == [0.4] * 3
    assert [st["name"] for st in res.rounds][2:] == ["group-normal-node1", "group-normal-node2",
                                                     "group-reduce-node1", "group-reduce-node2"]


def test_sign_of_the_relative_change_decides(monkeypatch):
    # removing op 3 lowers the condition number (ΔC = +0.2) and keeps the regions: op 3 must go everywhere first
    def scores(kind, key, r):
        c, e, o = key
        if kind == "group":
            return 100.0, 100.0, 1000, 1000
        return (100.0, 80.0, 1000, 1000) if o == 3 else (100.0, 120.0, 1000, 900)

    _inject(monkeypatch, scores)
    res = search(_source(), _cfg(), seed=0, show_progress=False)
    assert _pruned(res)[0] == [(c, e, 3) for c in range(2) for e in range(9)]


def test_all_equal_scores_prune_in_iteration_order(monkeypatch):
    _inject(monkeypatch, lambda kind, key, r: (100.0, 100.0, 1000, 1000))
    res = search(_source(), _cfg(), seed=0, show_progress=False)
    pruned = _pruned(res)
    assert pruned[0] == [(c, e, 1) for c in range(2) for e in range(9)]  # the first live op of every edge
    assert pruned[1] == [(c, e, 2) for c in range(2) for e in range(9)]
    # edge groups: all totals 0, stable order: the first edges are pruned, the last two of every node kept
    assert pruned[2:] == [[(0, 2, 3)], [(0, 5, 3), (0, 6, 3)], [(1, 2, 3)], [(1, 5, 3), (1, 6, 3)]]
    node_inputs = [sorted(i for _, i in node) for node in res.genotype.normal]
    assert node_inputs == [[0, 1], [1, 2], [2, 3]]


def test_per_repeat_rounding_is_to_three_decimals(monkeypatch):
    # repeat values: (1000 - 998.5) / 1000 = 0.0015 -> 0.002; (2000 - 1999) / 2000 = 0.0005 -> 0.001 (Python
    # round, the reference's region path); mean of [0.002, 0.0, 0.001] = 0.001
    vals = [(1000.0, 998.5, 2000, 1999), (1000.0, 1000.0, 2000, 2000), (1000.0, 999.4, 2000, 1998.9)]
    _inject(monkeypatch, lambda kind, key, r: vals[r])
    res = search(_source(), _cfg(), seed=0, show_progress=False)
    row = res.rounds[0]["candidates"][0]
    assert row["delta_cond_repeats"] == [0.002, 0.0, 0.001]
    assert row["delta_regions_repeats"] == [0.001, 0.0, 0.001]
    assert row["delta_cond"] == pytest.approx(0.001, abs=1e-15)


@pytest.mark.parametrize("case", range(24))
def test_injected_random_scores_give_the_reference_loops_decisions(monkeypatch, case):
    rng = np.random.default_rng(case)
    cache = {}
    tie_pool = rng.uniform(50, 150, size=4)

    def scores(kind, key, r):
        k = (kind, key, r)
        if k not in cache:
            if rng.random() < 0.3:  # exact ties across candidates
                c_c = float(rng.choice(tie_pool))
            else:
                c_c = float(rng.uniform(50, 150))
            r_c = int(rng.integers(600, 1001)) if rng.random() < 0.7 else 1000
            cache[k] = (100.0, c_c, 1000, r_c)
        return cache[k]

    # draw in the reference's iteration order first so both sides see one table
    ref_alive, ref_history = _ref_search(3, scores, 3)
    _inject(monkeypatch, lambda kind, key, r: cache[(kind, key, r)])
    res = search(_source(), _cfg(), seed=0, show_progress=False)
    assert _pruned(res) == ref_history
    assert _genotype_lists(res.genotype) == _ref_genotype(ref_alive, _SPACE)


# --------------------------------------------------------------------------- 2. meta-batches of distinct episodes
class _RecordingSource:
    """A source whose every load is recorded (query indices, then support indices, for each meta-batch)."""

    def __init__(self, n_classes: int, per_class: int):
        self.labels = torch.arange(n_classes * per_class) % n_classes
        self.images = torch.zeros(n_classes * per_class, 3, 8, 8, dtype=torch.uint8)
        self.calls: list[list[int]] = []

    def load(self, indices):
        self.calls.append([int(i) for i in indices])
        return self.images[torch.as_tensor(list(indices), dtype=torch.int64)]


def _fake_ntk(monkeypatch):
    """A cheap positive-definite kernel so that only the sampler's draws matter."""
    mod = sys.modules[search.__module__]

    def ntk(model, x, **kwargs):
        n = x.shape[0]
        a = torch.eye(n, dtype=torch.float64) + 0.01 * torch.ones(n, n, dtype=torch.float64)
        if kwargs.get("per_layer"):
            return {"body": a, "head": 0.5 * a}
        return a

    monkeypatch.setattr(mod, "empirical_ntk", ntk)


def _episodes(calls, cfg):
    """Split the recorded loads into meta-batches of (support set, query set) per task."""
    nq, ns = cfg.n_tasks * cfg.n_way * cfg.n_query, cfg.n_tasks * cfg.n_way * cfg.n_shot
    batches = []
    for qry, spt in zip(calls[0::2], calls[1::2], strict=False):
        if (len(qry), len(spt)) != (nq, ns):  # the data fingerprint's loads at the end
            break
        wq, ws = cfg.n_way * cfg.n_query, cfg.n_way * cfg.n_shot
        batches.append([(frozenset(spt[t * ws:(t + 1) * ws]), frozenset(qry[t * wq:(t + 1) * wq]))
                        for t in range(cfg.n_tasks)])
    return batches


@pytest.mark.parametrize("pool, n_classes, per_class", [(3, 30, 20), (1000, 30, 20), (0, 3, 2)])
def test_meta_batch_tasks_are_distinct_episodes(monkeypatch, pool, n_classes, per_class):
    # pool=3 with 3 tasks: the batch must be a permutation of the pool (an independent draw repeats an episode in
    # 78% of batches); pool=0 on 3 classes x 2 images: fresh episodes collide often unless the sampler prevents it
    _fake_ntk(monkeypatch)
    cfg = _cfg(method="metantk-only", n_tasks=3, n_way=3 if pool == 0 else 5, episode_pool=pool, protocol="reference",
               repeats=1, ops=("skip_connect", "max_pool_3x3BN"))
    src = _RecordingSource(n_classes, per_class)
    search(src, cfg, seed=1, show_progress=False)
    batches = _episodes(src.calls, cfg)
    assert len(batches) >= 40
    repeated = [b for b in batches if len(set(b)) < len(b)]
    assert not repeated, f"{len(repeated)} of {len(batches)} meta-batches repeat an episode"


# ---------------------------------------------------------------------------------- 3. searches with a known answer
def _iteration_order_genotype(space):
    """All scores tied: each edge keeps its last op (ops are pruned in iteration order), each node keeps its last
    two input edges."""
    last = space[-1]
    cell = [[(last, 0), (last, 1)], [(last, 1), (last, 2)], [(last, 2), (last, 3)]]
    return [cell, cell]


@pytest.mark.slow
def test_regions_only_with_one_patch_returns_the_tie_genotype():
    # one patch per batch: every network has exactly one activation pattern, so every ΔR is 0 and (regions-only)
    # every ΔC is 0: all candidates tie and the rule prunes in iteration order
    cfg = _cfg(method="regions-only", repeats=1, region_patches=1, region_batches=1)
    res = search(_source(), cfg, seed=0, show_progress=False)
    assert all(r["regions"] == [1] and r["regions_origin"] == [1] for st in res.rounds for r in st["candidates"])
    assert _genotype_lists(res.genotype) == _iteration_order_genotype(_SPACE)


def test_random_baseline_follows_its_rule():
    # §6.4: each node picks a uniformly random pair of distinct inputs and a uniformly random op per chosen edge
    pairs, ops = collections.Counter(), collections.Counter()
    src = _source()
    n = 300
    for seed in range(n):
        g = search(src, _cfg(method="random"), seed=seed, show_progress=False).genotype
        for node in (g.normal[2], g.reduce[2]):
            pairs[tuple(sorted(i for _, i in node))] += 1
            ops.update(op for op, _ in node)
        assert sorted(i for _, i in g.normal[0]) == [0, 1]
    # node 2 has 4 inputs -> 6 pairs, each expected 2n/6 = 100 times; 3 ops expected 4n/3 = 400 times
    assert set(pairs) == set(itertools.combinations(range(4), 2))
    chi_pairs = sum((v - 2 * n / 6) ** 2 / (2 * n / 6) for v in pairs.values())
    chi_ops = sum((v - 4 * n / 3) ** 2 / (4 * n / 3) for v in ops.values())
    assert chi_pairs < 20.5 and chi_ops < 13.8  # chi-square 99.9% quantiles for 5 and 2 degrees of freedom
