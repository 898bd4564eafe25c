"""The batched logistic-regression probe: scikit-learn's ``LogisticRegression(C)`` objective, solved for every
episode at once in float64 by Newton-CG, and its predictions.

Minimises ``sum_i log-loss_i + ||W||^2 / (2C)`` (intercept unpenalised), the classifier of RFS's evaluation
(https://arxiv.org/abs/2003.11539, method-facts §8), on the inputs' device.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["fit_logistic_regression", "probe_predict"]

logger = logging.getLogger(__name__)


def _reduce(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce centred features to r = min(N, D) columns: returns (X̃, M) with W = Z M and ||Z|| = ||W||.

    Logits depend on W only through Xc Wᵀ and the L2-optimal W lies in the row space of Xc, so for D > N the
    problem in X̃ = U Λ^½ (T, N, N), from Xc Xcᵀ = U Λ Uᵀ, is the same problem, with M = Λ^-½ Uᵀ Xc. For D <= N
    X̃ = Xc and M = I."""
    t, n, d = xc.shape
    if d <= n:
        return xc, torch.eye(d, dtype=xc.dtype, device=xc.device).expand(t, d, d)
    lam, u = torch.linalg.eigh(xc @ xc.transpose(1, 2))  # (T, N), (T, N, N)
    keep = lam > lam.amax(dim=1, keepdim=True) * 1e-12
    sq = torch.where(keep, lam.clamp_min(0).sqrt(), torch.zeros_like(lam))
    inv = torch.where(keep, 1.0 / sq.clamp_min(1e-300), torch.zeros_like(lam))
    return u * sq.unsqueeze(1), (u * inv.unsqueeze(1)).transpose(1, 2) @ xc  # (T, N, N), (T, N, D)


def _objective(x: torch.Tensor, y1h: torch.Tensor, z: torch.Tensor, b: torch.Tensor, inv_c: float) -> torch.Tensor:
    """The objective (T,) at (z, b): summed log-loss plus ``||z||^2 / (2C)``."""
    logits = x @ z.transpose(-1, -2) + b.unsqueeze(-2)  # (..., N, K)
    nll = torch.logsumexp(logits, -1) - (logits * y1h).sum(-1)
    return nll.sum(-1) + 0.5 * inv_c * z.pow(2).sum((-1, -2))


