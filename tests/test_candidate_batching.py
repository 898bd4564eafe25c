"""Candidate batching: several candidates' meta-batches through one forward and backward, masked per sample, the hook
Gram folded block-diagonally, equal in float64 to scoring the candidates one by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metantk_zoo.errors import ConfigError, KernelError
from metantk_zoo.nas.kernels import empirical_ntk
from metantk_zoo.nas.supernet import SuperNet
from tests._search_helpers import nano_config, nano_source

pytestmark = pytest.mark.usefixtures("one_thread")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def _masks(net: SuperNet) -> torch.Tensor:
    """Three masks as a search meets them: one op removed; another op removed; a whole edge removed."""
    base = net.alive.clone()
    base[0, 2, 3] = False
    a, b, c = base.clone(), base.clone(), base.clone()
    a[0, 0, 1] = False
    b[1, 4, 2] = False
    c[1, 5, :] = False
    return torch.stack([a, b, c])


class _Heads(nn.Module):
    def __init__(self, body: SuperNet, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        return self.head(self.body.forward_features(x))


def test_set_candidates_forward_equals_each_mask_alone():
    torch.manual_seed(0)
    net = SuperNet.kernel_net(channels=4, num_cells=3, num_classes=5, share_inputs=True).double()
    masks = _masks(net)
    xs = [torch.randn(4, 3, 8, 8, dtype=torch.float64) for _ in masks]
    alone = []
    for m, x in zip(masks, xs, strict=True):
        net.set_alive(m)
        alone.append(net.forward_features(x))
    net.set_candidates(masks)
    together = net.forward_features(torch.cat(xs))
    assert torch.equal(net.alive, masks.any(0))
    net.set_candidates(None)
    assert _rel(together, torch.cat(alone)) < 1e-13
    with pytest.raises(ConfigError, match="divisible by 3"):
        net.set_candidates(masks)
        net.forward_features(torch.randn(4, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ConfigError, match="expected masks of shape"):
        net.set_candidates(masks[0])


@pytest.mark.parametrize("use_bias", [False, True])
def test_grouped_hook_gram_is_the_diagonal_blocks_of_the_full_gram(use_bias):
    """groups=G returns the G diagonal blocks of the full Gram: checked against the full hook Gram and torch.func."""
    torch.manual_seed(1)
    net = SuperNet.kernel_net(channels=4, num_cells=3, num_classes=5).double()
    model = _Heads(net, nn.Linear(net.num_features, 5).double())
    x = torch.randn(9, 3, 8, 8, dtype=torch.float64)
    got = empirical_ntk(model, x, use_bias=use_bias, groups=3)
    assert got.shape == (3, 3, 3) and got.dtype == torch.float64
    for backend in ("hook", "func"):
        full = empirical_ntk(model, x, backend=backend, use_bias=use_bias)
        blocks = torch.stack([full[3 * i:3 * i + 3, 3 * i:3 * i + 3] for i in range(3)])
        assert _rel(got, blocks) < 1e-12, backend
    per_layer = empirical_ntk(model, x, use_bias=use_bias, groups=3, per_layer=True)
    assert _rel(sum(per_layer.values()), got) < 1e-13
    with pytest.raises(KernelError, match="divide"):
        empirical_ntk(model, x, groups=2)


def _float64_scorer(cfg, monkeypatch):
    """A scorer whose kernel network, heads and inputs are float64."""
    from metantk_zoo.nas import loop

    data = loop._Data(nano_source(), cfg, torch.device("cpu"))
    scorer = loop._Scorer(cfg, 0, data, torch.device("cpu"), "hook")
    scorer.kernel_net.double()
    draw = scorer._kernel_input
    monkeypatch.setattr(scorer, "_kernel_input", lambda g: draw(g).double())
    return scorer


@pytest.mark.parametrize("kernel, protocol", [("maml", "shared"), ("anil", "shared"), ("maml", "reference")])
def test_batched_scores_equal_one_by_one_in_float64(monkeypatch, kernel, protocol):
    """Every condition number of a batch of candidates (origin and candidate kernels) equals the one-by-one value to
    1e-10 relative in float64, and the rows (rounded per-repeat scores, region counts) are identical."""
    from metantk_zoo.nas.supernet import initial_alive

    cfg = nano_config(kernel=kernel, protocol=protocol, repeats=2, inner_lr_time=1.0 if kernel == "anil" else 1e9)
    alive = initial_alive(len(cfg.space))
    keys = [(c, e, o) for c in range(2) for e in (0, 4, 8) for o in range(1, len(cfg.space))][:5]
    cands = []
    for key in keys:
        cand = alive.clone()
        cand[key] = False
        cands.append(cand)
    one = _float64_scorer(cfg, monkeypatch)
    one.start_stage("round0")
    rows_one = {k: one.score("round0", k, c, alive, alive) for k, c in zip(keys, cands, strict=True)}
    many = _float64_scorer(cfg, monkeypatch)
    many.start_stage("round0")
    rows_many = many.score_many("round0", keys, cands, alive, alive)
    worst = 0.0
    for k in keys:
        for field in ("cond_origin", "cond"):
            for a, b in zip(rows_many[k][field], rows_one[k][field], strict=True):
                worst = max(worst, abs(a - b) / abs(b))
        assert rows_many[k]["regions"] == rows_one[k]["regions"]
        assert rows_many[k]["regions_origin"] == rows_one[k]["regions_origin"]
    assert worst < 1e-10, worst
    print(f"max relative difference of batched vs one-by-one condition numbers: {worst:.2e}")


def test_batched_search_gives_the_one_by_one_result():
    """The nano search (float32) with candidates batched 4 at a time and one by one: the same genotype and the same
    pruning decisions in every stage."""
    from metantk_zoo.nas import search

    cfg = nano_config()
    one = search(nano_source(), cfg, seed=0, show_progress=False, candidate_batch=1)
    four = search(nano_source(), cfg, seed=0, show_progress=False, candidate_batch=4)
    assert four.genotype == one.genotype
    assert [[c["pruned"] for c in r["candidates"]] for r in four.rounds] == \
        [[c["pruned"] for c in r["candidates"]] for r in one.rounds]


def test_candidate_batch_default_is_one_on_the_cpu_and_validated():
    from metantk_zoo.nas.loop import default_candidate_batch

    assert default_candidate_batch(torch.device("cpu")) == 1
    from metantk_zoo.nas import search

    with pytest.raises(ConfigError, match="candidate_batch"):
        search(nano_source(), nano_config(), candidate_batch=0, show_progress=False)
