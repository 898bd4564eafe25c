"""Known answers for the meta-gradients (``meta/algorithms.py``) that the other meta tests do not pin down: the
finite-difference radius of HF-MAML on a quartic, the averaging of a meta-batch, unused parameters and buffers,
the inner loop's defaults, ANIL's test-time adaptation and the accuracy, each against a hand computation.

Written against mutants the other tests let through (``scripts/mutation_test.sh``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _meta_problems import TinyNet, linear_maml_closed_form, mse, regression_task
from torch import nn

from metantk_zoo.errors import ConfigError
from metantk_zoo.meta.algorithms import (
    _accuracy,
    adapt,
    adapted_logits,
    global_norm,
    head_names,
    meta_gradient,
    meta_step,
)
from metantk_zoo.meta.config import MetaConfig

DT = torch.float64


def _scalar_model(w0: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        m.weight.fill_(w0)
    return m


def _quartic_or_linear(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y[:, 0] * out^4 / 4 + y[:, 1] * out``: the support loss w^4/4, the query loss c * w (x = 1)."""
    o = out[:, 0]
    return (y[:, 0] * o**4 / 4 + y[:, 1] * o).sum()


@pytest.mark.parametrize("method", ["hfmaml", "fobmaml"])
@pytest.mark.parametrize("c", [0.0, 1.0, 2.0])
def test_finite_difference_meta_gradients_at_radius_fd_step_on_a_quartic(method, c):
    # support f_s(w) = w^4/4 (f_s' = w^3, H = 3 w^2), query f_q(w) = c w (gradient c at any w), one inner step
    # U(w) = w - a w^3. HF-MAML: v = c, [f_s'(w0 + d v) - f_s'(w0 - d v)] / (2 d) = 3 w0^2 v + d^2 v^3, with the
    # radius d = delta / |v|: v (3 w0^2 + delta^2). FO-B-MAML: [U(w0 + d c) - U(w0 - d c)] / (2 d) with the same
    # radius is c (1 - 3 a w0^2 - a delta^2). Both: c (1 - a (3 w0^2 + delta^2)); MAML's exact c (1 - 3 a w0^2).
    # c = 0: a zero query gradient gives a zero meta-gradient
    w0, a, delta = 0.8, 0.1, 0.3
    one = torch.ones(1, 1, dtype=DT)
    spt, qry = torch.tensor([[1.0, 0.0]], dtype=DT), torch.tensor([[0.0, c]], dtype=DT)
    cfg = MetaConfig(method=method, inner_lr=a, inner_steps=1, fd_step=delta)
    got = meta_gradient(_scalar_model(w0), one, spt, one, qry, cfg, loss_fn=_quartic_or_linear)
    assert float(got.grads["weight"]) == pytest.approx(c * (1 - a * (3 * w0**2 + delta**2)), rel=1e-12, abs=1e-300)
    maml = meta_gradient(_scalar_model(w0), one, spt, one, qry, MetaConfig(method="maml", inner_lr=a, inner_steps=1),
                         loss_fn=_quartic_or_linear)
    assert float(maml.grads["weight"]) == pytest.approx(c * (1 - 3 * a * w0**2), rel=1e-12)
    # the query loss after adaptation: c * w1, w1 = w0 - a w0^3; a regression loss has no accuracy
    assert got.loss == pytest.approx(c * (w0 - a * w0**3), rel=1e-12) and math.isnan(got.acc)
    assert list(got.grads) == ["weight"]


@pytest.mark.parametrize("method", ["maml", "anil", "fomaml", "hfmaml", "fobmaml"])
def test_unused_parameters_get_zero_meta_gradients(method):
    torch.manual_seed(0)
    model = TinyNet().double()
    model.unused = nn.Linear(2, 2).double()  # never called by forward
    r = meta_gradient(model, *regression_task(), MetaConfig(method=method, inner_lr=0.1, inner_steps=2), loss_fn=mse)
    assert set(r.grads) == {n for n, _ in model.named_parameters()}
    assert torch.equal(r.grads["unused.weight"], torch.zeros(2, 2, dtype=DT))
    assert torch.equal(r.grads["unused.bias"], torch.zeros(2, dtype=DT))
    assert r.grads["head.weight"].abs().sum() > 0


