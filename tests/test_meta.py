"""Meta-gradients against closed forms and independent autograd (float64), finite-difference limits, outer steps."""

from __future__ import annotations

import math

import pytest
import torch
from _meta_problems import (
    TinyNet,
    linear_maml_closed_form,
    mse,
    reference_maml_grad,
    regression_task,
)
from torch import nn

from metantk_zoo.errors import ConfigError
from metantk_zoo.meta import (
    PRESETS,
    SNGDM_OUTER_LR,
    MetaConfig,
    NormalizedSGD,
    head_names,
    make_meta_config,
    meta_gradient,
    meta_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(method, **kw):
    return MetaConfig(method=method, **{"inner_lr": 0.3, "inner_steps": 1, **kw})


def _flat(grads: dict, model: nn.Module) -> torch.Tensor:
    return torch.cat([grads[n].reshape(-1) for n, _ in model.named_parameters()])


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().double()


@pytest.fixture
def task():
    return regression_task()


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_equals_closed_form_on_least_squares(steps, task):
    model = nn.Linear(3, 1, bias=False).double()
    w = model.weight.detach()[0]
    r = meta_gradient(model, *task, _cfg("maml", inner_steps=steps), loss_fn=mse)
    expected = linear_maml_closed_form(w, *task, lr=0.3, steps=steps)
    torch.testing.assert_close(r.grads["weight"][0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3])
def test_hfmaml_is_exact_on_least_squares(steps, task):
    """A quadratic loss has a constant Hessian: the symmetric difference is exact at any step size."""
    model = nn.Linear(3, 1, bias=False).double()
    expected = linear_maml_closed_form(model.weight.detach()[0], *task, lr=0.3, steps=steps)
    r = meta_gradient(model, *task, _cfg("hfmaml", inner_steps=steps, fd_step=0.5), loss_fn=mse)
    torch.testing.assert_close(r.grads["weight"][0], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_maml_equals_independent_autograd_on_mlp(steps, tiny, task):
    r = meta_gradient(tiny, *task, _cfg("maml", inner_steps=steps), loss_fn=mse)
    ref = reference_maml_grad(tiny, *task, lr=0.3, steps=steps)
    for n in ref:
        torch.testing.assert_close(r.grads[n], ref[n], rtol=1e-10, atol=1e-12)
    # the query loss reported is the one after adaptation
    assert r.loss < mse(tiny(task[2]), task[3]).item()


def test_anil_equals_maml_restricted_to_the_head(tiny, task):
    cfg = _cfg("maml", inner_steps=3)
    maml_head = meta_gradient(tiny, *task, cfg, loss_fn=mse, adapt_names=head_names(tiny))
    anil = meta_gradient(tiny, *task, _cfg("anil", inner_steps=3), loss_fn=mse)
    ref = reference_maml_grad(tiny, *task, lr=0.3, steps=3, head_only=True)
    for n in ref:
        torch.testing.assert_close(anil.grads[n], maml_head.grads[n], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(anil.grads[n], ref[n], rtol=1e-10, atol=1e-12)
    assert anil.loss == pytest.approx(maml_head.loss, rel=1e-12)
    full = meta_gradient(tiny, *task, cfg, loss_fn=mse)
    assert _rel(_flat(anil.grads, tiny), _flat(full.grads, tiny)) > 1e-3  # and differs from full MAML


def _errors(tiny, task, method, deltas, **kw):
    exact = _flat(meta_gradient(tiny, *task, _cfg("maml", **kw), loss_fn=mse).grads, tiny)
    return [_rel(_flat(meta_gradient(tiny, *task, _cfg(method, fd_step=d, **kw), loss_fn=mse).grads, tiny), exact)
            for d in deltas]


DELTAS = [1e-1, 1e-2, 1e-3, 1e-4]


def test_hfmaml_converges_to_maml_as_the_step_shrinks(tiny, task):
    for steps in (1, 3):
        err = _errors(tiny, task, "hfmaml", DELTAS, inner_steps=steps)
        assert all(b < a for a, b in zip(err, err[1:], strict=False)), err
        assert err[-1] < 1e-7, err  # symmetric difference: O(d^2)
        assert err[0] / err[1] > 50, err


def test_fobmaml_converges_to_maml_as_the_step_shrinks(tiny, task):
    sym = _errors(tiny, task, "fobmaml", DELTAS)
    fwd = _errors(tiny, task, "fobmaml", DELTAS, fd_scheme="forward")
    assert all(b < a for a, b in zip(sym, sym[1:], strict=False))
    assert all(b < a for a, b in zip(fwd, fwd[1:], strict=False))
    assert sym[-1] < 1e-7 and fwd[-1] < 1e-3
    assert 5 < fwd[1] / fwd[2] < 20  # forward difference: O(d)
    assert sym[1] / sym[2] > 50  # symmetric difference: O(d^2)
    assert all(s < f for s, f in zip(sym, fwd, strict=True))


def test_fomaml_bias_is_visible_and_does_not_shrink(tiny, task):
    exact = _flat(meta_gradient(tiny, *task, _cfg("maml"), loss_fn=mse).grads, tiny)
    fo = _flat(meta_gradient(tiny, *task, _cfg("fomaml"), loss_fn=mse).grads, tiny)
    assert _rel(fo, exact) > 0.05
    # FO-MAML is the query gradient at the adapted parameters
    ref = reference_maml_grad(tiny, *task, lr=0.3, steps=0)  # grad f_q at theta
    assert _rel(fo, _flat(ref, tiny)) > 1e-3  # it is not the plain query gradient either


def test_meta_gradient_is_pure(tiny, task):
    before = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    for m in ("maml", "fomaml", "hfmaml", "anil", "fobmaml"):
        meta_gradient(tiny, *task, _cfg(m, inner_steps=2), loss_fn=mse)
    for n, p in tiny.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


@pytest.mark.parametrize("method", ["maml", "fomaml", "hfmaml", "anil", "fobmaml"])
def test_meta_steps_reduce_the_adapted_loss(method):
    """A family of regression tasks w_true ~ N(mu, 0.1): meta-training must lower the post-adaptation loss."""
    torch.manual_seed(1)
    model = TinyNet(hidden=8).double()
    cfg = MetaConfig(method=method, inner_lr=0.1, inner_steps=1, outer_lr=0.02 if method != "fobmaml" else 0.05)
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def episode():
        w = mu + 0.1 * torch.randn(3, generator=g, dtype=torch.float64)
        x = torch.randn(12, 3, generator=g, dtype=torch.float64)
        y = x @ w
        return x[:4], y[:4], x[4:], y[4:]

    fixed = [episode() for _ in range(8)]
    opt = (torch.optim.Adam(model.parameters(), lr=cfg.outer_lr) if cfg.outer_optimizer == "adam"
           else NormalizedSGD(model.parameters(), lr=cfg.outer_lr, momentum=0.5, clip=0.1))

    def score():
        return sum(meta_gradient(model, *e, cfg, loss_fn=mse).loss for e in fixed) / len(fixed)

    before = score()
    for _ in range(40):
        meta_step(model, [episode() for _ in range(2)], opt, cfg, loss_fn=mse)
    assert score() < 0.5 * before


def test_normalized_sgd_step_lengths():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = NormalizedSGD([p], lr=0.1, momentum=0.0, clip=1.0)
    p.grad = torch.tensor([30.0, 40.0], dtype=torch.float64)  # norm 50 > clip: normalised step of length lr
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.06, -0.08], dtype=torch.float64))
    p.grad = torch.tensor([0.3, 0.4], dtype=torch.float64)  # norm 0.5 < clip: plain step lr / clip * g
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.09, -0.12], dtype=torch.float64))
    q = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = NormalizedSGD([q], lr=1.0, momentum=0.5, clip=1e-9)
    q.grad = torch.tensor([2.0], dtype=torch.float64)
    opt.step()  # m = 1.0 -> step of length 1
    assert q.item() == pytest.approx(-1.0)


