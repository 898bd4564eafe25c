"""Empirical NTK, analytic MetaNTK and condition number: pure functions on tensors (CPU and CUDA).

* :func:`empirical_ntk` is the Gram matrix of per-sample gradients of a scalar output (the sum of the model's
  outputs per sample), over the weights of every executed non-normalisation layer (optionally their biases), as
  MetaNTK-NAS computes it (``reference/method-facts.md`` §4.4). Three interchangeable backends give the same
  float64 Gram: ``"hook"`` (default; one forward + backward with frozen weights, each layer's per-sample
  gradients built from its saved input and output gradient, folded into an N x N float64 accumulator and
  dropped), ``"opacus"`` (the paper's tool, per-sample gradients materialised for every parameter) and
  ``"func"`` (``torch.func.vmap(grad)``, the test oracle).
* :func:`meta_ntk` is the regularised analytic MetaNTK of §4.5 (MAML: ``k = theta``; ANIL: the head Gram).
* :func:`condition_number` is the reference's signed eigenvalue ratio with its NaN fallback.

All functions assume sample-independent models: GroupNorm (as the reference's kernel networks) or BatchNorm in
eval mode. BatchNorm in train mode couples samples, and per-sample gradients are then not Jacobian rows.
Convolutions run in IEEE fp32 (never TF32) on CUDA for the duration of a kernel computation.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..errors import KernelError

__all__ = [
    "NTK_BACKENDS",
    "NAN_CONDITION",
    "empirical_ntk",
    "meta_ntk",
    "condition_number",
    "ieee_fp32",
    "kernel_parameters",
]

NTK_BACKENDS = ("hook", "opacus", "func")
#: The reference replaces a NaN condition number by this value (``prune_metantknas.py``).
NAN_CONDITION = 100000.0

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Run CUDA convolutions and matmuls in IEEE fp32 (no TF32) inside the block; restore the caller's setting.

    Uses the ``fp32_precision`` API where torch has it (torch 2.9+, whose cuDNN convolutions default to TF32;
    mixing it with the legacy ``allow_tf32`` flags is an error), else the legacy flags.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        mm = torch.backends.cuda.matmul
        saved = conv.fp32_precision, mm.fp32_precision
        conv.fp32_precision, mm.fp32_precision = "ieee", "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, mm.fp32_precision = saved
        return
    saved_legacy = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy


def kernel_parameters(model: nn.Module, use_bias: bool = False) -> dict[str, nn.Parameter]:
    """The parameters that can enter the NTK: weights (and with ``use_bias`` biases) of non-norm modules."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, _NORM_TYPES):
            continue
        for pname in ("weight", "bias") if use_bias else ("weight",):
            p = m._parameters.get(pname)
            if isinstance(p, nn.Parameter):
                out[f"{name}.{pname}" if name else pname] = p
    return out


