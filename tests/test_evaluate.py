"""Few-shot evaluation: the probe against scikit-learn, the CI formula, feature reuse, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from metantk_zoo.errors import ConfigError, DatasetError
from metantk_zoo.fewshot import (
    Episodes,
    EvalResult,
    episode_accuracies,
    evaluate_features,
    evaluate_fewshot,
    extract_features,
    fit_logistic_regression,
    mean_confidence_interval,
    probe_predict,
    protocol_config,
    save_eval_result,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def clustered(t: int, k: int, n: int, d: int, spread: float, seed: int = 0, centers=None):
    """(T, K*n, D) L2-normalised features around per-episode class centres, labels class-major."""
    g = torch.Generator().manual_seed(seed)
    if centers is None:
        centers = torch.randn(t, k, d, generator=torch.Generator().manual_seed(1000 + seed))
    y = torch.arange(k).repeat_interleave(n).expand(t, -1)
    x = centers.gather(1, y[..., None].expand(-1, -1, d)) * 0.4 + spread * torch.randn(t, k * n, d, generator=g)
    return nn.functional.normalize(x, dim=-1), y, centers


def test_protocols():
    paper, rfs = protocol_config("paper"), protocol_config("rfs", n_shot=5)
    assert (paper.n_episodes, paper.n_query, paper.n_aug_support, paper.C) == (1000, 50, 5, 1.0)
    assert (rfs.n_episodes, rfs.n_query, rfs.n_shot) == (600, 15, 5)
    with pytest.raises(ConfigError, match="known protocols"):
        protocol_config("metaopt")
    with pytest.raises(ConfigError, match="n_way"):
        protocol_config("rfs", n_way=1)


def test_confidence_interval_is_student_t_by_hand():
    acc = [0.2, 0.4, 0.6, 0.6, 0.8]
    m, h = mean_confidence_interval(acc)
    sd = math.sqrt(sum((a - 0.52) ** 2 for a in acc) / 4)
    assert m == pytest.approx(0.52) and h == pytest.approx(2.7764451051977987 * sd / math.sqrt(5))


def test_probe_is_perfect_on_separable_features():
    x, y, c = clustered(8, 5, 3, 16, spread=0.05)
    xq, yq, _ = clustered(8, 5, 10, 16, spread=0.05, seed=1, centers=c)
    assert episode_accuracies(x, y, xq, yq, 5).tolist() == [1.0] * 8


def test_probe_matches_scikit_learn_on_200_episodes():
    """Same objective as LogisticRegression(C=1, lbfgs): >= 99% identical predictions, accuracy within 0.2 points."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    t, k = 200, 5
    xs, ys, c = clustered(t, k, 5, 24, spread=1.0)
    xq, yq, _ = clustered(t, k, 15, 24, spread=1.0, seed=1, centers=c)
    w, b = fit_logistic_regression(xs, ys, k)
    ours = probe_predict(w, b, xq)
    same, acc_sk = 0, []
    for i in range(t):
        clf = sklearn.LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)
        clf.fit(xs[i].double().numpy(), ys[i].numpy())
        pred = clf.predict(xq[i].double().numpy())
        same += int((pred == ours[i].numpy()).sum())
        acc_sk.append((pred == yq[i].numpy()).mean())
        if i == 0:  # the same optimum, not just the same argmax (sklearn stops at tol=1e-4)
            assert np.abs(clf.coef_ - w[0].numpy()).max() < 5e-3
    agreement = same / ours.numel()
    acc_ours = (ours == yq).double().mean().item()
    assert agreement >= 0.99, agreement
    assert abs(acc_ours - float(np.mean(acc_sk))) <= 0.002
    assert 0.3 < acc_ours < 0.95  # a non-trivial problem