@pytest.mark.parametrize("bad,match", [
    (dict(method="reptile"), "method must be one of"),
    (dict(fd_scheme="central"), "fd_scheme"),
    (dict(inner_steps=0), "inner_steps"),
    (dict(inner_lr=-1.0), "inner_lr"),
    (dict(outer="sgd"), "outer must be"),
    (dict(n_way=1), "n_way"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        MetaConfig(**bad)


def test_presets_follow_the_published_settings():
    c1, c5 = make_meta_config("maml", "mini-1shot"), make_meta_config("anil", "mini-5shot")
    assert (c1.inner_lr, c1.inner_steps, c1.inner_steps_test, c1.meta_batch, c1.outer_lr, c1.n_query) == (
        0.01, 5, 10, 4, 1e-3, 15)
    assert (c5.n_shot, c5.meta_batch, c5.outer_optimizer) == (5, 2, "adam")
    assert make_meta_config("fobmaml").outer_optimizer == "sngdm"
    # the normalised step's lr is a step length: its own per-preset default, unless the user gives one
    assert make_meta_config("fobmaml", "demo").outer_lr == 0.3
    assert make_meta_config("fobmaml", "mini-1shot").outer_lr == 0.1
    assert make_meta_config("fobmaml", "demo", outer_lr=0.05).outer_lr == 0.05
    assert make_meta_config("maml", "demo", outer="sngdm").outer_lr == 0.3
    assert make_meta_config("fobmaml", "demo", outer="adam").outer_lr == 3e-3
    assert set(SNGDM_OUTER_LR) == set(PRESETS)  # every preset says how long a normalised step is
    with pytest.raises(ConfigError, match="unknown meta-training preset"):
        make_meta_config("maml", "tiered-20shot")
    assert math.isclose(c1.epochs, 60000 / 500)


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n)
    x = torch.randn(2 * n, 3, generator=g) + 3.0 * torch.stack([y * 2.0 - 1, torch.zeros_like(y), y * 0.0], 1)
    return x, y


@pytest.mark.parametrize("method", ["maml", "anil"])
def test_adapted_accuracies_learn_separable_episodes(method):
    torch.manual_seed(0)
    model = TinyNet(d_out=2)
    model.num_classes = 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    eps = [(*_blobs(5, s), *_blobs(10, s + 100)) for s in range(3)]
    from metantk_zoo.meta import adapted_accuracies

    acc = adapted_accuracies(model, eps, method=method, lr=0.5, steps=30)
    assert acc.shape == (3,) and float(acc.min()) >= 0.9
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # adaptation is functional
    model.num_classes = 5
    with pytest.raises(ConfigError, match="2-way head"):
        adapted_accuracies(model, eps, method=method, lr=0.5, steps=1)
