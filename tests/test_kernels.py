"""Kernels: brute-force Jacobian, backend agreement in float64, MetaNTK against a direct implementation, limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from metantk_zoo.errors import KernelError
from metantk_zoo.nas.kernels import NAN_CONDITION, condition_number, empirical_ntk, ieee_fp32, meta_ntk
from metantk_zoo.nas.loop import _WithHead
from metantk_zoo.nas.supernet import SuperNet


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3)).double()


def _jacobian_gram(model: nn.Module, x: torch.Tensor, use_bias: bool) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters() if use_bias or n.endswith("weight")]
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        model(x[i : i + 1]).sum().backward()
        rows.append(torch.cat([dict(model.named_parameters())[n].grad.flatten() for n in names]))
    j = torch.stack(rows)  # (N, P): one Jacobian row per sample, one backward each
    return j @ j.T


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("backend", ["hook", "opacus", "func"])
def test_empirical_ntk_equals_brute_force_jacobian(backend, use_bias):
    model = _mlp()
    x = torch.randn(6, 4, dtype=torch.float64)
    expected = _jacobian_gram(model, x, use_bias)
    got = empirical_ntk(model, x, backend=backend, use_bias=use_bias)
    assert got.dtype == torch.float64 and got.shape == (6, 6)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None or p.requires_grad for p in model.parameters())


def _supernet_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = SuperNet.kernel_net(channels=4, num_cells=3, num_classes=10).double().train()
    alive = net.alive.clone()
    alive[0, 2, 3] = False  # a masked op: its weights must not enter any backend's Gram
    alive[1, 5, :] = False  # a removed edge
    net.set_alive(alive)
    return _WithHead(net, nn.Linear(net.num_features, 5).double())


def test_backends_agree_on_a_supernet_float64():
    model = _supernet_model()
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    grams = {b: empirical_ntk(model, x, backend=b, per_layer=True) for b in ("hook", "opacus", "func")}
    assert set(grams["hook"]) == set(grams["opacus"]) == set(grams["func"])
    assert "body.cells.0.edges.2.3.op.1" not in grams["hook"]  # the masked dil_conv's depthwise conv
    ref = sum(grams["func"].values())
    for b in ("hook", "opacus"):
        total = sum(grams[b].values())
        assert ((total - ref).abs().max() / ref.abs().max()).item() < 1e-10, b
    torch.testing.assert_close(ref, ref.T, rtol=0, atol=1e-12 * ref.abs().max().item())
    assert torch.linalg.eigvalsh(ref).min() > -1e-10 * ref.abs().max()
    # head Gram = n_way * Phi Phi^T (the reference's NNGP)
    feats = model.body.forward_features(x).detach()
    torch.testing.assert_close(grams["hook"]["head"], 5 * feats @ feats.T, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blocked_hook_gram_equals_the_one_shot_gram(monkeypatch, dtype):
    """The hook backend casts and reduces per-sample gradients a block of columns at a time (``GRAM_CHUNK``); the
    block size changes only the float64 summation order, never the kernel."""
    import metantk_zoo.nas.kernels as kernels

    model = _supernet_model().to(dtype)
    x = torch.randn(6, 3, 8, 8, dtype=dtype)
    whole = empirical_ntk(model, x, per_layer=True)
    monkeypatch.setattr(kernels, "GRAM_CHUNK", 5)  # every dense conv now goes block by block (and the head too)
    blocked = empirical_ntk(model, x, per_layer=True)
    assert set(blocked) == set(whole)
    # float64: only the summation order differs; float32: a block's GEMM may also round the fp32 per-sample
    # gradients differently (a different kernel shape), i.e. at the float32 epsilon, never more
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    for name, k in whole.items():
        assert k.dtype == torch.float64
        err = ((blocked[name] - k).abs().max() / k.abs().max()).item()
        assert err < tol, f"{name}: relative difference {err:.2e}"


def _dense_conv_model() -> nn.Module:
    """Dense convs of every shape the offset path must handle: 3x3 stride 2 on an odd size, dilation, 1x5/5x1
    with asymmetric padding, a 1x1 stride 2, a 2x2 without padding, and a conv with a bias."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, bias=False), nn.ReLU(),
        nn.Conv2d(6, 5, (1, 5), stride=(1, 2), padding=(0, 2), bias=False), nn.ReLU(),
        nn.Conv2d(5, 5, (5, 1), padding=(2, 0), bias=True), nn.ReLU(),
        nn.Conv2d(5, 4, 1, stride=2, bias=False), nn.ReLU(),
        nn.Conv2d(4, 4, 2, bias=False), nn.Flatten(), nn.LazyLinear(3),
    ).double()


