"""Meta-gradients against their definitions, in float64, on problems with closed forms.

Least squares ``f(w) = 1/2 mean((X w - y)^2)`` has gradient ``A w - b`` (``A = X^T X / n``, ``b = X^T y / n``) and a
constant Hessian ``A``, so ``N`` inner steps of rate ``a`` give ``u_N = u_{N-1} - a (A_s u_{N-1} - b_s)`` and the
MAML meta-gradient ``((I - a A_s)^N)^T (A_q u_N - b_q)``, written out below by hand. A log-cosh loss (not quadratic)
checks the finite-difference methods' limits against the exact Jacobian of a hand-written inner loop.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metantk_zoo.meta import MetaConfig, adapt, meta_gradient

DT = torch.float64


class _Linear(nn.Module):
    """``f(x) = x @ B^T @ w``: a linear body ``B`` (h x d) and a linear head ``w`` (1 x h), no biases."""

    def __init__(self, d: int, h: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Linear(d, h, bias=False).double()
        self.head = nn.Linear(h, 1, bias=False).double()
        with torch.no_grad():
            self.body.weight.copy_(torch.randn(h, d, generator=g, dtype=DT) / d**0.5)
            self.head.weight.copy_(torch.randn(1, h, generator=g, dtype=DT) / h**0.5)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.head(self.body(x))

    def get_classifier(self):
        return self.head


def _mse(out, y):
    return 0.5 * ((out.reshape(-1) - y) ** 2).mean()


def _logcosh(out, y):
    r = out.reshape(-1) - y
    return (r + torch.nn.functional.softplus(-2 * r) - torch.log(torch.tensor(2.0, dtype=DT))).mean()


def _task(d: int = 4, n_spt: int = 7, n_qry: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(100 + seed)
    w = torch.randn(d, generator=g, dtype=DT)
    xs, xq = torch.randn(n_spt, d, generator=g, dtype=DT), torch.randn(n_qry, d, generator=g, dtype=DT)
    return xs, xs @ w + 0.3 * torch.randn(n_spt, generator=g, dtype=DT), xq, xq @ w + 0.3 * torch.randn(
        n_qry, generator=g, dtype=DT)


def _cfg(method: str, lr: float, steps: int, **kw) -> MetaConfig:
    return MetaConfig(method=method, inner_lr=lr, inner_steps=steps, **kw)


def _ls_terms(z_s, y_s, z_q, y_q):
    return z_s.T @ z_s / len(z_s), z_s.T @ y_s / len(z_s), z_q.T @ z_q / len(z_q), z_q.T @ y_q / len(z_q)


def _closed_form(w, z_s, y_s, z_q, y_q, lr, steps):
    """(u_N, MAML meta-gradient, FO-MAML meta-gradient) for least squares on features z, parameters w."""
    a_s, b_s, a_q, b_q = _ls_terms(z_s, y_s, z_q, y_q)
    u = w.clone()
    for _ in range(steps):
        u = u - lr * (a_s @ u - b_s)
    m = torch.linalg.matrix_power(torch.eye(len(w), dtype=DT) - lr * a_s, steps)
    g_q = a_q @ u - b_q
    return u, m.T @ g_q, g_q


def _full_linear_model(d: int, seed: int) -> _Linear:
    """A model with only the head (h = d, body = identity, frozen by not adapting it)."""
    model = _Linear(d, d, seed)
    with torch.no_grad():
        model.body.weight.copy_(torch.eye(d, dtype=DT))
    return model


# ----------------------------------------------------------------------------------------------- MAML, FO-MAML
@pytest.mark.parametrize("lr, steps", [(0.1, 1), (0.3, 1), (0.1, 3), (0.05, 5)])
def test_adapt_and_maml_and_fomaml_equal_least_squares_closed_forms(lr, steps):
    xs, ys, xq, yq = _task()
    model = _full_linear_model(4, 0)
    w = model.head.weight.detach().reshape(-1)
    u, g_maml, g_fo = _closed_form(w, xs, ys, xq, yq, lr, steps)
    head = ["head.weight"]
    p = adapt(model, dict(model.named_parameters()), xs, ys, lr=lr, steps=steps, names=head, loss_fn=_mse)
    torch.testing.assert_close(p["head.weight"].reshape(-1), u, rtol=1e-13, atol=1e-13)
    got = meta_gradient(model, xs, ys, xq, yq, _cfg("maml", lr, steps), loss_fn=_mse, adapt_names=head)
    torch.testing.assert_close(got.grads["head.weight"].reshape(-1), g_maml, rtol=1e-12, atol=1e-12)
    fo = meta_gradient(model, xs, ys, xq, yq, _cfg("fomaml", lr, steps), loss_fn=_mse, adapt_names=head)
    torch.testing.assert_close(fo.grads["head.weight"].reshape(-1), g_fo, rtol=1e-12, atol=1e-12)
    assert got.loss == pytest.approx(float(0.5 * ((xq @ u - yq) ** 2).mean()), rel=1e-12)
    # the test has the power to see a loop that used half the rate or one step fewer
    _, g_half, _ = _closed_form(w, xs, ys, xq, yq, lr / 2, steps)
    _, g_short, _ = _closed_form(w, xs, ys, xq, yq, lr, steps - 1) if steps > 1 else (None, g_half, None)
    assert (g_half - g_maml).abs().max() > 1e-4 and (g_short - g_maml).abs().max() > 1e-4


def test_fomaml_is_not_maml():
    xs, ys, xq, yq = _task(seed=1)
    model = _full_linear_model(4, 1)
    w = model.head.weight.detach().reshape(-1)
    _, g_maml, g_fo = _closed_form(w, xs, ys, xq, yq, 0.3, 2)
    assert (g_maml - g_fo).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------------- HF-MAML
@pytest.mark.parametrize("steps", [1, 3])
def test_hfmaml_is_exact_on_least_squares_for_any_step(steps):
    # the Hessian is constant: the symmetric difference of gradients is the exact Hessian-vector product
    xs, ys, xq, yq = _task(seed=2)
    model = _full_linear_model(4, 2)
    w = model.head.weight.detach().reshape(-1)
    _, g_maml, _ = _closed_form(w, xs, ys, xq, yq, 0.2, steps)
    for fd in (1e-1, 1e-4):
        hf = meta_gradient(model, xs, ys, xq, yq, _cfg("hfmaml", 0.2, steps, fd_step=fd), loss_fn=_mse,
                           adapt_names=["head.weight"])
        torch.testing.assert_close(hf.grads["head.weight"].reshape(-1), g_maml, rtol=1e-9, atol=1e-9)


def _inner(w, xs, ys, lr, steps, loss):
    """A hand-written inner loop on f(w) = loss(xs @ w, ys), differentiable (for exact Jacobians)."""
    u = w
    for _ in range(steps):
        (g,) = torch.autograd.grad(loss(xs @ u, ys), u, create_graph=True)
        u = u - lr * g
    return u


def _exact_terms(w0, xs, ys, xq, yq, lr, steps, loss):
    """(J = dU/dw, g = grad f_q(U(w))) of the hand-written loop."""
    jac = torch.autograd.functional.jacobian(lambda w: _inner(w, xs, ys, lr, steps, loss), w0)
    u = _inner(w0.clone().requires_grad_(True), xs, ys, lr, steps, loss).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xq @ u, yq), u)
    return jac, g


@pytest.mark.parametrize("steps", [1, 3])
def test_hfmaml_tends_to_maml_as_delta_shrinks_on_a_non_quadratic_loss(steps):
    xs, ys, xq, yq = _task(seed=3)
    xs, xq = 2 * xs, 2 * xq  # residuals well inside log-cosh's curved part
    model = _full_linear_model(4, 3)
    w = model.head.weight.detach().reshape(-1)
    jac, g = _exact_terms(w.clone().requires_grad_(True), xs, ys, xq, yq, 0.2, steps, _logcosh)
    maml = jac.T @ g  # the definition: d f_q(U(w)) / dw = J^T g
    got = meta_gradient(model, xs, ys, xq, yq, _cfg("maml", 0.2, steps), loss_fn=_logcosh, adapt_names=["head.weight"])
    torch.testing.assert_close(got.grads["head.weight"].reshape(-1), maml, rtol=1e-10, atol=1e-12)
    errs = []
    for fd in (1e-1, 1e-2, 1e-3):
        hf = meta_gradient(model, xs, ys, xq, yq, _cfg("hfmaml", 0.2, steps, fd_step=fd), loss_fn=_logcosh,
                           adapt_names=["head.weight"])
        errs.append(float((hf.grads["head.weight"].reshape(-1) - maml).norm() / maml.norm()))
    # symmetric differences: error O(delta^2), so about 100x smaller per decade; and the sign is right
    # (a loop with +a H would be off by O(1), not O(delta^2))
    assert errs[0] > 1e-6 and errs[1] < errs[0] / 30 and errs[2] < errs[1] / 30 and errs[2] < 1e-6, errs


# -------------------------------------------------------------------------------------------------- FO-B-MAML
def test_fobmaml_one_step_equals_maml_to_second_order():
    xs, ys, xq, yq = _task(seed=4)
    xs, xq = 2 * xs, 2 * xq
    model = _full_linear_model(4, 4)
    w = model.head.weight.detach().reshape(-1)
    jac, g = _exact_terms(w.clone().requires_grad_(True), xs, ys, xq, yq, 0.2, 1, _logcosh)
    torch.testing.assert_close(jac, jac.T, rtol=1e-12, atol=1e-12)  # one step: J = I - a H is symmetric
    maml = jac.T @ g
    errs = {}
    for scheme in ("symmetric", "forward"):
        errs[scheme] = []
        for fd in (1e-2, 1e-3):
            fb = meta_gradient(model, xs, ys, xq, yq, _cfg("fobmaml", 0.2, 1, fd_step=fd, fd_scheme=scheme),
                               loss_fn=_logcosh, adapt_names=["head.weight"])
            errs[scheme].append(float((fb.grads["head.weight"].reshape(-1) - maml).norm() / maml.norm()))
    sym, fwd = errs["symmetric"], errs["forward"]
    assert sym[1] < sym[0] / 30 and sym[1] < 1e-6, sym  # O(delta^2)
    assert 5 < fwd[0] / fwd[1] < 20, fwd  # the forward difference is O(delta)
    # on least squares U is affine: the difference is exact for any step
    _, g_maml, _ = _closed_form(w, xs, ys, xq, yq, 0.05, 1)
    fb = meta_gradient(model, xs, ys, xq, yq, _cfg("fobmaml", 0.05, 1, fd_step=0.5), loss_fn=_mse,
                       adapt_names=["head.weight"])
    torch.testing.assert_close(fb.grads["head.weight"].reshape(-1), g_maml, rtol=1e-9, atol=1e-9)


def test_fobmaml_several_steps_estimates_the_jacobian_vector_product_j_g():
    # several steps: U's Jacobian J = prod (I - a H(u_k)) is not symmetric; FO-B-MAML's d/dt U(w + t g) is J g,
    # MAML's gradient is J^T g. Test that it estimates exactly J g, and that J g differs from J^T g here.
    xs, ys, xq, yq = _task(seed=5)
    xs, xq = 2 * xs, 2 * xq
    model = _full_linear_model(4, 5)
    w = model.head.weight.detach().reshape(-1)
    jac, g = _exact_terms(w.clone().requires_grad_(True), xs, ys, xq, yq, 0.25, 4, _logcosh)
    jg, jtg = jac @ g, jac.T @ g
    fb = meta_gradient(model, xs, ys, xq, yq, _cfg("fobmaml", 0.25, 4, fd_step=1e-4), loss_fn=_logcosh,
                       adapt_names=["head.weight"])
    est = fb.grads["head.weight"].reshape(-1)
    err = float((est - jg).norm() / jg.norm())
    gap = float((jg - jtg).norm() / jg.norm())
    assert err < 1e-6 and gap > 1e-1, (err, gap)


# --------------------------------------------------------------------------------------------------------- ANIL
@pytest.mark.parametrize("steps", [1, 3])
def test_anil_equals_maml_restricted_to_the_head(steps):
    # head part: the least-squares closed form on the features Z = X B^T; body part: central differences of the
    # definition J(B) = f_q(U_head(B, w)), written out here
    d, h, lr = 4, 3, 0.2
    xs, ys, xq, yq = _task(d=d, seed=6)
    model = _Linear(d, h, 6)
    bw, hw = model.body.weight.detach().clone(), model.head.weight.detach().reshape(-1).clone()
    _, g_head, _ = _closed_form(hw, xs @ bw.T, ys, xq @ bw.T, yq, lr, steps)

    def objective(b):
        u, _, _ = _closed_form(hw, xs @ b.T, ys, xq @ b.T, yq, lr, steps)
        return float(0.5 * ((xq @ b.T @ u - yq) ** 2).mean())

    g_body = torch.zeros_like(bw)
    eps = 1e-6
    for i in range(h):
        for j in range(d):
            e = torch.zeros_like(bw)
            e[i, j] = eps
            g_body[i, j] = (objective(bw + e) - objective(bw - e)) / (2 * eps)

    for method, names in (("anil", None), ("maml", ["head.weight"])):
        got = meta_gradient(model, xs, ys, xq, yq, _cfg(method, lr, steps), loss_fn=_mse, adapt_names=names)
        torch.testing.assert_close(got.grads["head.weight"].reshape(-1), g_head, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(got.grads["body.weight"], g_body, rtol=1e-7, atol=1e-9)
