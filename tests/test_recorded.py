"""Recorded kernel passes (``kernel_graph``): a stage's hook-Gram pass recorded once and replayed with new inputs,
candidate masks, heads and re-drawn body weights, against each candidate's kernel computed alone and eagerly (its
mask set, dead ops not run, its own head): the definition the search's scores come from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metantk_zoo.errors import ConfigError
from metantk_zoo.nas.kernels import empirical_ntk
from metantk_zoo.nas.recorded import RecordedKernelPass, WithHead, check_kernel_graph
from metantk_zoo.nas.supernet import SuperNet, candidate_weights, reset_parameters
from tests._search_helpers import nano_config, nano_source

pytestmark = pytest.mark.usefixtures("one_thread")

#: few ops keep the traced graph small (the trace is the slow part): a weighted op, a pool, the identity
SPACE = ("none", "skip_connect", "dil_conv_3x3", "max_pool_3x3BN")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _net() -> tuple[SuperNet, torch.Tensor]:
    """A float64 kernel network mid-search: one op already pruned, so the structure is not the full space."""
    net = SuperNet.kernel_net(channels=4, num_cells=3, num_classes=5, space=SPACE, share_inputs=True).double()
    reset_parameters(net, torch.Generator().manual_seed(0))
    structure = net.alive.clone()
    structure[0, 2, 2] = False
    return net, structure


def _candidates(structure: torch.Tensor, ops: list[tuple[int, int, int]]) -> torch.Tensor:
    """(G, 2, 9, n_ops): the structure with one (cell, edge, op) removed per candidate; (c, e, -1) removes edge e."""
    masks = []
    for c, e, o in ops:
        m = structure.clone()
        if o < 0:
            m[c, e, :] = False
        else:
            m[c, e, o] = False
        masks.append(m)
    return torch.stack(masks)


def _heads(seed: int, n: int, features: int) -> list[nn.Linear]:
    torch.manual_seed(seed)
    return [nn.Linear(features, 3).double() for _ in range(n)]


def _alone(net: SuperNet, mask: torch.Tensor, x: torch.Tensor, head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """One candidate's NTK and head Gram, eagerly with its own mask: the search's one-by-one definition."""
    net.set_alive(mask)
    grams = empirical_ntk(WithHead(net, head), x, backend="hook", per_layer=True)
    return torch.stack(list(grams.values())).sum(0), grams["head"]


def test_fx_replay_equals_each_candidate_alone_after_new_inputs_heads_and_weights():
    net, structure = _net()
    gen = torch.Generator().manual_seed(1)
    n = 4  # samples per candidate

    def batch(ops):
        masks = _candidates(structure, ops)
        x = torch.randn(len(ops) * n, 3, 8, 8, dtype=torch.float64, generator=gen)
        return masks, x

    masks, x = batch([(0, 0, 1), (1, 4, 2)])
    heads = _heads(0, 2, net.num_features)
    recorded = RecordedKernelPass(net, structure, x, candidate_weights(masks), heads, "fx")
    theta0, nngp0 = recorded(x, candidate_weights(masks), heads)
    for i in range(2):
        theta, nngp = _alone(net, masks[i], x[i * n:(i + 1) * n], heads[i])
        assert _rel(theta0[i], theta) < 1e-10 and _rel(nngp0[i], nngp) < 1e-10

    # everything a later candidate changes: its mask (here a whole edge), its inputs, its head, the body's weights
    reset_parameters(net, torch.Generator().manual_seed(7))
    masks, x = batch([(1, 5, -1), (0, 3, 3)])
    heads = _heads(1, 2, net.num_features)
    theta1, nngp1 = recorded(x, candidate_weights(masks), heads)
    for i in range(2):
        theta, nngp = _alone(net, masks[i], x[i * n:(i + 1) * n], heads[i])
        assert _rel(theta1[i], theta) < 1e-10 and _rel(nngp1[i], nngp) < 1e-10
        assert _rel(theta1[i], theta0[i]) > 1e-3  # a replay that ignored the new values would fail above
    with pytest.raises(ConfigError, match=r"takes inputs \(8, 3, 8, 8\)"):
        recorded(x[:4], candidate_weights(masks[:1]), heads[:1])


def test_kernel_graph_modes_are_checked():
    with pytest.raises(ConfigError, match="needs a CUDA device, found cpu"):
        check_kernel_graph("cuda-graph", torch.device("cpu"))
    with pytest.raises(ConfigError, match="kernel_graph must be one of eager, cuda-graph, fx, found 'jit'"):
        check_kernel_graph("jit", torch.device("cpu"))
    net, structure = _net()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ConfigError, match="records nothing"):
        RecordedKernelPass(net, structure, x, candidate_weights(structure[None]), None, "eager")


def _float64_scorer(cfg, monkeypatch, kernel_graph: str):
    from metantk_zoo.nas import loop

    data = loop._Data(nano_source(), cfg, torch.device("cpu"))
    scorer = loop._Scorer(cfg, 0, data, torch.device("cpu"), "hook", kernel_graph=kernel_graph)
    scorer.kernel_net.double()
    draw = scorer._kernel_input
    monkeypatch.setattr(scorer, "_kernel_input", lambda g: draw(g).double())
    return scorer


def test_scorer_with_fx_kernel_graph_gives_the_one_by_one_scores(monkeypatch):
    """A round scored through one recorded pass (4 candidates and, with the reference protocol, each one's own
    unpruned kernel: 8 meta-batches) against the eager one-by-one scorer: every condition number to 1e-10
    relative in float64."""
    from metantk_zoo.nas.supernet import initial_alive

    cfg = nano_config(protocol="reference", method="metantk-only")
    alive = initial_alive(len(cfg.space))
    keys = [(0, 0, 1), (0, 4, 2), (1, 8, 1), (1, 2, 2)]
    cands = []
    for key in keys:
        cand = alive.clone()
        cand[key] = False
        cands.append(cand)
    one = _float64_scorer(cfg, monkeypatch, "eager")
    one.start_stage("round0")
    expected = {k: one.score("round0", k, c, alive, alive) for k, c in zip(keys, cands, strict=True)}
    fx = _float64_scorer(cfg, monkeypatch, "fx")
    fx.start_stage("round0")
    got = fx.score_many("round0", keys, cands, alive, alive)
    assert list(fx._recorded) == [(8, (8 * cfg.n_tasks * cfg.n_way * 2, 3, 8, 8))]
    worst = max(abs(a - b) / abs(b) for k in keys for field in ("cond_origin", "cond")
                for a, b in zip(got[k][field], expected[k][field], strict=True))
    assert worst < 1e-10, worst
    assert len({round(expected[k]["cond"][0], 6) for k in keys}) == len(keys)  # distinct values: not all one number


@pytest.mark.slow
@pytest.mark.parametrize("method", ["metantk", "tenas"])
def test_search_with_fx_kernel_graph_scores_as_eager(method):
    """The nano search (float32, every stage recorded and replayed; TE-NAS: the classifier's NTK, no head): the
    same genotype, the same pruning decisions and condition numbers equal to float32 rounding."""
    from metantk_zoo.nas import search

    cfg = nano_config(protocol="reference", method=method)
    eager = search(nano_source(), cfg, seed=0, show_progress=False)
    fx = search(nano_source(), cfg, seed=0, show_progress=False, kernel_graph="fx", candidate_batch=4)
    assert fx.genotype == eager.genotype
    assert [[c["pruned"] for c in r["candidates"]] for r in fx.rounds] == \
        [[c["pruned"] for c in r["candidates"]] for r in eager.rounds]
    conds = [(a, b) for r, s in zip(fx.rounds, eager.rounds, strict=True)
             for c, d in zip(r["candidates"], s["candidates"], strict=True)
             for a, b in zip(c["cond"], d["cond"], strict=True)]
    assert conds and all(abs(a - b) <= 1e-4 * abs(b) for a, b in conds)


def test_search_refuses_a_kernel_graph_it_cannot_run_before_any_work():
    from metantk_zoo.nas import search

    cfg = nano_config()
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        search(nano_source(), cfg, seed=0, show_progress=False, kernel_graph="cuda-graph")
    with pytest.raises(ConfigError, match="records the hook Gram; found backend 'func'"):
        search(nano_source(), cfg, seed=0, show_progress=False, kernel_graph="fx", backend="func")
