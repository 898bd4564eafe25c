"""Searches whose right genotype is known in advance, scored for real (method-facts §4-6).

Nothing here injects scores: ``search()`` builds its kernel network and its thin network, computes the hook NTK, the
analytic MetaNTK (or TE-NAS's NTK) and its condition number, counts ReLU sign patterns, ranks and prunes. What is
planted is the problem: the two candidate op names of the space are replaced in the op registry (``OPS``) by
:class:`_PlantedOp`, which is told its (cell type, edge, op index) when a supernet is built, and whose effect on both
scores is computable by hand:

* Every planted op outputs zeros of the right shape, so every node of every cell is 0, the features are 0 and no
  stem/preprocessing/head weight gets a gradient: the NTK is exactly the sum of the live ops' *probe* Grams, and the
  thin network's only varying ReLUs are the live ops' *region* ReLUs (the source images are bright, so the ReLUs that
  read the raw patch are all on; those that read the zero cells are all off).
* Probe: a ``Linear(64, 1)`` fed the one-hot position code of each sample scaled by ``sqrt(g)`` (``sqrt(g + k)`` for
  sample 0), whose output gradient is set to 1 by a custom backward while the forward value is discarded. Its Gram is
  ``g * I + k * E00``. The live set ``S`` gives ``Theta = diag(G + K, G, ..., G)`` with ``G = sum g``,
  ``K = sum k`` over ``S``: off-diagonal query-support blocks are 0, so ``A_i = 0`` and the MetaNTK is
  ``Theta_QQ`` (MAML and ANIL alike; the head Gram is 0), and ``cond = 1 + K / G`` for MetaNTK and TE-NAS's NTK.
* Region ReLUs: ``ReLU(i - c + 1/2)`` for the sample position ``i`` and the op's own cut positions ``c``. The count
  of distinct patterns is ``1 + (number of distinct live cuts)``: removing an op with ``b`` cuts drops it by ``b``.

Planted per (cell, edge): one *good* op (``g = 1``, 2 cuts; on the edges the edge pass must drop ``k = 3`` and 1
cut, elsewhere ``k = 0``) and one *bad* op (``g = 0, k = 10``, no cut: it piles kernel mass on one sample and adds no
region). Hand derivation (``R`` = region count, ``ΔC = (C_orig - C_cand) / C_orig``, ``ΔR`` likewise, keys to
3 decimals):

* Round 0 (the only round, 36 candidates): ``G = 18``, ``K = 18*10 + 6*3 = 198``, ``C = 12``, ``R = 1 + 30 = 31``.
  Removing a bad op: ``C = 1 + 188/18``, ``ΔC = 10/216 = +0.046``, ``ΔR = 0``. Removing a good op:
  ``C = 1 + 198/17`` (``ΔC = -0.054``, ``ΔR = 2/31 = 0.065``) or ``1 + 195/17`` on a drop edge (``ΔC = -0.039``,
  ``ΔR = 1/31 = 0.032``). On every edge the bad op has the larger ΔC and the smaller ΔR, so the lower rank sum
  (0 against 2 or 4): every bad op is pruned, every good op survives, whichever criterion is used alone.
* Edge pass, the kernel compared with the network at its start (``G = 18, K = 18, C = 2``): normal node 1
  (``R = 31``): removing the drop edge gives ``C = 1 + 15/17`` (``ΔC = +0.059, ΔR = 0.032``), a keep edge
  ``1 + 18/17`` (``ΔC = -0.029, ΔR = 0.065``); normal node 2 (``G = 17, K = 15, R = 30``): drop ``1 + 12/16``
  (``ΔC = 0.125``), keep ``1 + 15/16`` (``ΔC = 0.031``); reduce node 1 (``G = 15, K = 9``): 0.286 against 0.179;
  reduce node 2 (``G = 14, K = 6``): 0.385 against 0.269. In every group the drop edges have the larger ΔC and the
  smaller ΔR: they get the lowest totals and are pruned; the two keep edges survive.

So the genotype is the good op of every edge, on node 0's two inputs and on the two keep edges of nodes 1 and 2
(:data:`_EXPECTED`, written out by hand). The keep edges are chosen so that the all-tied answer (the last two
inputs) is wrong for three of the four groups, and the good op alternates between the two names.

With the relative change's sign flipped, every bad op survives; with the two *worst* edges kept, the drop edges
survive: both give other genotypes (checked by planting those faults in a copy of the package).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metantk_zoo.genotype import Genotype
from metantk_zoo.models import ops as ops_module
from metantk_zoo.nas import SearchConfig, TensorSource, search
from metantk_zoo.nas.loop import _rng
from metantk_zoo.nas.supernet import EDGES, NODE_EDGES, SuperNet

pytestmark = pytest.mark.usefixtures("one_thread")

_A, _B = "sep_conv_3x3", "max_pool_3x3BN"  # the two registry names the planted ops take
_SPACE = ("none", _A, _B)
_CODE = 64  # probe width: positions 0..63 get orthogonal codes (every batch here is smaller)

#: (cell, edge) -> the op index (1 = _A, 2 = _B) of the good op; the other op of the edge is bad
_GOOD = {(c, e): 1 + (c + e) % 2 for c in range(2) for e in range(9)}
#: edges the edge pass must drop: one of node 1's three, two of node 2's four, per cell
_DROP = {(0, 3), (0, 5), (0, 8), (1, 4), (1, 6), (1, 7)}
_KAPPA, _K_DROP = 10.0, 3.0  # the bad op's skew; a drop edge's good op's skew


def _cuts() -> dict[tuple[int, int], tuple[int, ...]]:
    """Distinct cut positions 1..30: two per good op on a keep edge, one on a drop edge."""
    out, nxt = {}, 1
    for c in range(2):
        for e in range(9):
            n = 1 if (c, e) in _DROP else 2
            out[(c, e)] = tuple(range(nxt, nxt + n))
            nxt += n
    return out


_CUTS = _cuts()

# the answer, by hand from the tables above: good ops (normal: _A on even edges; reduce: _A on odd edges) on
# node 0's inputs 0, 1 and on the keep edges (normal node 1: edges 2, 4; node 2: edges 6, 7; reduce node 1: 2, 3;
# node 2: 5, 8)
_EXPECTED = Genotype(
    normal=[[(_A, 0), (_B, 1)], [(_A, 0), (_A, 2)], [(_A, 1), (_B, 2)]],
    reduce=[[(_B, 0), (_A, 1)], [(_B, 0), (_A, 1)], [(_A, 0), (_B, 3)]],
)


class _InjectGrad(torch.autograd.Function):
    """Forward: ``out``; backward: the incoming gradient to ``out`` and a gradient of ones to ``probe``."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        ctx.probe_shape = probe.shape
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.new_ones(ctx.probe_shape)