class _BNNet(TinyNet):
    """TinyNet with a BatchNorm (running-statistics buffers) in the body, as timm backbones have."""

    def __init__(self):
        super().__init__(d_in=3, hidden=5, d_out=2)
        self.bn = nn.BatchNorm1d(5)

    def forward_features(self, x):
        return torch.tanh(self.bn(self.body(x)))


@pytest.mark.parametrize("method", ["maml", "fomaml"])
def test_models_with_buffers_adapt_with_batch_statistics(method):
    # FO-MAML by its definition, written out with an optimiser on a copy: `steps` SGD steps of the support loss,
    # then the query gradient at the adapted weights; MAML's query loss is the same number
    torch.manual_seed(0)
    model = _BNNet().double().train()
    g = torch.Generator().manual_seed(1)
    x_s, x_q = torch.randn(6, 3, generator=g, dtype=DT), torch.randn(8, 3, generator=g, dtype=DT)
    y_s, y_q = torch.tensor([0, 1] * 3), torch.tensor([0, 1] * 4)
    copy = _BNNet().double().train()
    copy.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(copy.parameters(), lr=0.2)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(copy(x_s), y_s).backward()
        opt.step()
    opt.zero_grad()
    loss = F.cross_entropy(copy(x_q), y_q)
    loss.backward()
    r = meta_gradient(model, x_s, y_s, x_q, y_q, MetaConfig(method=method, inner_lr=0.2, inner_steps=2))
    assert r.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    if method == "fomaml":
        for n, p in copy.named_parameters():
            torch.testing.assert_close(r.grads[n], p.grad, rtol=1e-10, atol=1e-12)


def test_adapt_defaults_to_every_parameter():
    # least squares, linear model without bias: u_{k+1} = u_k - a (A_s u_k - b_s)
    x_s, y_s, _, _ = regression_task()
    model = nn.Linear(3, 1, bias=False).double()
    w = model.weight.detach().clone().squeeze(0)
    a_s, b_s = x_s.T @ x_s / len(x_s), x_s.T @ y_s / len(x_s)
    u = w
    for _ in range(3):
        u = u - 0.1 * (a_s @ u - b_s)
    p = adapt(model, dict(model.named_parameters()), x_s, y_s, lr=0.1, steps=3, loss_fn=mse)
    torch.testing.assert_close(p["weight"].squeeze(0), u, rtol=1e-12, atol=1e-12)


def test_meta_step_averages_the_meta_batch():
    # two least-squares tasks, MAML: one plain SGD step of lr 1 moves w by minus the mean of the closed forms;
    # the reported loss is the mean query loss after adaptation
    model = nn.Linear(3, 1, bias=False).double()
    w = model.weight.detach().clone().squeeze(0)
    tasks = [regression_task(seed=s) for s in (0, 1)]
    lr, steps = 0.1, 2
    grads, losses = [], []
    for x_s, y_s, x_q, y_q in tasks:
        grads.append(linear_maml_closed_form(w, x_s, y_s, x_q, y_q, lr, steps))
        u = w
        for _ in range(steps):
            u = u - lr * (x_s.T @ (x_s @ u - y_s) / len(x_s))
        losses.append(float(0.5 * ((x_q @ u - y_q) ** 2).mean()))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    out = meta_step(model, tasks, opt, MetaConfig(method="maml", inner_lr=lr, inner_steps=steps), loss_fn=mse)
    torch.testing.assert_close(model.weight.detach().squeeze(0), w - (grads[0] + grads[1]) / 2, rtol=1e-12,
                               atol=1e-12)
    assert out["loss"] == pytest.approx(sum(losses) / 2, rel=1e-12) and math.isnan(out["acc"])
    with pytest.raises(ConfigError, match="meta_step needs at least one episode"):
        meta_step(model, [], opt, MetaConfig())