def empirical_ntk(
    model: nn.Module,
    x: torch.Tensor,
    *,
    backend: str = "hook",
    use_bias: bool = False,
    per_layer: bool = False,
    groups: int = 1,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Empirical NTK of the scalar output ``f(x) = model(x)[i].sum()``: ``Theta[i, j] = <df(x_i)/dW, df(x_j)/dW>``.

    Parameters: the ``weight`` (with ``use_bias`` also ``bias``) of every module that is not a normalisation
    layer and that takes part in the output (modules that are not executed, e.g. masked ops, contribute
    nothing), as the reference's ``params_types='w'``. Assumes samples do not interact (GroupNorm, or BatchNorm
    in eval mode); the model's mode is left as it is.

    Args:
        model: maps (N, ...) inputs to (N, ...) outputs; summed per sample to a scalar.
        x: inputs (N, ...), on the model's device and dtype.
        backend: ``"hook"`` (fast exact default), ``"opacus"`` (the paper's tool) or ``"func"`` (torch.func).
        use_bias: include biases of non-norm layers.
        per_layer: return ``{module_name: (N, N) Gram}`` instead of their sum.
        groups: G > 1 splits the batch into G consecutive blocks of N/G samples (e.g. G candidates' meta-batches
            stacked, :meth:`~metantk_zoo.nas.supernet.SuperNet.set_candidates`) and returns only the G diagonal
            blocks of the Gram, (G, N/G, N/G): the hook backend folds each block on its own (G x fewer Gram FLOPs);
            ``opacus`` and ``func`` take the blocks of the full Gram.

    Returns:
        (N, N) float64 Gram on ``x.device`` (or a dict of them); (G, N/G, N/G) with ``groups`` G > 1.

    Raises:
        KernelError: unknown backend, a weighted layer the hook backend cannot handle, an empty parameter set, or a
            batch that ``groups`` does not divide.
    """
    if backend not in NTK_BACKENDS:
        raise KernelError(f"unknown NTK backend {backend!r}; expected one of {', '.join(NTK_BACKENDS)}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise KernelError(f"expected a batch of inputs (N, ...), found shape {tuple(x.shape)}")
    if groups < 1 or x.shape[0] % groups:
        raise KernelError(f"groups={groups} must be >= 1 and divide the batch of {x.shape[0]} samples")
    with ieee_fp32():
        if backend == "hook":
            grams = _ntk_hook(model, x, use_bias, groups)
        else:
            grams = {"opacus": _ntk_opacus, "func": _ntk_func}[backend](model, x, use_bias)
            if groups > 1:
                grams = {k: _diagonal_blocks(g, groups) for k, g in grams.items()}
    if not grams:
        raise KernelError("no weight of a non-normalisation layer takes part in the output; the NTK is undefined")
    if per_layer:
        return grams
    return torch.stack(list(grams.values())).sum(0)


# ------------------------------------------------------------------------------------------------- hook Gram
def _diagonal_blocks(gram: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, N) -> its ``groups`` diagonal blocks (G, N/G, N/G)."""
    n = gram.shape[0] // groups
    return torch.stack([gram[i * n:(i + 1) * n, i * n:(i + 1) * n] for i in range(groups)])


def _ntk_hook(model: nn.Module, x: torch.Tensor, use_bias: bool, groups: int = 1) -> dict[str, torch.Tensor]:
    names = {m: name for name, m in model.named_modules()}
    params = kernel_parameters(model, use_bias)
    owners = {name.rsplit(".", 1)[0] if "." in name else "" for name in params}
    for name in owners:
        m = model.get_submodule(name)
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            raise KernelError(f"the hook NTK backend supports Conv2d and Linear layers only; {name!r} is a "
                              f"{type(m).__name__} (use backend='opacus' or 'func')")
    grams: dict[str, torch.Tensor] = {}
    ran: set[str] = set()

    def on_forward(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not output.requires_grad:
            return
        a = inputs[0].detach()
        name = names[module]
        if name in ran:  # a shared layer's per-sample gradient is the sum over its uses: not a sum of Grams
            raise KernelError(f"the hook NTK backend needs each layer to run once per forward; {name!r} ran twice "
                              f"(shared weights: use backend='opacus' or 'func')")
        ran.add(name)

        def on_grad(g: torch.Tensor) -> None:
            g = g.detach()
            if isinstance(module, nn.Linear):
                grams[name] = _linear_gram(module, a, g, use_bias, groups)
            else:
                grams[name] = _conv_gram(module, a, g, use_bias, groups)

        output.register_hook(on_grad)

    handles = [m.register_forward_hook(on_forward) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = model(xg)
            if not out.requires_grad:
                return {}
            out.sum().backward(inputs=[xg])
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return {name: g for name, g in grams.items() if name in owners}


#: columns of per-sample gradients cast to float64 at a time: the cast and the GEMM stay in cache (2.4x faster on
#: a 2-core CPU for the 5-cell supernet's widest layers than casting a layer's (N, P) block at once)
GRAM_CHUNK = 8192


def _gram64(blocks: Iterable[torch.Tensor], groups: int = 1) -> torch.Tensor:
    """Float64 Gram ``sum_b b @ b.T`` of column blocks (N, P_b) of per-sample gradients: each block is cast and
    reduced on its own, so the float64 copy stays in cache and no (N, P) float64 tensor is ever allocated. With
    ``groups`` G > 1 only the G diagonal (N/G, N/G) blocks are formed: (G, N/G, N/G)."""
    gram = None
    for block in blocks:
        block = block.double()
        if groups > 1:
            block = block.reshape(groups, -1, block.shape[-1])  # (G, N/G, P_b)
            gram = torch.bmm(block, block.transpose(1, 2)) if gram is None else gram.baddbmm_(
                block, block.transpose(1, 2))
        else:
            gram = block @ block.T if gram is None else gram.addmm_(block, block.T)
    return gram


def _outer_gram(v: torch.Tensor, groups: int) -> torch.Tensor:
    """``v v^T`` of float64 rows (N, D), or its G diagonal blocks (G, N/G, N/G)."""
    if groups == 1:
        return v @ v.T
    v = v.reshape(groups, -1, v.shape[-1])
    return torch.bmm(v, v.transpose(1, 2))


def _chunks(gw: torch.Tensor) -> Iterable[torch.Tensor]:
    """(N, P) per-sample gradients -> column blocks of at most ``GRAM_CHUNK``."""
    return gw.split(GRAM_CHUNK, dim=1)


def _conv1x1_blocks(g: torch.Tensor, cols: torch.Tensor) -> Iterator[torch.Tensor]:
    """Per-sample 1x1-conv gradients ``g_n @ cols_n.T`` ((N, O, L) x (N, K, L)), a block of output channels at a time
    (N, block*K): each block is born, cast and reduced while in cache, and no (N, O*K) tensor is ever allocated
    (fresh large allocations cost page faults on every call)."""
    n, o, _ = g.shape
    block = max(1, GRAM_CHUNK // cols.shape[1])
    cols_t = cols.transpose(1, 2)  # (N, L, K)
    for start in range(0, o, block):
        yield torch.bmm(g[:, start:start + block], cols_t).reshape(n, -1)


#: a dense (groups=1) k x k conv takes the per-offset matmul path when out*in channels exceed this many times its
#: output pixels: there (e.g. 192 channels at 8x8) the batch-folded grouped convolution-backward is 2-2.5x slower
#: on a 2-core CPU, while at 48-96 channels and 16x16-32x32 it is as fast or faster (``scripts/bench_search.py``)
OFFSET_PATH_RATIO = 64


def _conv_offset_blocks(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> Iterator[torch.Tensor]:
    """Per-sample gradients of a dense (groups=1) conv, one kernel offset (i, j) at a time: the weight slice
    ``W[:, :, i, j]`` acts as a 1x1 conv on the input shifted by the offset, so its per-sample gradient is
    ``g_n @ shifted_n.T`` ((N, O, L) x (N, I, L)). The blocks are the columns of the per-sample gradients in another
    order, which the Gram does not see. a: (N, I, H, W) input, g: (N, O, Ho, Wo) output gradient."""
    n, c_in = a.shape[:2]
    o, ho, wo = g.shape[1:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    if ph or pw:
        a = torch.nn.functional.pad(a, (pw, pw, ph, ph))
    g = g.reshape(n, o, ho * wo)
    for i in range(kh):
        for j in range(kw):
            shifted = a[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            yield from _conv1x1_blocks(g, shifted.reshape(n, c_in, ho * wo))  # a view for 1x1 stride-1 convs


def _linear_gram(module: nn.Linear, a: torch.Tensor, g: torch.Tensor, use_bias: bool, groups: int = 1) -> torch.Tensor:
    n = a.shape[0]
    if a.dim() == 2:
        a64, g64 = a.double(), g.double()
        gg = _outer_gram(g64, groups)
        gram = _outer_gram(a64, groups) * gg  # (N, N): per-sample grads are outer products g_i a_i^T
        if use_bias and module.bias is not None:
            gram = gram + gg
        return gram
    a, g = a.reshape(n, -1, a.shape[-1]), g.reshape(n, -1, g.shape[-1])  # (N, L, in), (N, L, out)
    gram = _gram64(_chunks(torch.einsum("nlo,nli->noi", g, a).reshape(n, -1)), groups)
    if use_bias and module.bias is not None:
        gram = gram + _outer_gram(g.sum(1).double(), groups)
    return gram


def _conv_gram(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, use_bias: bool, groups: int = 1) -> torch.Tensor:
    n = a.shape[0]
    if module.padding_mode != "zeros":
        raise KernelError(f"hook NTK backend: padding_mode {module.padding_mode!r} is not supported")
    o, out_pixels = g.shape[1], g.shape[2] * g.shape[3]
    one_by_one = module.kernel_size == (1, 1) and module.padding == (0, 0) and module.dilation == (1, 1)
    if module.groups == 1 and (one_by_one or module.in_channels * o > OFFSET_PATH_RATIO * out_pixels):
        gram = _gram64(_conv_offset_blocks(module, a, g), groups)
    else:
        # one convolution-backward with the batch folded into the groups gives every per-sample weight gradient
        c_in, h, w = a.shape[1:]
        weight = module.weight.detach().repeat(n, 1, 1, 1)  # (N*O, I/groups, kh, kw)
        _, gw, _ = torch.ops.aten.convolution_backward(
            g.reshape(1, n * o, *g.shape[2:]),
            a.reshape(1, n * c_in, h, w),
            weight,
            None,
            module.stride,
            module.padding,
            module.dilation,
            False,
            [0, 0],
            module.groups * n,
            [False, True, False],
        )
        gram = _gram64(_chunks(gw.reshape(n, -1)), groups)
    if use_bias and module.bias is not None:
        gram = gram + _outer_gram(g.sum((2, 3)).double(), groups)
    return gram


# --------------------------------------------------------------------------------------------------- opacus
def _ntk_opacus(model: nn.Module, x: torch.Tensor, use_bias: bool) -> dict[str, torch.Tensor]:
    try:
        from opacus import GradSampleModule
    except ImportError as e:  # pragma: no cover - opacus is a dependency
        raise KernelError("the opacus NTK backend needs opacus (pip install opacus)") from e
    params = kernel_parameters(model, use_bias)
    flags = {p: p.requires_grad for p in model.parameters()}
    old_grads = {p: p.grad for p in model.parameters()}
    gsm = None
    try:
        for p in flags:
            p.requires_grad_(True)
            p.grad = None
        try:
            gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        except (ValueError, NotImplementedError) as e:  # opacus' validators: unsupported module or configuration
            raise KernelError(f"opacus cannot wrap this model: {' '.join(str(e).split())[:200]}") from e
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            out = gsm(x.detach())
            out.sum().backward()
        grams: dict[str, torch.Tensor] = {}
        for name, p in params.items():
            gs = getattr(p, "grad_sample", None)
            if gs is None:
                continue
            gs = gs.reshape(gs.shape[0], -1).double()  # (N, P)
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            gram = gs @ gs.T
            grams[owner] = grams[owner] + gram if owner in grams else gram
        return grams
    finally:
        if gsm is not None:
            gsm._close()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = old_grads[p]
            if hasattr(p, "grad_sample"):
                p.grad_sample = None


# ----------------------------------------------------------------------------------------------- torch.func
def _ntk_func(model: nn.Module, x: torch.Tensor, use_bias: bool) -> dict[str, torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    params = kernel_parameters(model, use_bias)
    rest = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    buffers = dict(model.named_buffers())

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, ({**rest, **p}, buffers), (xi.unsqueeze(0),)).sum()

    detached = {k: v.detach() for k, v in params.items()}
    with torch.enable_grad():
        per_sample = vmap(grad(f), in_dims=(None, 0))(detached, x.detach())
    grams: dict[str, torch.Tensor] = {}
    for name, gs in per_sample.items():
        gs = gs.reshape(gs.shape[0], -1).double()
        if not torch.any(gs):
            continue  # a parameter that does not take part (e.g. a masked op) is not in the Gram
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        gram = gs @ gs.T
        grams[owner] = grams[owner] + gram if owner in grams else gram
    return grams


# -------------------------------------------------------------------------------------------------- MetaNTK
def meta_ntk(
    theta: torch.Tensor,
    k: torch.Tensor,
    *,
    n_tasks: int,
    n_query: int,
    n_support: int,
    inner_lr_time: float = math.inf,
    reg_coef: float = 1e-3,
) -> torch.Tensor:
    """The analytic MetaNTK of MetaNTK-NAS (method-facts §4.5), in float64.

    Samples are ordered queries first, then supports, each task-major:
    ``[Q_1, ..., Q_T, S_1, ..., S_T]``. Per task ``i``: ``T_i = (K_SiSi + reg_coef I)^+ (I - exp(-tau K_SiSi))``
    (``(K_SiSi + reg_coef I)^+`` for ``tau = inf``), ``A_i = K_QiSi T_i``, and
    ``Phi = P Theta P^T`` with ``P = [I | -blockdiag(A_1, ..., A_T)]``.

    Args:
        theta: (T*(q+s), T*(q+s)) NTK of the network.
        k: kernel of the inner loop, same shape: ``theta`` for MAML, the head Gram for ANIL.
        n_tasks: T; n_query: queries per task q; n_support: supports per task s.
        inner_lr_time: tau, the inner-loop learning rate times steps; ``math.inf`` for the converged limit.
        reg_coef: lambda, the ridge regulariser of the inner loop.

    Returns:
        (T*q, T*q) float64 MetaNTK.

    Raises:
        KernelError: shapes that do not fit the meta-batch, or negative tau / lambda.
    """
    nq, ns = n_tasks * n_query, n_tasks * n_support
    n = nq + ns
    for name, m in (("theta", theta), ("k", k)):
        if m.dim() != 2 or tuple(m.shape) != (n, n):
            raise KernelError(f"{name}: expected a ({n}, {n}) kernel for {n_tasks} tasks x ({n_query} queries + "
                              f"{n_support} supports), found shape {tuple(m.shape)}")
    if not inner_lr_time > 0 or reg_coef < 0:
        raise KernelError(f"expected inner_lr_time > 0 and reg_coef >= 0, found {inner_lr_time} and {reg_coef}")
    theta = theta.double()
    k = k.double()
    p = torch.zeros(nq, n, dtype=torch.float64, device=theta.device)  # (T*q, T*(q+s))
    p[:, :nq] = torch.eye(nq, dtype=torch.float64, device=theta.device)
    eye = torch.eye(n_support, dtype=torch.float64, device=theta.device)
    for i in range(n_tasks):
        q = slice(i * n_query, (i + 1) * n_query)
        s = slice(nq + i * n_support, nq + (i + 1) * n_support)
        k_spt_spt = k[s, s]
        t = torch.linalg.pinv(k_spt_spt + reg_coef * eye, hermitian=True)
        if math.isfinite(inner_lr_time):
            t = t @ (eye - torch.linalg.matrix_exp(-inner_lr_time * k_spt_spt))
        p[q, s] = -(k[q, s] @ t)  # -A_i
    return p @ theta @ p.T


def condition_number(kernel: torch.Tensor) -> float:
    """Largest over smallest eigenvalue (signed, no clipping) of a symmetric kernel, as the reference.

    The kernel is symmetrised and taken in float64. A NaN ratio (or a non-finite kernel) gives
    :data:`NAN_CONDITION` (100000), the reference's fallback; a zero smallest eigenvalue gives ``inf``.
    """
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
        raise KernelError(f"expected a square kernel, found shape {tuple(kernel.shape)}")
    kernel = kernel.double()
    if not torch.isfinite(kernel).all():
        return NAN_CONDITION
    ev = torch.linalg.eigvalsh((kernel + kernel.T) / 2)  # ascending
    cond = (ev[-1] / ev[0]).item()
    return NAN_CONDITION if math.isnan(cond) else cond