class _PlantedOp(nn.Module):
    """Zeros of the op's output shape; a probe Gram ``g * I + k * E00`` in the NTK; ReLUs at its cut positions.

    The ReLUs run only without autograd (the thin network's region count), the probe only with it (the kernel
    network): each network sees the part that the hand derivation gives it, and neither pays for the other.
    """

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.probe = nn.Linear(_CODE, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.g, self.k, self.cuts = 0.0, 0.0, ()

    def place(self, cell: int, edge: int, op: int) -> None:
        if op == _GOOD[(cell, edge)]:
            self.g, self.k, self.cuts = 1.0, _K_DROP if (cell, edge) in _DROP else 0.0, _CUTS[(cell, edge)]
        else:
            self.g, self.k, self.cuts = 0.0, _KAPPA, ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x if self.stride == 1 else x[:, :, ::2, ::2]) * 0.0
        n = x.shape[0]
        if not torch.is_grad_enabled():  # the thin network (regions are counted without a graph): the ReLUs
            if self.cuts:
                pos = torch.arange(n, dtype=x.dtype, device=x.device)
                self.relu(pos[:, None] - torch.tensor(self.cuts, dtype=x.dtype, device=x.device) + 0.5)  # (N, cuts)
            return out
        # the kernel network: the probe, on the graph (through 0 * x) so that the NTK hook sees it
        scale = torch.full((min(n, _CODE),), math.sqrt(self.g), dtype=x.dtype, device=x.device)
        scale[0] = math.sqrt(self.g + self.k)
        code = torch.zeros(n, _CODE, dtype=x.dtype, device=x.device)
        code[: len(scale), : len(scale)] = torch.diag(scale)
        code = code + 0.0 * x.flatten(1)[:, :1]
        return _InjectGrad.apply(out, self.probe(code))


@pytest.fixture
def planted(monkeypatch):
    """The two op names of :data:`_SPACE` build :class:`_PlantedOp`, placed on their (cell type, edge, op)."""
    for name in (_A, _B):
        monkeypatch.setitem(ops_module.OPS, name, lambda c, stride, affine, **dd: _PlantedOp(stride))
    init = SuperNet.__init__

    def placing_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for cell in self.cells:
            for e, edge in enumerate(cell.edges):
                for o, op in enumerate(edge):
                    if isinstance(op, _PlantedOp):
                        op.place(int(cell.reduction), e, o)

    monkeypatch.setattr(SuperNet, "__init__", placing_init)