def test_meta_step_reports_the_mean_query_accuracy():
    # head weights so large that one tiny inner step cannot change a prediction: the accuracy after adaptation is
    # that of the fixed linear classifier, by hand 1 of 2 and 2 of 2 queries
    model = TinyNet(d_in=2, hidden=2, d_out=2).double()
    with torch.no_grad():
        model.body.weight.copy_(torch.eye(2))
        model.body.bias.zero_()
        model.head.weight.copy_(torch.tensor([[100.0, 0.0], [0.0, 100.0]]))
        model.head.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)  # class 0, class 1
    episodes = [(x, torch.tensor([0, 1]), x, torch.tensor([0, 0])), (x, torch.tensor([0, 1]), x, torch.tensor([0, 1]))]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    out = meta_step(model, episodes, opt, MetaConfig(method="fomaml", inner_lr=1e-6, inner_steps=1))
    assert out["acc"] == pytest.approx(0.75)
    assert set(out) == {"loss", "acc"}


def test_accuracy_by_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert _accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert _accuracy(logits, torch.tensor([0, 1, 1], dtype=torch.int32)) == pytest.approx(2 / 3)
    assert math.isnan(_accuracy(logits, torch.tensor([0.0, 1.0, 1.0])))  # regression targets
    assert math.isnan(_accuracy(logits[:, :1].unsqueeze(-1), torch.tensor([0, 1, 1])))  # not (N, classes)


def test_anil_test_time_adaptation_moves_only_the_head():
    # ANIL adapts the head on fixed features: by hand, the cross-entropy gradient of a linear head is
    # (softmax - onehot)^T [f, 1] / N; the body is untouched, so the query logits are the adapted head on f(x_q)
    torch.manual_seed(0)
    model = TinyNet(d_in=3, hidden=4, d_out=2).double()
    g = torch.Generator().manual_seed(3)
    x_s, x_q = torch.randn(4, 3, generator=g, dtype=DT), torch.randn(5, 3, generator=g, dtype=DT)
    y_s = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        f_s, f_q = torch.tanh(model.body(x_s)), torch.tanh(model.body(x_q))
        w, b = model.head.weight.clone(), model.head.bias.clone()
        for _ in range(3):
            r = torch.softmax(f_s @ w.T + b, 1) - F.one_hot(y_s, 2).double()
            w, b = w - 0.5 * r.T @ f_s / 4, b - 0.5 * r.sum(0) / 4
        want = f_q @ w.T + b
    got = adapted_logits(model, x_s, y_s, x_q, method="anil", lr=0.5, steps=3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # every other method adapts the body too: different logits
    assert not torch.allclose(adapted_logits(model, x_s, y_s, x_q, method="maml", lr=0.5, steps=3), want)


def test_nested_heads_and_missing_heads():
    class Nested(TinyNet):
        def __init__(self):
            super().__init__(d_in=3, hidden=4, d_out=2)
            self.head = nn.Sequential()
            self.head.fc = nn.Linear(4, 2)

        def get_classifier(self):
            return self.head.fc

    torch.manual_seed(0)
    model = Nested().double()
    assert head_names(model) == ["head.fc.weight", "head.fc.bias"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=DT)
    y = torch.tensor([0, 1, 0, 1])
    r = meta_gradient(model, x, y, x, y, MetaConfig(method="anil", inner_lr=0.1, inner_steps=1))
    ref = meta_gradient(model, x, y, x, y, MetaConfig(method="maml", inner_lr=0.1, inner_steps=1),
                        adapt_names=["head.fc.weight", "head.fc.bias"])
    for n in r.grads:
        torch.testing.assert_close(r.grads[n], ref.grads[n], rtol=1e-10, atol=1e-12)

    class Headless(TinyNet):
        def get_classifier(self):
            return nn.Identity()

    with pytest.raises(ConfigError, match="^Headless has no classifier parameters to adapt"):
        head_names(Headless())


def test_global_norm_is_in_the_default_dtype():
    n = global_norm([torch.tensor([3.0, 0.0], dtype=DT), torch.tensor([[4.0]], dtype=DT)])
    assert n.dtype == torch.get_default_dtype() and float(n) == 5.0
