"""Supernet: reference sizes, masking equals rebuilding without the op, GroupNorm16, genotype extraction, init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metantk_zoo.errors import ConfigError
from metantk_zoo.models.genotypes import NAMED
from metantk_zoo.models.ops import DARTS_FEWSHOT
from metantk_zoo.nas.kernels import empirical_ntk
from metantk_zoo.nas.regions import activation_patterns, count_linear_regions
from metantk_zoo.nas.supernet import (
    SuperNet,
    alive_weights,
    genotype_from_alive,
    initial_alive,
    reset_parameters,
)


def test_kernel_net_has_the_reference_size_and_groupnorm16():
    net = SuperNet.kernel_net(48, 5, 64)
    params = dict(net.named_parameters())
    assert sum(p.numel() for p in params.values()) == 12_846_160  # method-facts §12.4
    conv_w = sum(p.numel() for n, p in params.items() if n.endswith("weight") and p.dim() > 1 and "classifier" not in n)
    assert conv_w == 12_723_408
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(m.num_groups == 16 for m in net.modules() if isinstance(m, nn.GroupNorm))
    assert net.num_features == 576


def test_masking_an_op_equals_a_network_built_without_it():
    torch.manual_seed(0)
    full = SuperNet.kernel_net(4, 3, 7).double().eval()
    drop = DARTS_FEWSHOT.index("conv_3x3")
    space = tuple(op for op in DARTS_FEWSHOT if op != "conv_3x3")
    small = SuperNet.kernel_net(4, 3, 7, space=space).double().eval()
    state = {}
    for k, v in full.state_dict().items():
        parts = k.split(".")
        if "edges" in parts:
            i = parts.index("edges") + 2
            o = int(parts[i])
            if o == drop:
                continue
            parts[i] = str(o - (o > drop))
        state[".".join(parts)] = v
    state["alive"] = small.alive
    small.load_state_dict(state)
    alive = full.alive.clone()
    alive[..., drop] = False
    full.set_alive(alive)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(full(x), small(x), rtol=1e-12, atol=1e-12)


def test_removed_edge_contributes_nothing_and_dead_ops_do_not_run():
    torch.manual_seed(0)
    net = SuperNet.kernel_net(4, 3, 7).eval()
    alive = net.alive.clone()
    alive[0, 0, :] = False
    net.set_alive(alive)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(p.grad is None for p in net.cells[0].edges[0].parameters())
    assert net.cells[0].edges[1][2].op_a.op[1].weight.grad is not None
    with pytest.raises(ConfigError, match="'none'"):
        net.set_alive(torch.ones_like(alive))


def _random_alive(net: SuperNet, g: torch.Generator) -> torch.Tensor:
    """A mask with random dead ops and, on nodes with 3+ inputs, an edge removed; every node keeps a live edge."""
    alive = net.alive.clone()
    alive[..., 1:] = torch.rand(alive[..., 1:].shape, generator=g) < 0.6
    alive[..., 1] |= ~alive[..., 1:].any(-1)  # no edge is removed by accident
    alive[:, 4] = False  # node 1 keeps edges 2 and 3
    return alive


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_inputs_forward_is_bitwise_the_plain_forward(dtype):
    """``share_inputs`` computes each state's ReLU and pools once: same outputs bit for bit, same gradients up to
    summation order, and the same NTK (hook, opacus and torch.func backends) within that rounding."""
    torch.manual_seed(0)
    net = SuperNet.kernel_net(8, 5, 5).to(dtype).train()  # both reduction cells: stride-2 pools, FactorizedReduce
    x = torch.randn(4, 3, 16, 16, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    for alive in (net.alive.clone(), _random_alive(net, g), _random_alive(net, g)):
        net.set_alive(alive)
        outs, grads, grams = [], [], []
        for share in (False, True):
            net.share_inputs = share
            net.zero_grad(set_to_none=True)
            out = net(x)
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append({k: p.grad for k, p in net.named_parameters() if p.grad is not None})
            grams.append(empirical_ntk(net, x))
        assert torch.equal(outs[0], outs[1])
        assert grads[0].keys() == grads[1].keys()
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        for k in grads[0]:
            torch.testing.assert_close(grads[1][k], grads[0][k], rtol=tol, atol=tol * grads[0][k].abs().max().item())
        assert (grams[1] - grams[0]).abs().max() <= tol * grams[0].abs().max()
        # every backend runs on the shared network (opacus's backward hooks forbid in-place edits of outputs)
        for backend in ("opacus", "func"):
            k = empirical_ntk(net, x, backend=backend)
            assert (k - grams[0]).abs().max() <= tol * grams[0].abs().max()


def test_shared_inputs_keep_the_activation_patterns_up_to_duplicate_columns():
    """With ``share_inputs`` a state's ReLU pattern is recorded once instead of once per op: fewer, identical
    columns, hence the same distinct rows (the linear-region count), for random masks and both thin-net cells."""
    torch.manual_seed(0)
    thin = SuperNet.thin_net().train()
    assert not thin.share_inputs  # off unless asked for
    g = torch.Generator().manual_seed(2)
    for alive in (thin.alive.clone(), _random_alive(thin, g), _random_alive(thin, g)):
        thin.set_alive(alive)
        batches = [torch.randn(300, 1, 3, 3, generator=g).round() for _ in range(2)]  # ties: repeated patterns
        counts, widths = [], []
        for share in (False, True):
            thin.share_inputs = share
            torch.manual_seed(3)
            pats = torch.cat([activation_patterns(thin, b) for b in batches])
            widths.append(pats.shape[1])
            counts.append(count_linear_regions(thin, batches))
            assert counts[-1] == torch.unique(pats, dim=0).shape[0]
        assert counts[0] == counts[1] and 1 < counts[0] < 600
        assert widths[1] < widths[0]


def test_genotype_from_alive_round_trips_a_published_genotype():
    g = NAMED["mini5_a"]
    alive = torch.zeros(2, 9, len(DARTS_FEWSHOT), dtype=torch.bool)
    from metantk_zoo.nas.supernet import EDGES

    for c, cell in enumerate((g.normal, g.reduce)):
        for node, pairs in enumerate(cell):
            for op, j in pairs:
                alive[c, EDGES.index((node, j)), DARTS_FEWSHOT.index(op)] = True
    assert genotype_from_alive(alive, DARTS_FEWSHOT) == g
    w = alive_weights(alive)
    assert w[0, 0].sum() == pytest.approx(1.0) and w[0, 2, 1] == pytest.approx(1 / 8)  # removed edge: uniform


def test_initial_mask_and_tie_order():
    alive = initial_alive(8)
    assert alive.sum() == 2 * 9 * 7 and not alive[..., 0].any()
    g = genotype_from_alive(alive, DARTS_FEWSHOT)  # all ties: first two inputs, first candidate op
    assert g.normal[2] == (("skip_connect", 0), ("skip_connect", 1))


def test_reset_parameters_is_seeded_and_follows_pytorch_default_bounds():
    a, b = SuperNet.thin_net(), SuperNet.thin_net()
    reset_parameters(a, torch.Generator().manual_seed(3))
    reset_parameters(b, torch.Generator().manual_seed(3))
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n
    lin = reset_parameters(nn.Linear(576, 5), torch.Generator().manual_seed(0))
    bound = 1 / 576**0.5
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    k = reset_parameters(nn.Linear(576, 5), torch.Generator().manual_seed(0), "kaiming")
    assert k.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.1) and k.bias.abs().sum() == 0


def test_groupnorm_needs_divisible_widths():
    with pytest.raises(ConfigError, match="divisible"):
        SuperNet.kernel_net(24, 5)
