"""Small meta-problems with known answers for tests/test_meta.py and scripts/bench_meta.py."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad


class TinyNet(nn.Module):
    """A 2-layer tanh MLP with the timm head methods the meta algorithms use (``get_classifier`` etc.)."""

    def __init__(self, d_in: int = 3, hidden: int = 5, d_out: int = 1):
        super().__init__()
        self.body = nn.Linear(d_in, hidden)
        self.head = nn.Linear(hidden, d_out)

    def forward_features(self, x):
        return torch.tanh(self.body(x))

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.head


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def regression_task(d: int = 3, n_spt: int = 6, n_qry: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    x_spt = torch.randn(n_spt, d, generator=g, dtype=torch.float64)
    x_qry = torch.randn(n_qry, d, generator=g, dtype=torch.float64)
    noise = 0.1
    y_spt = x_spt @ w_true + noise * torch.randn(n_spt, generator=g, dtype=torch.float64)
    y_qry = x_qry @ w_true + noise * torch.randn(n_qry, generator=g, dtype=torch.float64)
    return x_spt, y_spt, x_qry, y_qry


def linear_maml_closed_form(w, x_spt, y_spt, x_qry, y_qry, lr: float, steps: int) -> torch.Tensor:
    """Exact MAML meta-gradient of ``f_q(U^N(w))`` for least squares: ``((I - a A_s)^N)^T (A_q u_N - b_q)``."""
    a_s, b_s = x_spt.T @ x_spt / len(x_spt), x_spt.T @ y_spt / len(x_spt)
    a_q, b_q = x_qry.T @ x_qry / len(x_qry), x_qry.T @ y_qry / len(x_qry)
    m = torch.eye(len(w), dtype=w.dtype) - lr * a_s
    u = w
    for _ in range(steps):
        u = u - lr * (a_s @ u - b_s)
    return torch.linalg.matrix_power(m, steps).T @ (a_q @ u - b_q)


def reference_maml_grad(model: TinyNet, x_spt, y_spt, x_qry, y_qry, lr: float, steps: int, head_only=False):
    """MAML meta-gradient by nested ``torch.func.grad`` of a hand-written unrolled objective (independent code)."""
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def net(p, x):
        h = torch.tanh(x @ p["body.weight"].T + p["body.bias"])
        return h @ p["head.weight"].T + p["head.bias"]

    def f(p, x, y):
        return mse(net(p, x), y)

    def meta_obj(p):
        q = dict(p)
        for _ in range(steps):
            g = grad(f)(q, x_spt, y_spt)
            q = {n: (q[n] - lr * g[n]) if (not head_only or n.startswith("head")) else q[n] for n in names}
        return f(q, x_qry, y_qry)

    return grad(meta_obj)(theta)