def fit_logistic_regression(
    x_spt: torch.Tensor,
    y_spt: torch.Tensor,
    n_way: int,
    C: float = 1.0,
    *,
    gtol: float = 1e-6,
    max_iter: int = 100,
    cg_iter: int = 40,
    cg_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit T multinomial logistic regressions at once; scikit-learn's ``LogisticRegression(C=C)`` objective.

    Minimises ``sum_i [logsumexp(W x_i + b) - (W x_i + b)_{y_i}] + ||W||_F^2 / (2C)`` per episode (intercept
    unpenalised) by Newton's method with conjugate-gradient steps and a backtracking (Armijo) line search, in
    float64 on the inputs' device, until every episode's gradient is below ``gtol`` (max norm). Only the inner CG
    solves for the Newton direction run in ``cg_dtype`` (float32: half the memory traffic); the gradient, the
    objective and so the optimum are float64.

    Args:
        x_spt: (T, N, D) support features.
        y_spt: (T, N) labels in 0..n_way-1.
        n_way: number of classes K.
        C: inverse regularisation strength.

    Returns:
        W (T, K, D) and b (T, K), float64.
    """
    x = x_spt.double()
    t, n, d = x.shape
    y1h = nn.functional.one_hot(y_spt.long(), n_way).double()  # (T, N, K)
    # centring is exact: the intercept is unpenalised, so b absorbs W x̄ (b_original = b - W x̄)
    x_mean = x.mean(1, keepdim=True)  # (T, 1, D)
    xr, m = _reduce(x - x_mean)  # (T, N, r)
    xr_sq = xr.pow(2)
    xr_lo = xr.to(cg_dtype)
    r = xr.shape[-1]
    inv_c = 1.0 / C
    z = x.new_zeros(t, n_way, r)
    b = x.new_zeros(t, n_way)
    for _ in range(max_iter):
        logits = xr @ z.transpose(1, 2) + b.unsqueeze(1)  # (T, N, K)
        p = torch.softmax(logits, -1)
        res = p - y1h
        gz = res.transpose(1, 2) @ xr + inv_c * z  # (T, K, r)
        gb = res.sum(1)  # (T, K)
        gmax = torch.maximum(gz.abs().amax((1, 2)), gb.abs().amax(1))  # (T,)
        active = gmax > gtol
        if not active.any():
            break
        dz, db = _newton_direction(xr_lo, xr_sq, p, gz, gb, gmax, inv_c, cg_iter=cg_iter, cg_dtype=cg_dtype)
        dz, db = dz * active[:, None, None], db * active[:, None]
        alpha = _armijo_step(xr, y1h, z, b, dz, db, gz, gb, active, inv_c)  # (T,)
        z = z + alpha[:, None, None] * dz
        b = b + alpha[:, None] * db
    else:
        logger.debug("logistic-regression probe: %d episode(s) did not reach gtol=%g in %d Newton steps",
                     int(active.sum()), gtol, max_iter)
    w = z @ m  # (T, K, D)
    return w, b - (w @ x_mean.transpose(1, 2)).squeeze(-1)


def _newton_direction(xr_lo: torch.Tensor, xr_sq: torch.Tensor, p: torch.Tensor, gz: torch.Tensor, gb: torch.Tensor,
                      gmax: torch.Tensor, inv_c: float, *, cg_iter: int,
                      cg_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The Newton step ``-H^-1 g`` (float64 out) by Jacobi-preconditioned CG in ``cg_dtype``, to a relative
    tolerance that tightens as the gradient's max norm ``gmax`` (T,) shrinks."""
    p_lo = p.to(cg_dtype)

    def hess_vec(vz: torch.Tensor, vb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # only the Newton direction is computed in cg_dtype; gradients and objectives stay float64
        u = xr_lo @ vz.transpose(1, 2) + vb.unsqueeze(1)  # (T, N, K)
        s = p_lo * u - p_lo * (p_lo * u).sum(-1, keepdim=True)
        return s.transpose(1, 2) @ xr_lo + inv_c * vz, s.sum(1)

    pk = p * (1 - p)  # (T, N, K): Jacobi preconditioner = diagonal of the Hessian
    diag_z = pk.transpose(1, 2) @ xr_sq + inv_c
    diag_b = pk.sum(1).clamp_min(1e-12)
    dz, db = _conjugate_gradient(hess_vec, -gz.to(cg_dtype), -gb.to(cg_dtype), (1.0 / diag_z).to(cg_dtype),
                                 (1.0 / diag_b).to(cg_dtype), max_iter=cg_iter,
                                 rtol=gmax.sqrt().clamp(1e-4, 0.5).to(cg_dtype))
    return dz.double(), db.double()


def _armijo_step(xr: torch.Tensor, y1h: torch.Tensor, z: torch.Tensor, b: torch.Tensor, dz: torch.Tensor,
                 db: torch.Tensor, gz: torch.Tensor, gb: torch.Tensor, active: torch.Tensor,
                 inv_c: float) -> torch.Tensor:
    """Backtracking (Armijo) step sizes (T,): the full Newton step is almost always accepted; halve only where it
    is not (0 for episodes that have converged)."""
    f0 = _objective(xr, y1h, z, b, inv_c)  # (T,)
    slope = (gz * dz).sum((1, 2)) + (gb * db).sum(1)  # (T,)
    alpha = active.double()  # (T,)
    for _ls in range(40):
        f1 = _objective(xr, y1h, z + alpha[:, None, None] * dz, b + alpha[:, None] * db, inv_c)
        bad = active & (f1 > f0 + 1e-4 * alpha * slope)
        if not bad.any():
            break
        alpha = torch.where(bad, alpha * 0.5, alpha)
    return alpha


def _conjugate_gradient(hv, rz, rb, mz, mb, *, max_iter: int, rtol: torch.Tensor):
    """Batched preconditioned CG for H [dz, db] = [rz, rb] (H PSD per episode, diagonal preconditioner
    [mz, mb] ≈ H^-1); stops per episode at ||residual|| <= rtol ||rhs||."""
    # H is singular along b + c·1 (softmax is shift-invariant, the intercept unpenalised): keep every b-part in
    # the sum-zero subspace, where H is definite
    xz, xb = torch.zeros_like(rz), torch.zeros_like(rb)
    sz, sb = mz * rz, _center(mb * rb)
    pz, pb = sz.clone(), sb.clone()
    rs = (rz * sz).sum((1, 2)) + (rb * sb).sum(1)  # (T,)
    stop = rtol.pow(2) * ((rz * rz).sum((1, 2)) + (rb * rb).sum(1))
    for _ in range(max_iter):
        live = ((rz * rz).sum((1, 2)) + (rb * rb).sum(1)) > stop
        if not live.any():
            break
        hz, hb = hv(pz, pb)
        php = (pz * hz).sum((1, 2)) + (pb * hb).sum(1)
        live = live & (php > 1e-30)
        a = torch.where(live, rs / php.clamp_min(1e-300), torch.zeros_like(rs))
        xz, xb = xz + a[:, None, None] * pz, xb + a[:, None] * pb
        rz, rb = rz - a[:, None, None] * hz, rb - a[:, None] * hb
        sz, sb = mz * rz, _center(mb * rb)
        rs_new = (rz * sz).sum((1, 2)) + (rb * sb).sum(1)
        beta = torch.where(live, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        pz, pb = sz + beta[:, None, None] * pz, sb + beta[:, None] * pb
        rs = rs_new
    return xz, xb


def _center(v: torch.Tensor) -> torch.Tensor:
    return v - v.mean(-1, keepdim=True)


def probe_predict(w: torch.Tensor, b: torch.Tensor, x_qry: torch.Tensor) -> torch.Tensor:
    """Class predictions (T, M) of fitted probes ``w`` (T, K, D), ``b`` (T, K) on queries (T, M, D)."""
    return (x_qry.to(w.dtype) @ w.transpose(1, 2) + b.unsqueeze(1)).argmax(-1)
