"""Known answers for the kernels and region counts (``nas/kernels.py``, ``nas/regions.py``) that the other kernel
tests do not pin down: the per-candidate diagonal blocks (``groups``) of every backend against a brute-force
Jacobian, the per-layer naming, the state each backend leaves behind, the error messages, a bit pattern whose
distinctness float arithmetic would lose, and the device of ``meta_ntk``'s output.

Written against mutants the other tests let through (``scripts/mutation_test.sh``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metantk_zoo.errors import KernelError
from metantk_zoo.nas import kernels
from metantk_zoo.nas.kernels import empirical_ntk, meta_ntk
from metantk_zoo.nas.regions import count_distinct_rows, count_linear_regions

DT = torch.float64


class _Net(nn.Module):
    """Sample-independent: a dense 3x3 conv (padded), a 1x1 conv, a grouped conv, a per-position Linear on 4-D
    activations (3-D input to the Linear after the permute) and a Linear head, with biases."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 1)
        self.c3 = nn.Conv2d(4, 4, 3, groups=2)
        self.lin = nn.Linear(4, 3)
        self.head = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x):
        h = torch.tanh(self.c3(torch.tanh(self.c2(torch.tanh(self.c1(x))))))  # (N, 4, 2, 2)
        h = torch.tanh(self.lin(h.permute(0, 2, 3, 1)))  # (N, 2, 2, 3)
        return self.head(h.flatten(1))


def _jacobian_gram(model: nn.Module, x: torch.Tensor, use_bias: bool) -> dict[str, torch.Tensor]:
    """Per layer, the Gram of per-sample gradients from one backward per sample (the definition)."""
    names = [n for n, _ in model.named_parameters() if use_bias or n.endswith("weight")]
    rows: dict[str, list] = {}
    for i in range(x.shape[0]):
        model.zero_grad()
        model(x[i:i + 1]).sum().backward()
        for n in names:
            rows.setdefault(n.rsplit(".", 1)[0], []).append(dict(model.named_parameters())[n].grad.flatten())
    out = {}
    for layer in rows:
        per_param = rows[layer]
        k = len(per_param) // x.shape[0]
        j = torch.stack([torch.cat(per_param[i * k:(i + 1) * k]) for i in range(x.shape[0])])
        out[layer] = j @ j.T
    return out


@pytest.mark.parametrize("backend", ["hook", "opacus", "func"])
@pytest.mark.parametrize("use_bias", [False, True])
def test_groups_give_the_diagonal_blocks_of_the_brute_force_gram(monkeypatch, backend, use_bias):
    torch.manual_seed(0)
    model = _Net().double()
    x = torch.randn(6, 2, 4, 4, dtype=DT)
    full = _jacobian_gram(model, x, use_bias)
    # tiny column chunks: every layer's Gram is accumulated over several blocks
    monkeypatch.setattr(kernels, "GRAM_CHUNK", 5)
    for groups in (1, 2, 3):
        n = 6 // groups
        got = empirical_ntk(model, x, backend=backend, use_bias=use_bias, per_layer=True, groups=groups)
        assert sorted(got) == sorted(full) == ["c1", "c2", "c3", "head", "lin"]
        for layer, gram in full.items():
            want = gram if groups == 1 else torch.stack([gram[i * n:(i + 1) * n, i * n:(i + 1) * n]
                                                         for i in range(groups)])
            torch.testing.assert_close(got[layer], want, rtol=1e-11, atol=1e-12, msg=f"{backend} {layer} G={groups}")
        total = empirical_ntk(model, x, backend=backend, use_bias=use_bias, groups=groups)
        torch.testing.assert_close(total, sum(got.values()), rtol=1e-12, atol=1e-12)
    # the dense conv on its per-offset path too (taken when channels are wide against the output pixels)
    monkeypatch.setattr(kernels, "OFFSET_PATH_RATIO", 0)
    got = empirical_ntk(model, x, backend=backend, use_bias=use_bias, per_layer=True, groups=2)
    torch.testing.assert_close(got["c1"], torch.stack([full["c1"][:3, :3], full["c1"][3:, 3:]]), rtol=1e-11,
                               atol=1e-12)


@pytest.mark.parametrize("backend", ["hook", "opacus", "func"])
def test_a_bare_layer_is_named_by_the_empty_string_and_leaves_no_state(backend):
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x = torch.randn(4, 3, dtype=DT)
    # f(x) = sum_k (W x + b)_k: df/dW = 1 x^T, so Theta = 2 x x^T (+ 2 with biases)
    got = empirical_ntk(model, x, backend=backend, per_layer=True, use_bias=True)
    assert list(got) == [""]
    torch.testing.assert_close(got[""], 2 * x @ x.T + 2, rtol=1e-12, atol=1e-12)
    # the caller's gradients and flags survive, no per-sample gradients are left behind
    old = torch.full_like(model.weight, 7.0)
    model.weight.grad = old
    model.bias.requires_grad_(False)
    empirical_ntk(model, x, backend=backend)
    assert model.weight.grad is old and model.bias.grad is None
    assert model.weight.requires_grad and not model.bias.requires_grad
    assert getattr(model.weight, "grad_sample", None) is None
    # a frozen parameter that is not a kernel parameter enters the forward as it is (a constant)
    torch.testing.assert_close(empirical_ntk(model, x, backend=backend), 2 * x @ x.T, rtol=1e-12, atol=1e-12)


