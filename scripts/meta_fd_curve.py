"""Finite-difference error curves: HF-MAML and FO-B-MAML against the exact MAML meta-gradient (float64).

The problem is the one of ``tests/test_meta.py``: a 2-layer tanh MLP, one least-squares regression task,
inner lr 0.3. Prints ``||g_method - g_MAML|| / ||g_MAML||`` per finite-difference radius, and FO-MAML's bias.

    python scripts/meta_fd_curve.py
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import torch  # noqa: E402
from _meta_problems import TinyNet, mse, regression_task  # noqa: E402

from metantk_zoo.meta import MetaConfig, meta_gradient  # noqa: E402


def flat(model, **kw):
    cfg = MetaConfig(inner_lr=0.3, **kw)
    g = meta_gradient(model, *TASK, cfg, loss_fn=mse).grads
    return torch.cat([g[n].reshape(-1) for n, _ in model.named_parameters()])


TASK = regression_task()

if __name__ == "__main__":
    torch.manual_seed(0)
    model = TinyNet().double()
    deltas = [10.0 ** -k for k in range(0, 7)]
    for steps in (1, 3):
        exact = flat(model, method="maml", inner_steps=steps)
        rel = lambda g, exact=exact: float((g - exact).norm() / exact.norm())  # noqa: E731
        print(f"inner_steps={steps}   FO-MAML bias: {rel(flat(model, method='fomaml', inner_steps=steps)):.3e}")
        print(f"{'delta':>8s} {'HF-MAML':>10s} {'FO-B-MAML sym':>14s} {'FO-B-MAML fwd':>14s}")
        for d in deltas:
            hf = rel(flat(model, method="hfmaml", inner_steps=steps, fd_step=d))
            sym = rel(flat(model, method="fobmaml", inner_steps=steps, fd_step=d))
            fwd = rel(flat(model, method="fobmaml", inner_steps=steps, fd_step=d, fd_scheme="forward"))
            print(f"{d:8.0e} {hf:10.2e} {sym:14.2e} {fwd:14.2e}")