def test_probe_handles_more_dimensions_than_samples():
    """D > N takes the Gram (dual) path; the fitted W still satisfies the optimality condition W = C·Σ(y - p)xᵀ."""
    x, y, _ = clustered(3, 5, 2, 64, spread=1.0)
    w, b = fit_logistic_regression(x, y, 5)
    p = torch.softmax(x.double() @ w.transpose(1, 2) + b[:, None], -1)
    resid = nn.functional.one_hot(y, 5).double() - p
    assert torch.allclose(w, resid.transpose(1, 2) @ x.double(), atol=1e-6)
    assert torch.allclose(resid.sum(1), torch.zeros(3, 5, dtype=torch.float64), atol=1e-6)


class _CountingImages:
    """An ImageSource over fixed random images that records every load."""

    def __init__(self, n: int):
        self.x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        self.calls: list[tuple[int, bool]] = []

    def load(self, indices, augment):
        self.calls.append((len(indices), augment))
        x = self.x[list(indices)]
        return x + 0.1 * torch.randn_like(x) if augment else x


def _episodes(t, n_way, n_shot, n_query, n_img=40, seed=0):
    g = np.random.default_rng(seed)
    sup, qry = [], []
    for _ in range(t):
        ids = g.permutation(n_img)[: n_way * (n_shot + n_query)].reshape(n_way, -1)
        sup.append(ids[:, :n_shot].ravel())
        qry.append(ids[:, n_shot:].ravel())
    return Episodes(torch.as_tensor(np.stack(sup)), torch.arange(n_way).repeat_interleave(n_shot).expand(t, -1),
                    torch.as_tensor(np.stack(qry)), torch.arange(n_way).repeat_interleave(n_query).expand(t, -1),
                    manifest_hash="abc")


def test_features_are_computed_once_per_image_and_support_copy():
    import timm

    model = timm.create_model("metantk_nano", num_classes=0, init_channels=4)
    images = _CountingImages(40)
    eps = _episodes(30, 3, 2, 4)
    cfg = protocol_config("rfs", n_way=3, n_shot=2, n_query=4, n_episodes=30, n_aug_support=2, batch_size=1000)
    res = evaluate_fewshot(model, images, eps, cfg, device="cpu")
    n_q, n_s = len(torch.unique(eps.query)), len(torch.unique(eps.support))
    assert images.calls == [(n_q, False), (n_s, True), (n_s, True)]
    assert res.n_episodes == 30 and 0 <= res.mean <= 1 and res.manifest_hash == "abc" and len(res.accuracies) == 30
    # the same features through evaluate_features give the same numbers (seeded augmentation)
    again = evaluate_fewshot(model, _CountingImages(40), eps, cfg, device="cpu")
    assert again.accuracies == res.accuracies


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot find the pre-logit features of Linear"):
        extract_features(nn.Linear(4, 2), [torch.randn(2, 4)])
    eps = _episodes(4, 3, 1, 2)
    with pytest.raises(DatasetError, match="expected"):
        evaluate_features(torch.randn(40, 8), eps, protocol_config("rfs", n_way=5, n_shot=1, n_query=2))
    with pytest.raises(DatasetError, match="only 10 images"):
        evaluate_features(torch.randn(10, 8), eps, protocol_config("rfs", n_way=3, n_shot=1, n_query=2))


def test_eval_json_merges_results(tmp_path):
    r = EvalResult(0.5, 0.01, 10, 5, 1, 15, 5, "rfs", "h", dataset="d", split="test")
    save_eval_result(tmp_path / "eval.json", r)
    save_eval_result(tmp_path / "eval.json", EvalResult(0.6, 0.01, 10, 5, 1, 15, 5, "rfs", "h", dataset="d",
                                                        split="test"))
    rows = save_eval_result(tmp_path / "eval.json", EvalResult(0.7, 0.01, 10, 5, 5, 15, 5, "rfs", "h", dataset="d",
                                                               split="test"))
    assert [(x["n_shot"], x["mean"]) for x in rows] == [(1, 0.6), (5, 0.7)]
