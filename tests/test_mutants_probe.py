"""Known answers for the logistic-regression probe (``fewshot/probe.py``) that the scikit-learn comparisons at C=1 do
not pin down: the optimality conditions of the penalised objective at other C, the objective's value by hand
and the note when the solver stops early.

Written against mutants the other tests let through (``scripts/mutation_test.sh``).
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from metantk_zoo.fewshot import probe
from metantk_zoo.fewshot.probe import fit_logistic_regression

DT = torch.float64


def _kkt(x, y, n_way, w, b, C):
    """Gradient of sum_i log-loss_i + ||W||^2 / (2C) at (W, b), written out: sum_i (p_i - e_{y_i}) [x_i, 1] + W / C."""
    p = torch.softmax(x @ w.transpose(1, 2) + b.unsqueeze(1), -1)
    r = p - torch.nn.functional.one_hot(y, n_way).double()
    return r.transpose(1, 2) @ x + w / C, r.sum(1)


@pytest.mark.parametrize("C", [0.05, 7.0])
@pytest.mark.parametrize("d", [4, 20])  # fewer and more dimensions than samples
def test_the_solution_satisfies_the_optimality_conditions_at_any_c(C, d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(3, 10, d, generator=g, dtype=DT) + 0.5
    y = torch.randint(0, 3, (3, 10), generator=g)
    y[:, :3] = torch.arange(3)
    w, b = fit_logistic_regression(x, y, 3, C=C, gtol=1e-10)
    gw, gb = _kkt(x, y, 3, w, b, C)
    assert gw.abs().max() < 1e-8 and gb.abs().max() < 1e-8
    # and a different C gives a different solution (the penalty enters)
    w1, _ = fit_logistic_regression(x, y, 3, C=1.0, gtol=1e-10)
    assert (w1 - w).abs().max() > 1e-3


def test_objective_by_hand():
    # one sample x = (1, 2), label 1, z = [[1, 0], [0, 1]], b = (0, 1): logits (1, 3);
    # log-loss = log(e + e^3) - 3; penalty ||z||^2 / (2C) = 2 / (2 * 0.5) = 2
    x = torch.tensor([[[1.0, 2.0]]], dtype=DT)
    y1h = torch.tensor([[[0.0, 1.0]]], dtype=DT)
    z = torch.eye(2, dtype=DT).unsqueeze(0)
    b = torch.tensor([[0.0, 1.0]], dtype=DT)
    f = probe._objective(x, y1h, z, b, inv_c=2.0)
    assert f.shape == (1,) and float(f) == pytest.approx(math.log(math.e + math.e**3) - 3 + 2, rel=1e-14)


def test_stopping_at_max_iter_is_noted(caplog):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, generator=g, dtype=DT)
    y = torch.randint(0, 2, (2, 8), generator=g)
    with caplog.at_level(logging.DEBUG, logger=probe.__name__):
        fit_logistic_regression(x, y, 2, max_iter=1)
    assert [r.getMessage() for r in caplog.records] == [
        "logistic-regression probe: 2 episode(s) did not reach gtol=1e-06 in 1 Newton steps"]


def test_line_search_halves_an_overlong_step_until_armijo_holds():
    # Armijo backtracking, transcribed: the first alpha in 1, 1/2, 1/4, ... with
    # f(z + alpha dz, b + alpha db) <= f(z, b) + 1e-4 alpha <g, d>; an episode that is not active gets alpha 0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 2, generator=g, dtype=DT)
    y = torch.randint(0, 2, (3, 6), generator=g)
    y1h = torch.nn.functional.one_hot(y, 2).double()
    z, b = torch.zeros(3, 2, 2, dtype=DT), torch.zeros(3, 2, dtype=DT)
    gz, gb = _kkt(x, y, 2, z, b, 1.0)
    scale = torch.tensor([40.0, 0.01, 40.0], dtype=DT)  # far too long, short enough, inactive
    dz, db = -scale[:, None, None] * gz, -scale[:, None] * gb
    active = torch.tensor([True, True, False])

    def f(zz, bb):  # the objective written out: log-loss summed over samples + ||z||^2 / 2
        logits = x @ zz.transpose(1, 2) + bb.unsqueeze(1)
        return (torch.logsumexp(logits, -1) - (logits * y1h).sum(-1)).sum(-1) + 0.5 * zz.pow(2).sum((1, 2))

    want = []
    for t in range(3):
        slope = float((gz[t] * dz[t]).sum() + (gb[t] * db[t]).sum())
        alpha = 1.0
        while float(f(z + alpha * dz, b + alpha * db)[t]) > float(f(z, b)[t]) + 1e-4 * alpha * slope:
            alpha /= 2
        want.append(alpha if active[t] else 0.0)
    assert want[0] < 0.5 and want[1] == 1.0  # the draw exercises both
    alpha = probe._armijo_step(x, y1h, z, b, dz, db, gz, gb, active, 1.0)
    assert alpha.tolist() == want
