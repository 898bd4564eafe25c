"""The MetaNTK and its condition number against hand-computable closed forms (method-facts §4.4-4.5, §11.3.6).

Every expected value below is computed by hand (scalar formulas, diagonal algebra) or by a limit argument, not by
the code under test.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

from metantk_zoo.errors import KernelError
from metantk_zoo.nas import (
    NAN_CONDITION,
    SearchConfig,
    TensorSource,
    condition_number,
    count_distinct_rows,
    empirical_ntk,
    meta_ntk,
    search,
)

DT = torch.float64


def _spd(n: int, seed: int, floor: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=DT)
    return a @ a.T + floor * torch.eye(n, dtype=DT)


# ---------------------------------------------------------------------------------------------- meta_ntk
@pytest.mark.parametrize("tau", [math.inf, 1.0, 0.3])
def test_diagonal_theta_gives_its_query_block(tau):
    # K = Theta diagonal: K_QS = 0, so A_i = 0 and Phi = Theta_QQ, whatever tau and lambda
    d = torch.arange(1.0, 13.0, dtype=DT)
    theta = torch.diag(d)
    phi = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=tau, reg_coef=0.1)
    assert torch.equal(phi, torch.diag(d[:6]))


@pytest.mark.parametrize("tau, lam", [(math.inf, 0.0), (math.inf, 1e-3), (math.inf, 0.5), (2.0, 0.0), (0.7, 0.2)])
def test_one_query_one_support_scalar_closed_form(tau, lam):
    # Theta = K = [[a, b], [b, c]] per task: T = (1 - exp(-tau c)) / (c + lam), A = b T,
    # Phi = a - 2 A b + A^2 c. Two tasks with cross-task entries e (Q1-Q2), f (Q1-S2), h (S1-S2).
    a, b, c = 2.0, 0.8, 1.5
    a2, b2, c2 = 3.0, -0.4, 0.9
    e, f, h = 0.3, 0.2, -0.1
    # order [Q1, Q2, S1, S2]
    theta = torch.tensor([[a, e, b, f],
                          [e, a2, f, b2],
                          [b, f, c, h],
                          [f, b2, h, c2]], dtype=DT)
    t1 = (1 - math.exp(-tau * c)) / (c + lam) if math.isfinite(tau) else 1 / (c + lam)
    t2 = (1 - math.exp(-tau * c2)) / (c2 + lam) if math.isfinite(tau) else 1 / (c2 + lam)
    A1, A2 = b * t1, b2 * t2
    phi11 = a - 2 * A1 * b + A1 * A1 * c
    phi22 = a2 - 2 * A2 * b2 + A2 * A2 * c2
    # Phi_12 = Theta_Q1Q2 - A1 Theta_S1Q2 - Theta_Q1S2 A2 + A1 Theta_S1S2 A2
    phi12 = e - A1 * f - f * A2 + A1 * h * A2
    want = torch.tensor([[phi11, phi12], [phi12, phi22]], dtype=DT)
    got = meta_ntk(theta, theta, n_tasks=2, n_query=1, n_support=1, inner_lr_time=tau, reg_coef=lam)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_tau_to_zero_gives_theta_qq():
    theta = _spd(12, 0)
    phi = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=1e-10, reg_coef=1e-3)
    torch.testing.assert_close(phi, theta[:6, :6], rtol=1e-8, atol=1e-8)


def test_tau_inf_equals_large_finite_tau():
    theta = _spd(12, 1, floor=1.0)  # every support block has eigenvalues >= 1: exp(-60 K) < 1e-26
    inf = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=math.inf, reg_coef=1e-3)
    big = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=60.0, reg_coef=1e-3)
    small = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=0.5, reg_coef=1e-3)
    torch.testing.assert_close(big, inf, rtol=1e-12, atol=1e-12)
    assert (small - inf).abs().max() > 1e-3


def test_lambda_zero_tau_inf_is_the_gp_posterior_covariance_and_large_lambda_removes_the_support():
    theta = _spd(12, 2)
    phi = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=math.inf, reg_coef=0.0)
    for i in range(2):
        q, s = slice(3 * i, 3 * i + 3), slice(6 + 3 * i, 6 + 3 * i + 3)
        post = theta[q, q] - theta[q, s] @ torch.linalg.solve(theta[s, s], theta[s, q])
        torch.testing.assert_close(phi[q, q], post, rtol=1e-10, atol=1e-10)
    huge = meta_ntk(theta, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=math.inf, reg_coef=1e12)
    torch.testing.assert_close(huge, theta[:6, :6], rtol=1e-9, atol=1e-9)
    # lambda is added to K_SS only: a diagonal support block K_SS = c I gives A = K_QS / (c + lambda)
    k = theta.clone()
    k[6:, 6:] = 2.0 * torch.eye(6, dtype=DT)
    k[6:9, 9:12] = k[9:12, 6:9] = 0
    lam = 0.5
    got = meta_ntk(theta, k, n_tasks=2, n_query=3, n_support=3, inner_lr_time=math.inf, reg_coef=lam)
    p = torch.zeros(6, 12, dtype=DT)
    p[:, :6] = torch.eye(6, dtype=DT)
    p[0:3, 6:9] = -k[0:3, 6:9] / (2.0 + lam)
    p[3:6, 9:12] = -k[3:6, 9:12] / (2.0 + lam)
    torch.testing.assert_close(got, p @ theta @ p.T, rtol=1e-12, atol=1e-12)


def test_theta_and_k_enter_in_their_own_places():
    # ANIL: K (the head Gram) only builds A_i; Theta is the kernel that is projected. Swapping them changes Phi.
    theta, k = _spd(12, 3), _spd(12, 4)
    ab = meta_ntk(theta, k, n_tasks=2, n_query=3, n_support=3, inner_lr_time=1.0, reg_coef=1e-3)
    ba = meta_ntk(k, theta, n_tasks=2, n_query=3, n_support=3, inner_lr_time=1.0, reg_coef=1e-3)
    assert (ab - ba).abs().max() > 1e-2
    # theta = identity: Phi = I + A A^T blockwise (cross-task blocks 0)
    eye = torch.eye(12, dtype=DT)
    got = meta_ntk(eye, k, n_tasks=2, n_query=3, n_support=3, inner_lr_time=math.inf, reg_coef=1e-3)
    for i in range(2):
        q, s = slice(3 * i, 3 * i + 3), slice(6 + 3 * i, 6 + 3 * i + 3)
        a_i = k[q, s] @ torch.linalg.inv(k[s, s] + 1e-3 * torch.eye(3, dtype=DT))
        torch.testing.assert_close(got[q, q], torch.eye(3, dtype=DT) + a_i @ a_i.T, rtol=1e-10, atol=1e-10)
    assert torch.equal(got[0:3, 3:6], torch.zeros(3, 3, dtype=DT))


# ------------------------------------------------------------------------------------------ condition_number
@pytest.mark.parametrize("diag, want", [
    ([1.0, 2.0, 4.0], 4.0),
    ([-1.0, 2.0], -2.0),  # signed: lambda_max / lambda_min, no absolute value
    ([-3.0, -1.0], 1 / 3),  # both negative: (-1) / (-3)
    ([1e-9, 1.0], 1e9),
])
def test_condition_number_is_the_signed_eigen_ratio(diag, want):
    # a rotation of the diagonal: eigenvalues unchanged
    q, _ = torch.linalg.qr(torch.randn(len(diag), len(diag), generator=torch.Generator().manual_seed(0), dtype=DT))
    k = q @ torch.diag(torch.tensor(diag, dtype=DT)) @ q.T
    assert condition_number(k) == pytest.approx(want, rel=1e-6)


def test_condition_number_zero_nan_and_asymmetric_cases():
    assert condition_number(torch.diag(torch.tensor([0.0, 1.0]))) == math.inf  # 1 / 0
    assert condition_number(torch.diag(torch.tensor([0.0, -1.0]))) == 0.0  # lambda_max = 0 over lambda_min = -1
    assert condition_number(torch.zeros(3, 3)) == NAN_CONDITION  # 0 / 0 -> NaN -> 100000
    assert condition_number(torch.tensor([[1.0, math.nan], [math.nan, 1.0]])) == NAN_CONDITION
    assert NAN_CONDITION == 100000.0
    # symmetrised first: [[1, 2], [0, 1]] -> [[1, 1], [1, 1]], eigenvalues 0 and 2
    assert condition_number(torch.tensor([[1.0, 2.0], [0.0, 1.0]])) == math.inf
    # float32 input is taken in float64: eigenvalues 1 and 3 of [[2, 1], [1, 2]]
    assert condition_number(torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float32)) == pytest.approx(3.0, 1e-12)


# -------------------------------------------------------------------------------------------- the ANIL kernel
class _Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean((2, 3))  # (N, 4)


class _WithHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = _Body(), nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.body(x))


def test_head_gram_is_n_way_times_feature_gram():
    # d(sum of the 5 logits)/dW_head = 1_5 (x) phi(x): the head Gram is 5 * Phi Phi^T (method-facts §4.4)
    torch.manual_seed(0)
    model = _WithHead().double()
    x = torch.randn(6, 3, 5, 5, dtype=DT)
    grams = empirical_ntk(model, x, per_layer=True)
    feats = model.body(x).detach()
    torch.testing.assert_close(grams["head"], 5 * feats @ feats.T, rtol=1e-12, atol=1e-12)
    theta = torch.stack(list(grams.values())).sum(0)
    assert (theta - grams["head"]).abs().max() > 1e-6  # the body contributes: Theta != the head Gram


@pytest.mark.parametrize("kernel", ["maml", "anil"])
def test_search_passes_theta_and_the_right_inner_kernel(monkeypatch, kernel):
    # the search's MetaNTK: Theta = sum of all layer Grams is projected; K = Theta (MAML) or the head Gram (ANIL)
    mod = sys.modules[search.__module__]
    body, head = _spd(8, 5), _spd(8, 6)
    seen = []

    def ntk(model, x, **kwargs):
        return {"body.cells": body, "head": head}

    def spy(theta, k, **kwargs):
        seen.append((theta, k))
        return meta_ntk(theta, k, **kwargs)

    monkeypatch.setattr(mod, "empirical_ntk", ntk)
    monkeypatch.setattr(mod, "meta_ntk", spy)
    cfg = SearchConfig(method="metantk-only", kernel=kernel, channels=4, num_cells=3, resolution=8, repeats=1,
                       n_tasks=2, n_way=2, ops=("skip_connect", "max_pool_3x3BN"), episode_pool=20)
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    res = search(TensorSource(images, torch.arange(24) % 6), cfg, seed=0, show_progress=False)
    assert seen
    for theta, k in seen:
        torch.testing.assert_close(theta, body + head, rtol=0, atol=0)
        torch.testing.assert_close(k, body + head if kernel == "maml" else head, rtol=0, atol=0)
    # every candidate sees the same fake kernels: ΔC = 0 for all of them
    assert all(r["delta_cond"] == 0 for r in res.rounds[0]["candidates"])


# ----------------------------------------------------------------------------- guards found by mutation testing
def test_meta_ntk_defaults_and_bad_arguments():
    theta = _spd(4, 7)
    default = meta_ntk(theta, theta, n_tasks=2, n_query=1, n_support=1)
    torch.testing.assert_close(default, meta_ntk(theta, theta, n_tasks=2, n_query=1, n_support=1,
                                                 inner_lr_time=math.inf, reg_coef=1e-3), rtol=0, atol=0)
    with pytest.raises(KernelError, match="inner_lr_time > 0"):
        meta_ntk(theta, theta, n_tasks=2, n_query=1, n_support=1, inner_lr_time=0.0)
    with pytest.raises(KernelError, match="reg_coef >= 0"):
        meta_ntk(theta, theta, n_tasks=2, n_query=1, n_support=1, reg_coef=-1e-3)
    with pytest.raises(KernelError, match=r"^k: expected a \(4, 4\) kernel"):
        meta_ntk(theta, theta[:3, :3], n_tasks=2, n_query=1, n_support=1)
    with pytest.raises(KernelError, match=r"^theta: expected a \(4, 4\) kernel"):
        meta_ntk(theta[:3, :3], theta, n_tasks=2, n_query=1, n_support=1)


def test_count_distinct_rows_against_python_sets():
    g = torch.Generator().manual_seed(0)
    for d in (1, 62, 63, 64, 130):
        base = torch.randint(0, 2, (30, d), generator=g).bool()
        pats = base[torch.randint(0, 30, (120,), generator=g)]  # with repeats
        assert count_distinct_rows(pats) == len({tuple(r.tolist()) for r in pats})
    two = torch.zeros(2, 126, dtype=torch.bool)
    two[0, 0] = two[1, 63] = True  # the same bit of two different 63-bit words
    assert count_distinct_rows(two) == 2
    assert count_distinct_rows(torch.zeros(0, 5, dtype=torch.bool)) == 0
    assert count_distinct_rows(torch.ones(1, 5, dtype=torch.bool)) == 1
    with pytest.raises(KernelError, match=r"expected a \(N, D\) pattern matrix, found shape \(5,\)"):
        count_distinct_rows(torch.ones(5, dtype=torch.bool))