def test_opacus_backend_errors_are_clear():
    # opacus refuses BatchNorm (it mixes samples): its multi-line explanation becomes one line of 200 characters
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(KernelError, match=r"^opacus cannot wrap this model: \S.*Model contains a trainable layer") as e:
        empirical_ntk(model, torch.randn(3, 2), backend="opacus")
    detail = str(e.value).removeprefix("opacus cannot wrap this model: ")
    assert len(detail) == 200 and "\n" not in detail and "  " not in detail


def test_hook_backend_error_messages():
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")
    with pytest.raises(KernelError, match="padding_mode 'reflect' is not supported"):
        empirical_ntk(conv, torch.randn(2, 1, 4, 4))


def test_meta_ntk_is_float64_on_the_input_device():
    # the meta device runs shapes and dtypes without data: every intermediate must live where theta lives
    theta = torch.eye(6, dtype=torch.float32, device="meta")
    phi = meta_ntk(theta, theta, n_tasks=2, n_query=1, n_support=2, inner_lr_time=math.inf)
    assert phi.device.type == "meta" and phi.dtype == DT and phi.shape == (2, 2)


# ----------------------------------------------------------------------------------------------- regions
def test_rows_that_differ_only_in_high_bits_are_distinct():
    # bits 0 and 60 set vs bit 0 alone: equal in float64 once the words are scaled by 2^-i (53-bit mantissa)
    rows = torch.zeros(4, 130, dtype=torch.bool)
    rows[0, 0] = rows[1, 0] = rows[1, 60] = True
    rows[2, 62] = True  # the top bit of the first 63-bit word
    rows[3, 63 + 62] = True  # the top bit of the second word
    assert count_distinct_rows(rows) == 4
    assert count_distinct_rows(rows[[0, 0, 1]]) == 2


def test_count_linear_regions_stacks_batches_as_samples():
    # a 1-D ReLU layer with breakpoints at 0 and 1: inputs -1, 0.5, 2 fall into three regions
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [1.0]]))
        lin.bias.copy_(torch.tensor([0.0, -1.0]))
    model = nn.Sequential(lin, nn.ReLU())
    batches = [torch.tensor([[-1.0], [0.5]]), torch.tensor([[2.0], [0.6]])]
    assert count_linear_regions(model, batches) == 3
    assert count_linear_regions(model, batches[:1]) == 2
    with pytest.raises(KernelError, match="no input batch given to count linear regions"):
        count_linear_regions(model, [])


def test_hook_backend_refuses_a_layer_that_runs_twice():
    # shared weights: the per-sample gradient is the sum over both uses, and its Gram has cross terms that a sum of
    # per-use Grams misses; the definition (func, opacus) handles it, the hook backend must refuse
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    torch.manual_seed(0)
    model = Twice().double()
    x = torch.randn(4, 3, dtype=DT)
    with pytest.raises(KernelError, match="'lin' ran twice"):
        empirical_ntk(model, x)
    torch.testing.assert_close(empirical_ntk(model, x, backend="func"), _jacobian_gram(model, x, False)["lin"],
                               rtol=1e-12, atol=1e-12)


def test_input_shapes_and_messages():
    class Scalar(nn.Module):  # 1-D inputs (N,): f(x) = w x, Theta = x x^T
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1, bias=False)

        def forward(self, x):
            return self.lin(x[:, None])

    x = torch.tensor([1.0, -2.0, 3.0], dtype=DT)
    torch.testing.assert_close(empirical_ntk(Scalar().double(), x), torch.outer(x, x), rtol=1e-12, atol=1e-12)
    for bad in (torch.zeros(0, 1, dtype=DT), torch.tensor(1.0, dtype=DT)):
        with pytest.raises(KernelError, match="expected a batch of inputs"):
            empirical_ntk(Scalar().double(), bad)
    with pytest.raises(KernelError, match="expected one of hook, opacus, func$"):
        empirical_ntk(Scalar(), x, backend="jax")

    class Conv1(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(1, 1, 1)

        def forward(self, x):
            return self.c(x)

    with pytest.raises(KernelError, match="'c' is a Conv1d"):
        empirical_ntk(Conv1(), torch.randn(2, 1, 3))
