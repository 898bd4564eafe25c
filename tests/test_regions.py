"""Linear regions: a hand-counted 1-D ReLU net, the unique count against the reference's Hamming formula."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metantk_zoo.errors import KernelError
from metantk_zoo.nas.regions import activation_patterns, count_distinct_rows, count_linear_regions
from metantk_zoo.nas.supernet import SuperNet


def test_hand_counted_regions_of_a_1d_relu_net():
    # h_i(x) = relu(x - b_i) with kinks at 0, 1, 2: the line splits into 4 pieces
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.copy_(torch.tensor([0.0, -1.0, -2.0]))
    x = torch.tensor([-1.0, -0.5, 0.5, 0.7, 1.5, 2.5, 3.5]).view(-1, 1, 1, 1)
    pats = activation_patterns(net, x)
    assert pats.tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    assert count_linear_regions(net, [x]) == 4
    assert count_linear_regions(net, [x[:2], x[4:]]) == 3  # batches are pooled: 000, 110, 111


def _reference_count(patterns: torch.Tensor) -> float:
    a = patterns.double()
    d = a @ (1 - a).T + (1 - a) @ a.T  # Hamming distances
    return (1.0 / (d == 0).sum(1).double()).sum().item()


@pytest.mark.parametrize("d", [5, 63, 64, 130])
def test_unique_count_equals_reference_hamming_formula(d):
    g = torch.Generator().manual_seed(d)
    base = torch.rand(40, d, generator=g) < 0.5
    patterns = base[torch.randint(0, 40, (300,), generator=g)]  # many duplicates
    patterns[:, -1] = patterns[:, 0]  # the last (packed) column matters too
    assert count_distinct_rows(patterns) == round(_reference_count(patterns)) == len({tuple(r) for r in
                                                                                        patterns.tolist()})


def test_thin_supernet_has_the_reference_neuron_count():
    thin = SuperNet.thin_net()
    assert sum(isinstance(m, nn.ReLU) for m in thin.modules()) == 101
    pats = activation_patterns(thin.train(), torch.randn(50, 1, 3, 3))
    assert pats.shape == (50, 1191)  # method-facts §12.4


def test_no_relu_is_an_error():
    with pytest.raises(KernelError, match="no nn.ReLU"):
        activation_patterns(nn.Linear(2, 2), torch.randn(3, 2))
