"""Known answers for one stage's ranking and pruning (``nas/ranking.py``) and the search loop's decision functions
(``nas/loop.py``: which candidates a stage has, what it removes, when the search ends), as unit tests.

Written against mutants that the slower end-to-end tests of ``test_decisions.py`` let through (``scripts/
mutation_test.sh``); every expected value is worked out by hand in the comments from method-facts §6 (relative
drop ``(origin - candidate) / origin`` per repeat rounded to 3 decimals, ΔC sorted descending and ΔR ascending,
dense ranks, the lowest rank sum pruned; per edge in a round, all but the two best edges in an edge group).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from metantk_zoo.nas import SearchConfig, search
from metantk_zoo.nas.ranking import rank_stage

_OPS = ("skip_connect", "sep_conv_3x3", "max_pool_3x3BN")
_SPACE = ("none", *_OPS)
# the DARTS cell: edge e enters node _NODE[e] from input state _INPUT[e] (0, 1: the two previous cells' outputs)
_NODE = (0, 0, 1, 1, 1, 2, 2, 2, 2)
_INPUT = (0, 1, 0, 1, 2, 0, 1, 2, 3)


def _cfg(**kw) -> SearchConfig:
    return SearchConfig(ops=_OPS, **{"repeats": 2, **kw})


def _scores(cond_origin, cond, regions_origin, regions, nonfinite=False):
    return {"cond_origin": list(cond_origin), "cond": list(cond), "regions_origin": list(regions_origin),
            "regions": list(regions), "nonfinite": nonfinite}


# a round over two edges: normal edge 0 (ops 1, 2, 3) and reduce edge 4 (ops 1, 3), two repeats each
_ROUND = {
    (0, 0, 1): _scores([100, 100], [80, 90], [1000, 1000], [1000, 900]),  # ΔC [0.2, 0.1] 0.15, ΔR [0, 0.1] 0.05
    (0, 0, 2): _scores([100, 100], [120, 120], [1000, 1000], [1000, 1000]),  # ΔC -0.2, ΔR 0
    (0, 0, 3): _scores([100, 100], [50, 70], [1000, 1000], [800, 800]),  # ΔC [0.5, 0.3] 0.4, ΔR 0.2
    (1, 4, 1): _scores([100, 100], [100, 100], [1000, 1000], [1000, 1000]),  # ΔC 0, ΔR 0
    (1, 4, 3): _scores([100, 100], [90, 110], [1000, 1000], [990, 1000]),  # ΔC [0.1, -0.1] 0, ΔR [0.01, 0] 0.005
}


def test_a_round_by_hand():
    rows = rank_stage(list(_ROUND), _ROUND, _cfg(), "round")
    assert [(r["cell"], r["edge"], r["op"]) for r in rows] == [
        ("normal", 0, "skip_connect"), ("normal", 0, "sep_conv_3x3"), ("normal", 0, "max_pool_3x3BN"),
        ("reduce", 4, "skip_connect"), ("reduce", 4, "max_pool_3x3BN")]
    assert [r["edge_name"] for r in rows] == ["0<-0"] * 3 + ["1<-2"] * 2
    assert [r["delta_cond_repeats"] for r in rows] == [[0.2, 0.1], [-0.2, -0.2], [0.5, 0.3], [0.0, 0.0], [0.1, -0.1]]
    assert [r["delta_regions_repeats"] for r in rows] == [[0.0, 0.1], [0.0, 0.0], [0.2, 0.2], [0.0, 0.0],
                                                          [0.01, 0.0]]
    assert [r["delta_cond"] for r in rows] == pytest.approx([0.15, -0.2, 0.4, 0.0, 0.0], abs=1e-15)
    assert [r["delta_regions"] for r in rows] == pytest.approx([0.05, 0.0, 0.2, 0.0, 0.005], abs=1e-15)
    # ΔC descending 0.4 (c2), 0.15 (c0), 0 (c3), 0 (c4, the same exact mean), -0.2 (c1): ranks 1, 3, 0, 2, 2
    # ΔR ascending 0 (c1), 0 (c3), 0.005 (c4), 0.05 (c0), 0.2 (c2): ranks 2, 0, 3, 0, 1
    assert [r["rank_cond"] for r in rows] == [1, 3, 0, 2, 2]
    assert [r["rank_regions"] for r in rows] == [2, 0, 3, 0, 1]
    assert [r["total"] for r in rows] == [3, 3, 3, 2, 3]
    # by total (stable over the ΔC order c2, c0, c3, c4, c1): c3, then c2, c0, c4, c1; first per edge: c3 on the
    # reduce edge, c2 on the normal edge (its three ops tie at 3: the ΔC order decides, not the iteration order)
    assert [r["pruned"] for r in rows] == [False, False, True, True, False]
    assert all(r["pruned"] is False for r in rows if not r["pruned"])
    # the raw scores travel with the row
    assert rows[0]["cond"] == [80, 90] and rows[4]["regions"] == [990, 1000] and rows[0]["nonfinite"] is False


def test_a_round_prunes_exactly_one_op_per_edge():
    # three edges, the lowest total on each edge goes, whatever the totals on the other edges
    cands = [(0, 1, 1), (0, 1, 2), (0, 3, 1), (0, 3, 3), (1, 8, 2), (1, 8, 3)]
    cond = {(0, 1, 1): 60, (0, 1, 2): 70, (0, 3, 1): 95, (0, 3, 3): 99, (1, 8, 2): 110, (1, 8, 3): 105}
    scores = {k: _scores([100] * 2, [cond[k]] * 2, [10] * 2, [10] * 2) for k in cands}
    rows = rank_stage(cands, scores, _cfg(), "round")
    # ΔC 0.4, 0.3, 0.05, 0.01, -0.1, -0.05: ranks 0, 1, 2, 3, 5, 4; ΔR all 0: totals = ΔC ranks
    assert [r["total"] for r in rows] == [0, 1, 2, 3, 5, 4]
    assert [r["pruned"] for r in rows] == [True, False, True, False, False, True]


def test_an_edge_group_keeps_the_two_best_edges():
    # node 2 of the normal cell, one live op per edge: ΔC 0.3, 0.1, -0.1, 0.2 and ΔR 0: totals 0, 2, 3, 1; the two
    # with the lowest totals (edges 5 and 8) are pruned, the two highest (6 and 7) kept
    cands = [(0, 5, 1), (0, 6, 2), (0, 7, 3), (0, 8, 1)]
    cond = dict(zip(cands, (70, 90, 110, 80), strict=True))
    scores = {k: _scores([100] * 2, [cond[k]] * 2, [10] * 2, [10] * 2) for k in cands}
    rows = rank_stage(cands, scores, _cfg(), "group")
    assert [r["edge_name"] for r in rows] == ["2<-0", "2<-1", "2<-2", "2<-3"]
    assert [r["total"] for r in rows] == [0, 2, 3, 1]
    assert [r["pruned"] for r in rows] == [True, False, False, True]
    # three edges (node 1): one pruned; two or one: nothing to prune (the node already has at most two edges)
    for n, want in ((3, [True, False, False]), (2, [False, False]), (1, [False])):
        rows = rank_stage(cands[:n], scores, _cfg(), "group")
        assert [r["pruned"] for r in rows] == want


def test_every_edge_name_is_node_from_input():
    cands = [(0, e, 1) for e in range(9)]
    scores = {k: _scores([1.0], [1.0], [1], [1]) for k in cands}
    rows = rank_stage(cands, scores, _cfg(repeats=1), "group")
    assert [r["edge_name"] for r in rows] == [f"{n}<-{i}" for n, i in zip(_NODE, _INPUT, strict=True)]


def test_relative_drop_is_undefined_for_a_zero_or_non_finite_score():
    cands = [(0, 0, 1), (0, 0, 2), (0, 0, 3)]
    scores = {
        (0, 0, 1): _scores([0.0], [5.0], [1], [1]),  # origin 0: undefined -> NaN
        (0, 0, 2): _scores([1.0], [math.inf], [1], [1]),  # (1 - inf) / 1 = -inf: not finite -> NaN
        (0, 0, 3): _scores([1.0], [0.5], [2], [1]),  # origin 1 is an ordinary origin: ΔC 0.5, ΔR 0.5
    }
    rows = rank_stage(cands, scores, _cfg(repeats=1), "round")
    assert math.isnan(rows[0]["delta_cond_repeats"][0]) and math.isnan(rows[1]["delta_cond_repeats"][0])
    assert rows[2]["delta_cond_repeats"] == [0.5] and rows[2]["delta_regions_repeats"] == [0.5]
    # NaN != NaN: two undefined ΔC take two ranks below the finite one (non-finite sorts as least prunable)
    assert [r["rank_cond"] for r in rows] == [1, 2, 0]


def test_missing_scores_count_as_no_change_and_mismatched_repeats_are_an_error():
    # metantk-only / regions-only searches leave the other score's lists empty: ΔC or ΔR is 0 on every repeat
    cands = [(0, 0, 1), (0, 0, 2)]
    scores = {(0, 0, 1): _scores([], [], [100, 100, 100], [90, 90, 90]),
              (0, 0, 2): _scores([10, 10, 10], [9, 9, 9], [], [])}
    rows = rank_stage(cands, scores, _cfg(repeats=3), "round")
    assert rows[0]["delta_cond_repeats"] == [0.0, 0.0, 0.0] and rows[0]["delta_cond"] == 0.0
    assert rows[1]["delta_regions_repeats"] == [0.0, 0.0, 0.0] and rows[1]["delta_regions"] == 0.0
    for bad in (_scores([10, 10], [9], [1], [1]), _scores([1], [1], [10, 10], [9])):
        with pytest.raises(ValueError):
            rank_stage([(0, 0, 1)], {(0, 0, 1): bad}, _cfg(repeats=1), "round")


def test_precision_sets_the_per_repeat_decimals_and_the_sort_key_figures():
    # precision 1: per-repeat drops to 1 decimal, sort keys to 1 significant figure. ΔC means 0.1 (c0) and
    # (0.1 + 0.1 + 0.2) / 3 = 0.133 (c1) both have the key 0.1: the stable sort keeps c0 first, dense ranks 0, 1
    # (different means), so c0 is pruned; with 3 figures 0.133 would sort first and c1 would be pruned
    cands = [(0, 0, 1), (0, 0, 2)]
    scores = {(0, 0, 1): _scores([100] * 3, [90, 90, 90], [1] * 3, [1] * 3),
              (0, 0, 2): _scores([100] * 3, [90, 91, 80], [1] * 3, [1] * 3)}
    rows = rank_stage(cands, scores, _cfg(repeats=3, precision=1), "round")
    assert rows[1]["delta_cond_repeats"] == [0.1, 0.1, 0.2]  # 0.09 -> 0.1 at 1 decimal
    assert [r["rank_cond"] for r in rows] == [0, 1] and [r["pruned"] for r in rows] == [True, False]
    rows = rank_stage(cands, scores, _cfg(repeats=3), "round")
    assert rows[1]["delta_cond_repeats"] == [0.1, 0.09, 0.2]
    assert [r["rank_cond"] for r in rows] == [1, 0] and [r["pruned"] for r in rows] == [False, True]


# ------------------------------------------------------------------------------------------- the loop's decisions
_loop = sys.modules[search.__module__]


def _state(alive):
    return {"alive": alive, "group_origin": None, "rounds": [], "seen": [], "wall_time": 0.0, "n_rounds": 0}


def _full():
    alive = torch.ones(2, 9, 4, dtype=torch.bool)
    alive[..., 0] = False  # every op but none
    return alive


def test_next_stage_lists_every_live_op_of_every_edge_with_several():
    alive = _full()
    alive[0, 3, 2] = alive[0, 3, 3] = False  # normal edge 3 already down to one op: not a candidate
    alive[1, 7, 1] = False
    st = _next_stage(state := _state(alive), _cfg())
    assert (st.name, st.kind) == ("round0", "round")
    want = [(c, e, o) for c in range(2) for e in range(9) for o in (1, 2, 3)
            if (c, e) != (0, 3) and (c, e, o) != (1, 7, 1)]
    assert st.cands == want
    assert torch.equal(st.origin, alive) and torch.equal(st.thin_origin, alive)
    assert state["group_origin"] is None  # rounds do not touch it
    state["n_rounds"] = 4
    assert _next_stage(state, _cfg()).name == "round4"


def _one_op_each(edges_per_node):
    """One live op (op 1 + e % 3) on the given edges of both cells."""
    alive = torch.zeros(2, 9, 4, dtype=torch.bool)
    for c in range(2):
        for e in edges_per_node[c]:
            alive[c, e, 1 + e % 3] = True
    return alive


def test_next_stage_walks_the_edge_groups_node_by_node_then_stops():
    # normal: node 1 has 3 edges, node 2 has 4; reduce: node 1 has 2 (done), node 2 has 3
    alive = _one_op_each([(0, 1, 2, 3, 4, 5, 6, 7, 8), (0, 1, 2, 4, 5, 7, 8)])
    assert _loop._stages(alive) == [(0, 1), (0, 2), (1, 2)]
    state = _state(alive)
    st = _next_stage(state, _cfg())
    assert (st.name, st.kind) == ("group-normal-node1", "group")
    assert st.cands == [(0, 2, 3), (0, 3, 1), (0, 4, 2)]  # (cell, edge, its one live op)
    assert torch.equal(state["group_origin"], alive) and state["group_origin"] is not alive
    assert torch.equal(st.origin, alive) and torch.equal(st.thin_origin, alive)
    # the next group is scored against the mask the edge pass started from (the reference's stale origin) ...
    later = alive.clone()
    later[0, 2] = False
    state["alive"] = later
    st = _next_stage(state, _cfg())
    assert st.name == "group-normal-node2" and st.cands == [(0, 5, 3), (0, 6, 1), (0, 7, 2), (0, 8, 3)]
    assert torch.equal(st.origin, alive) and torch.equal(st.thin_origin, later)
    # ... or against the current one with stale_group_origin=False
    st = _next_stage(state, _cfg(stale_group_origin=False))
    assert torch.equal(st.origin, later)
    # two edges per node everywhere: the search is over
    done = _one_op_each([(0, 1, 3, 4, 7, 8), (0, 1, 2, 4, 5, 7)])
    assert _loop._stages(done) == [] and _next_stage(_state(done), _cfg()) is None


def _next_stage(state, cfg):
    return _loop._next_stage(state, cfg)


def test_apply_stage_removes_exactly_the_pruned_candidates_and_records_the_stage():
    alive = _full()
    state = _state(alive)
    st = _next_stage(state, _cfg())
    rows = [{"pruned": k in ((0, 0, 1), (1, 8, 3)), "nonfinite": False, "cell": "x", "edge": k[1], "op": "y"}
            for k in st.cands]
    _loop._apply_stage(state, st, rows, {7, 3})
    want = alive.clone()
    want[0, 0, 1] = want[1, 8, 3] = False
    assert torch.equal(state["alive"], want) and state["alive"] is not alive and bool(alive[0, 0, 1])
    assert state["rounds"] == [{"stage": "round", "name": "round0", "candidates": rows}]
    assert state["n_rounds"] == 1 and state["seen"] == [3, 7]
    # an edge group does not count as a round
    gst = _loop._Stage("group-normal-node1", "group", [(0, 2, 1)], alive, alive)
    _loop._apply_stage(state, gst, [{"pruned": True, "nonfinite": True, "cell": "normal", "edge": 2, "op": "a"}],
                       set())
    assert state["n_rounds"] == 1 and not state["alive"][0, 2, 1] and len(state["rounds"]) == 2


def test_apply_stage_checks_lengths_and_logs_its_decisions(caplog):
    alive = _full()
    state = _state(alive)
    st = _next_stage(state, _cfg())
    with pytest.raises(ValueError):  # one row per candidate, or the rows do not belong to this stage
        _loop._apply_stage(state, st, [{"pruned": True, "nonfinite": False}], set())
    state = _state(alive)
    rows = [{"pruned": k in ((0, 0, 1), (1, 8, 3)), "nonfinite": k == (0, 4, 2), "cell": ("normal", "reduce")[k[0]],
             "edge": k[1], "op": _SPACE[k[2]]} for k in st.cands]
    with caplog.at_level("INFO", logger=_loop.__name__):
        _loop._apply_stage(state, st, rows, set())
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "round0: non-finite kernel for candidate normal edge 4 op sep_conv_3x3; condition number set to 100000 as "
        "the reference does",
        "round0: pruned normal/0/skip_connect, reduce/8/max_pool_3x3BN"]


def test_region_sort_keys_use_the_given_precision():
    # ΔR ascending: 0.1 (c1) before 0.13 (c0) with 3 figures; with 1 figure both keys are 0.1 and the stable sort
    # keeps c0 first (dense ranks 0, 1 on the different exact values)
    from metantk_zoo.nas import rank_candidates

    assert rank_candidates([0.0, 0.0], [0.13, 0.1], precision=1)[2] == [0, 1]
    assert rank_candidates([0.0, 0.0], [0.13, 0.1], precision=3)[2] == [1, 0]


def test_random_genotype_depends_on_the_seed_only():
    cfg = SearchConfig(ops=_OPS, method="random")
    torch.manual_seed(1)
    first = [_loop._random_genotype(cfg, seed) for seed in range(4)]
    torch.manual_seed(2)  # the global RNG does not enter
    torch.randn(100)
    again = [_loop._random_genotype(cfg, seed) for seed in range(4)]
    assert first == again
    assert len({str(g) for g in first}) > 1