@pytest.mark.parametrize("ratio", [0, 10**9])
@pytest.mark.parametrize("use_bias", [False, True])
def test_hook_dense_conv_paths_equal_torch_func(monkeypatch, ratio, use_bias):
    """Dense convs go by per-offset matmuls (ratio 0: all of them) or by one batch-folded grouped
    convolution-backward (huge ratio: all but the 1x1s); both equal the torch.func Gram layer by layer."""
    import metantk_zoo.nas.kernels as kernels

    model = _dense_conv_model()
    x = torch.randn(5, 3, 11, 11, dtype=torch.float64)
    model(x)  # materialise the lazy head
    monkeypatch.setattr(kernels, "OFFSET_PATH_RATIO", ratio)
    got = empirical_ntk(model, x, per_layer=True, use_bias=use_bias)
    ref = empirical_ntk(model, x, backend="func", per_layer=True, use_bias=use_bias)
    assert set(got) == set(ref) and len(ref) == 7
    for name, k in ref.items():
        err = ((got[name] - k).abs().max() / k.abs().max()).item()
        assert err < 1e-12, f"layer {name}: relative difference {err:.2e}"


def test_hook_takes_the_offset_path_for_wide_convs_on_small_maps(monkeypatch):
    """The path rule: a dense conv with out*in channels > OFFSET_PATH_RATIO x output pixels skips the grouped
    convolution-backward (observed through the ATen call); a narrow conv on a large map uses it."""
    import metantk_zoo.nas.kernels as kernels

    calls = []
    real = torch.ops.aten.convolution_backward

    class Spy:
        def __call__(self, *args):
            calls.append(args[9])  # groups
            return real(*args)

    monkeypatch.setattr(kernels.torch.ops.aten, "convolution_backward", Spy())
    wide = nn.Sequential(nn.Conv2d(64, 64, (1, 5), padding=(0, 2), bias=False)).double()  # 4096 > 64 * 16 pixels
    narrow = nn.Sequential(nn.Conv2d(4, 4, (1, 5), padding=(0, 2), bias=False)).double()  # 16 < 64 * 16 pixels
    empirical_ntk(wide, torch.randn(3, 64, 4, 4, dtype=torch.float64))
    assert calls == []
    empirical_ntk(narrow, torch.randn(3, 4, 4, 4, dtype=torch.float64))
    assert calls == [3]  # one grouped call, batch folded into the groups


def test_empirical_ntk_restores_requires_grad_and_rejects_bad_input():
    model = _mlp()
    model[0].weight.requires_grad_(False)
    empirical_ntk(model, torch.randn(3, 4, dtype=torch.float64))
    assert model[0].weight.requires_grad is False and model[2].weight.requires_grad is True
    with pytest.raises(KernelError, match="unknown NTK backend"):
        empirical_ntk(model, torch.randn(3, 4, dtype=torch.float64), backend="jax")
    with pytest.raises(KernelError, match="Conv2d and Linear"):
        empirical_ntk(nn.Sequential(nn.Bilinear(2, 2, 1)), torch.randn(3, 2))


