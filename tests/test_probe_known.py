"""The few-shot probe and its confidence interval against independent truths (method-facts §8): scikit-learn's
multinomial ``LogisticRegression(C=1)`` on D=576 features with 5 augmented support copies, L2 normalisation by value,
and the Student-t 95% half-width from ``scipy.stats``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from torch import nn

from metantk_zoo.fewshot import (
    Episodes,
    EvalConfig,
    evaluate_features,
    extract_features,
    fit_logistic_regression,
    mean_confidence_interval,
    probe_predict,
)

D, WAY, AUG = 576, 5, 5


def _objective(x, y, w, b, C=1.0):
    """sum_i [logsumexp(W x_i + b) - (W x_i + b)_{y_i}] + ||W||^2 / (2C), in float64 numpy (intercept unpenalised)."""
    logits = x @ w.T + b
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True))).ravel()
    return float((lse - logits[np.arange(len(y)), y]).sum() + 0.5 / C * (w**2).sum())


def _episode(shot: int, seed: int, n_query: int = 50):
    """Features like a backbone's: class means + noise, L2-normalised; AUG noisy copies of every support image."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((WAY, D))
    base = np.repeat(means, shot, 0) + 2.0 * rng.standard_normal((WAY * shot, D))
    spt = np.repeat(base, AUG, 0) + 0.5 * rng.standard_normal((WAY * shot * AUG, D))  # augmented copies
    y_spt = np.repeat(np.arange(WAY), shot * AUG)
    qry = np.repeat(means, n_query, 0) + 2.0 * rng.standard_normal((WAY * n_query, D))
    y_qry = np.repeat(np.arange(WAY), n_query)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    return unit(spt), y_spt, unit(qry), y_qry


@pytest.mark.parametrize("shot", [1, 5])
def test_probe_equals_scikit_learn_multinomial_c1_on_576_dims_with_5_support_copies(shot):
    episodes = [_episode(shot, seed) for seed in range(4 if shot == 1 else 2)]
    x_spt = torch.tensor(np.stack([e[0] for e in episodes]))
    y_spt = torch.tensor(np.stack([e[1] for e in episodes]))
    x_qry = torch.tensor(np.stack([e[2] for e in episodes]))
    assert x_spt.shape == (len(episodes), WAY * shot * AUG, D)
    w, b = fit_logistic_regression(x_spt, y_spt, WAY, 1.0)
    pred = probe_predict(w, b, x_qry)
    for t, (xs, ys, xq, _) in enumerate(episodes):
        # the reference's classifier (fewshot_test.py): lbfgs, C=1, max_iter=1000, random_state=0; multinomial is
        # lbfgs's loss for >= 3 classes. A tight tol gives the exact optimum to compare objectives against.
        exact = LogisticRegression(C=1.0, max_iter=10000, tol=1e-12, random_state=0).fit(xs, ys)
        ours = _objective(xs, ys, w[t].numpy(), b[t].numpy())
        theirs = _objective(xs, ys, exact.coef_, exact.intercept_)
        print(f"shot={shot} episode {t}: objective ours {ours!r} scikit-learn {theirs!r}")
        assert abs(ours - theirs) < 1e-6, (ours, theirs)
        assert ours <= theirs + 1e-9  # not worse than scikit-learn's optimum
        ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(xs, ys)
        assert np.array_equal(pred[t].numpy(), ref.predict(xq))
        assert np.array_equal(pred[t].numpy(), exact.predict(xq))


def test_evaluate_features_fits_on_every_augmented_copy():
    # evaluate_features with support_feats (N_img, A, D): the support set of an episode is all A copies of each of
    # its images, labels repeated per copy; queries are the plain features. Compare with scikit-learn, by hand.
    rng = np.random.default_rng(7)
    n_img = 40
    labels = np.arange(n_img) % WAY
    means = rng.standard_normal((WAY, D))
    feats = means[labels] + 2.0 * rng.standard_normal((n_img, D))
    copies = feats[:, None, :] + 0.5 * rng.standard_normal((n_img, AUG, D))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    copies /= np.linalg.norm(copies, axis=2, keepdims=True)
    support = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    query = torch.tensor([list(range(15 + 5 * i, 30 + 5 * i)) for i in range(3)])
    eps = Episodes(support, torch.tensor(labels)[support], query, torch.tensor(labels)[query])
    cfg = EvalConfig(n_way=WAY, n_shot=1, n_query=3, n_episodes=3, n_aug_support=AUG)
    res = evaluate_features(torch.tensor(feats, dtype=torch.float32), eps, cfg,
                            support_feats=torch.tensor(copies, dtype=torch.float32), device="cpu")
    for t in range(3):
        xs = copies[support[t].numpy()].reshape(-1, D).astype(np.float32).astype(np.float64)
        ys = np.repeat(labels[support[t].numpy()], AUG)
        clf = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(xs, ys)
        xq = feats[query[t].numpy()].astype(np.float32).astype(np.float64)
        acc = float((clf.predict(xq) == labels[query[t].numpy()]).mean())
        assert res.accuracies[t] == pytest.approx(acc, abs=1e-12)


# ------------------------------------------------------------------------------------------- L2 normalisation
class _Fixed(nn.Module):
    """Pre-logit features = the first two pixels of channel 0, times 3 (so the raw norm is not 1)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))
        self.bn = nn.BatchNorm1d(2)
        with torch.no_grad():
            self.bn.running_mean.fill_(1.0)
            self.bn.running_var.fill_(4.0 - 1e-5)  # eval mode: (x - 1) / 2

    def forward_features(self, x):
        return self.bn(self.scale * x[:, 0, 0, :2])

    def forward_head(self, x, pre_logits: bool = False):
        return x


def test_features_are_l2_normalised_by_default_by_value_in_eval_mode():
    x = torch.zeros(2, 1, 1, 2)
    x[0, 0, 0] = torch.tensor([1.0, 3.0])  # 3 x -> (3, 9); eval BN -> (1, 4)
    x[1, 0, 0] = torch.tensor([-1.0, 1.0])  # -> (-3, 3) -> (-2, 1)
    model = _Fixed().train()
    got = extract_features(model, [x])
    want = torch.tensor([[1.0, 4.0], [-2.0, 1.0]])
    want = want / want.norm(dim=1, keepdim=True)  # (1, 4)/sqrt(17), (-2, 1)/sqrt(5)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got[0, 1].item() == pytest.approx(4 / math.sqrt(17), rel=1e-6)
    torch.testing.assert_close(extract_features(model, [x], normalize=False), torch.tensor([[1.0, 4.0], [-2.0, 1.0]]))
    assert model.training  # the caller's mode is restored


# -------------------------------------------------------------------------------------------------- the 95% CI
@pytest.mark.parametrize("n, seed", [(2, 0), (7, 1), (600, 2), (1000, 3)])
def test_half_width_is_scipy_student_t_with_ddof_1(n, seed):
    acc = np.random.default_rng(seed).uniform(0.2, 0.9, size=n)
    mean, h = mean_confidence_interval(acc.tolist())
    lo, hi = stats.t.interval(0.95, n - 1, loc=acc.mean(), scale=stats.sem(acc, ddof=1))
    assert mean == pytest.approx(acc.mean(), rel=1e-14)
    assert h == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert h == pytest.approx(stats.t.ppf(0.975, n - 1) * acc.std(ddof=1) / math.sqrt(n), rel=1e-12)
    # ddof=0 or the normal quantile would be visibly different at small n
    if n <= 7:
        assert abs(h - 1.959963985 * acc.std(ddof=0) / math.sqrt(n)) > 1e-3