def _config(**overrides) -> SearchConfig:
    base = dict(channels=4, num_cells=4, resolution=4, repeats=1, n_tasks=2, n_way=2, ntk_batch=8,
                region_patches=40, region_batches=1, ops=(_A, _B), episode_pool=20)
    base.update(overrides)
    return SearchConfig(**base)


def _bright_source() -> TensorSource:
    """Images in [200, 255]: every mini-ImageNet-normalised patch value is positive."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(200, 256, (24, 3, 12, 12), dtype=torch.uint8, generator=g)
    return TensorSource(images, torch.arange(24) % 6)


def _row(res, stage: str, cell: int, edge: int, op: str) -> dict:
    st = next(s for s in res.rounds if s["name"] == stage)
    return next(r for r in st["candidates"] if r["cell"] == ("normal", "reduce")[cell] and r["edge"] == edge
                and r["op"] == op)


@pytest.mark.parametrize("method, extra", [
    ("metantk", {}),
    ("metantk", {"protocol": "reference", "kernel": "anil"}),
    ("tenas", {}),
    ("metantk-only", {}),
    ("regions-only", {}),
])
def test_planted_problem_gives_the_known_genotype(planted, method, extra):
    res = search(_bright_source(), _config(method=method, **extra), seed=0, show_progress=False)
    assert res.genotype == _EXPECTED
    assert [s["name"] for s in res.rounds] == ["round0", "group-normal-node1", "group-normal-node2",
                                               "group-reduce-node1", "group-reduce-node2"]
    # the hand-derived scores of round 0 and of the first edge group, where the criterion is used
    bad = _row(res, "round0", 0, 0, _B)  # normal edge 0: good op is _A
    keep = _row(res, "round0", 0, 0, _A)
    drop = _row(res, "round0", 0, 3, _B)  # normal edge 3 (a drop edge): good op is _B
    g_keep = _row(res, "group-normal-node1", 0, 2, _A)
    g_drop = _row(res, "group-normal-node1", 0, 3, _B)
    if method != "regions-only":
        assert bad["cond_origin"][0] == pytest.approx(1 + 198 / 18, rel=1e-5)
        assert bad["cond"][0] == pytest.approx(1 + 188 / 18, rel=1e-5)
        assert (bad["delta_cond"], keep["delta_cond"], drop["delta_cond"]) == (0.046, -0.054, -0.039)
        assert (g_drop["delta_cond"], g_keep["delta_cond"]) == (0.059, -0.029)
    else:
        assert bad["delta_cond"] == keep["delta_cond"] == 0
    if method != "metantk-only":
        assert (bad["regions_origin"][0], bad["regions"][0], keep["regions"][0], drop["regions"][0]) == (31, 31, 29, 30)
        assert (bad["delta_regions"], keep["delta_regions"], drop["delta_regions"]) == (0.0, 0.065, 0.032)
        assert (g_drop["delta_regions"], g_keep["delta_regions"]) == (0.032, 0.065)
    else:
        assert bad["delta_regions"] == keep["delta_regions"] == 0
    assert bad["pruned"] and not keep["pruned"] and not drop["pruned"]
    assert g_drop["pruned"] and not g_keep["pruned"]


def _random_rule(seed: int, space: tuple[str, ...]) -> Genotype:
    """§6.4 transcribed: alphas ``1e-3 * N(0, 1)`` (2 x 9 x |space|, float64, the run's ``random-alphas`` stream);
    per node the two input edges with the largest non-``none`` softmax weight (stable, ties to the lower input), on
    each the non-``none`` op of largest weight."""
    alphas = 1e-3 * torch.randn(2, 9, len(space), generator=_rng(seed, "random-alphas"), dtype=torch.float64)
    w = torch.softmax(alphas, -1).tolist()
    cells = []
    for c in range(2):
        nodes = []
        for edge_ids in NODE_EDGES:
            best = sorted(edge_ids, key=lambda e: -max(w[c][e][1:]))[:2]
            pairs = []
            for e in sorted(best):
                op = max(range(1, len(space)), key=lambda o: (w[c][e][o], -o))
                pairs.append((space[op], EDGES[e][1]))
            nodes.append(pairs)
        cells.append(nodes)
    return Genotype(normal=cells[0], reduce=cells[1])


def test_random_baseline_is_its_documented_rule():
    space = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3BN")
    cfg = _config(method="random", ops=space[1:])
    got = [search(_bright_source(), cfg, seed=s, show_progress=False) for s in range(40)]
    assert [r.genotype for r in got] == [_random_rule(s, space) for s in range(40)]
    assert all(r.rounds == [] for r in got)  # nothing was scored
    assert len({r.genotype for r in got}) > 30  # the seed is used