def _meta_ntk_direct(theta, k, n_tasks, q, s, tau, lam):
    """§4.5 block by block with scipy's pinvh and expm, as the reference computes it."""
    theta, k = theta.numpy(), k.numpy()
    nq = n_tasks * q
    qs = [np.arange(i * q, (i + 1) * q) for i in range(n_tasks)]
    ss = [nq + np.arange(i * s, (i + 1) * s) for i in range(n_tasks)]
    a = []
    for i in range(n_tasks):
        kss = k[np.ix_(ss[i], ss[i])]
        t = scipy.linalg.pinvh(kss + lam * np.eye(s))
        if math.isfinite(tau):
            t = t @ (np.eye(s) - scipy.linalg.expm(-tau * kss))
        a.append(k[np.ix_(qs[i], ss[i])] @ t)
    phi = np.zeros((nq, nq))
    for i in range(n_tasks):
        for j in range(n_tasks):
            blk = (theta[np.ix_(qs[i], qs[j])] - a[i] @ theta[np.ix_(ss[i], qs[j])]
                   - theta[np.ix_(qs[i], ss[j])] @ a[j].T + a[i] @ theta[np.ix_(ss[i], ss[j])] @ a[j].T)
            phi[np.ix_(qs[i], qs[j])] = blk
    return torch.from_numpy(phi)


def _kernels(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(n, 40, generator=g, dtype=torch.float64)
    h = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return j @ j.T / 40, h @ h.T / 6  # theta, a head-like Gram


@pytest.mark.parametrize("kind", ["maml", "anil"])
@pytest.mark.parametrize("tau,lam", [(math.inf, 1e-3), (1.0, 1e-5), (0.3, 1e-3)])
def test_meta_ntk_matches_direct_implementation(kind, tau, lam):
    theta, head = _kernels(30)
    k = theta if kind == "maml" else head
    got = meta_ntk(theta, k, n_tasks=3, n_query=5, n_support=5, inner_lr_time=tau, reg_coef=lam)
    expected = _meta_ntk_direct(theta, k, 3, 5, 5, tau, lam)
    assert got.shape == (15, 15) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


def test_meta_ntk_limits():
    theta, _ = _kernels(12, seed=3)
    kw = dict(n_tasks=2, n_query=3, n_support=3, reg_coef=1e-3)
    # tau -> 0: no adaptation, the MetaNTK is the query block of theta
    torch.testing.assert_close(meta_ntk(theta, theta, inner_lr_time=1e-12, **kw), theta[:6, :6], rtol=1e-8, atol=1e-10)
    # tau -> inf: the finite-tau kernel converges to the tau = inf one
    torch.testing.assert_close(meta_ntk(theta, theta, inner_lr_time=1e4, **kw),
                               meta_ntk(theta, theta, inner_lr_time=math.inf, **kw), rtol=1e-8, atol=1e-10)
    # MAML, tau = inf, lambda -> 0: each diagonal block is the GP posterior covariance of the queries
    phi = meta_ntk(theta, theta, inner_lr_time=math.inf, **{**kw, "reg_coef": 0.0})
    q, s = slice(0, 3), slice(6, 9)
    post = theta[q, q] - theta[q, s] @ torch.linalg.solve(theta[s, s], theta[s, q])
    torch.testing.assert_close(phi[:3, :3], post, rtol=1e-8, atol=1e-10)
    with pytest.raises(KernelError, match=r"expected a \(12, 12\) kernel"):
        meta_ntk(theta[:10, :10], theta, inner_lr_time=1.0, **kw)


def test_condition_number_signed_ratio_and_nan_fallback():
    assert condition_number(torch.diag(torch.tensor([2.0, 5.0, 10.0]))) == pytest.approx(5.0)
    assert condition_number(torch.diag(torch.tensor([-1.0, 3.0]))) == pytest.approx(-3.0)  # signed, no abs
    assert condition_number(torch.full((3, 3), float("nan"))) == NAN_CONDITION
    with pytest.raises(KernelError, match="square"):
        condition_number(torch.ones(2, 3))


def test_ieee_fp32_restores_the_callers_tf32_setting():
    conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, mm.fp32_precision
    conv.fp32_precision = mm.fp32_precision = "tf32"
    try:
        with ieee_fp32():
            assert (conv.fp32_precision, mm.fp32_precision) == ("ieee", "ieee")
        assert (conv.fp32_precision, mm.fp32_precision) == ("tf32", "tf32")
        with pytest.raises(RuntimeError, match="boom"), ieee_fp32():
            raise RuntimeError("boom")
        assert conv.fp32_precision == "tf32"
    finally:
        conv.fp32_precision, mm.fp32_precision = before
