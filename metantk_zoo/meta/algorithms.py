"""Meta-gradients as pure functions: MAML, FO-MAML, HF-MAML, ANIL and FO-B-MAML on any timm backbone.

The algorithms are pure functions of a model and one episode ``(x_spt, y_spt, x_qry, y_qry)``: each returns the
query loss after adaptation and the meta-gradient of that loss with respect to the model's parameters. The inner
loop is functional (:func:`torch.func.functional_call` over a dict of parameters), so the module itself is never
modified by adaptation; only the outer optimiser writes it (:func:`meta_step`).

Methods (``MetaConfig.method``):

* ``maml`` -- Finn et al. 2017 (https://arxiv.org/abs/1703.03400), the MetaNTK-NAS paper's Algorithm 1
  (https://arxiv.org/abs/2203.09137): ``inner_steps`` SGD steps on the support loss, differentiated exactly
  (second order, ``create_graph=True``) through the whole inner loop.
* ``fomaml`` -- the same with the Jacobian of the inner loop replaced by the identity: the meta-gradient is the
  query gradient at the adapted parameters (Finn et al. §5.2).
* ``hfmaml`` -- Hessian-free MAML (Fallah, Mokhtari, Ozdaglar, AISTATS 2020, https://arxiv.org/abs/1908.10400):
  the exact MAML chain ``prod_k (I - a H_k) g`` is swept backwards over the stored inner iterates, every
  Hessian-vector product ``H_k v`` replaced by the symmetric difference of support gradients
  ``[grad f(w_k + d v) - grad f(w_k - d v)] / (2 d)``. We scale the step to a fixed radius in parameter space,
  ``d = fd_step / ||v||`` (Fallah et al. also tie their ``delta`` to the inverse gradient norm). No second-order
  autograd; memory holds one copy of the parameters per inner step, not the activations.
* ``anil`` -- Raghu et al. 2020 (https://arxiv.org/abs/1909.09157): only the linear head adapts in the inner loop
  (second order through the head; the body's features are computed once per episode), the outer step updates
  everything. It equals ``maml`` with ``adapt=head`` (tested).
* ``fobmaml`` -- FO-B-MAML (Chayti and Jaggi, https://arxiv.org/abs/2409.03682). **Reading.** Only the abstract
  of the paper could be retrieved here (arXiv / OpenReview abstract pages): the meta-gradient is "the derivative
  of the solution of a perturbed optimization problem", estimated by a *forward* or a *symmetric* finite
  difference, with a normalised or clipped outer step (SNGDM) because the smoothness of the MAML objective grows
  with the meta-gradient norm. We read the inner solution as the output ``U(w)`` of the inner loop (for one step,
  ``U(w) = argmin_u <grad f_s(w), u> + ||u - w||^2 / (2a)``) and the perturbation as moving its anchor along the
  outer gradient ``g = grad f_q(U(w))``: the meta-gradient is ``d/dt U(w + t g)`` at ``t = 0``, estimated by
  ``[U(w + d g) - U(w)] / d`` (forward) or ``[U(w + d g) - U(w - d g)] / (2d)`` (symmetric), again with
  ``d = fd_step / ||g||``. For one inner step the Jacobian of ``U`` is symmetric and this is exactly the MAML
  meta-gradient as ``d -> 0`` (tested); for several steps it is ``J g`` rather than ``J^T g`` (equal up to the
  commutators of the inner Hessians). It needs two (forward) or three (symmetric) inner loops without any graph,
  so its memory stays flat in the number of inner steps. The outer update is :class:`NormalizedSGD` (normalised
  momentum step, clipped to a plain step below ``clip``; :mod:`.optim`), as the paper recommends.

BatchNorm follows the MAML convention: batch statistics in the inner loop, the outer loop and at test time (the
module is put in ``train()`` mode by the algorithms; running statistics are updated but never used). Heads are
``n_way``-way and meta-learned; episode labels are ``0..n_way-1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from .config import MetaConfig

__all__ = [
    "Params",
    "LossFn",
    "Episode",
    "MetaStep",
    "adapt",
    "head_names",
    "meta_gradient",
    "meta_step",
    "adapted_logits",
    "adapted_accuracies",
    "global_norm",
]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def head_names(model: nn.Module) -> list[str]:
    """Names (in ``model.named_parameters()``) of the linear head's parameters (timm ``get_classifier``)."""
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no classifier parameters to adapt (num_classes=0?)")
    return names


def _params(model: nn.Module) -> Params:
    return dict(model.named_parameters())


def _loss(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    return loss_fn(functional_call(model, params, (x,), strict=False), y)


def _grads(loss: torch.Tensor, params: Params, names: Sequence[str], create_graph: bool) -> list[torch.Tensor]:
    """Gradients of ``loss`` for ``names``; zeros for a parameter the loss does not use."""
    g = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return [gi if gi is not None else torch.zeros_like(params[n]) for n, gi in zip(names, g, strict=True)]


def adapt(
    model: nn.Module,
    params: Params,
    x_spt: torch.Tensor,
    y_spt: torch.Tensor,
    *,
    lr: float,
    steps: int,
    names: Sequence[str] | None = None,
    create_graph: bool = False,
    loss_fn: LossFn = F.cross_entropy,
    trajectory: list[Params] | None = None,
) -> Params:
    """The inner loop: ``steps`` SGD steps of ``lr`` on the support loss, on the parameters ``names`` only.

    Args:
        params: starting parameters (name -> tensor); those not in ``names`` are used as they are.
        x_spt: (N*K, C, H, W) support images; y_spt: (N*K,) labels.
        names: parameters to adapt (default: all of ``params``).
        create_graph: keep the graph of every step (second-order MAML); otherwise the result is detached.
        trajectory: when given, receives the (detached) iterates ``w_0 .. w_{steps-1}``.

    Returns:
        The adapted parameters.
    """
    names = list(params) if names is None else list(names)
    p = dict(params)
    if not create_graph:
        p = {n: (t.detach().requires_grad_(True) if n in names else t.detach()) for n, t in p.items()}
    for _ in range(steps):
        if trajectory is not None:
            trajectory.append({n: t.detach() for n, t in p.items()})
        with torch.enable_grad():
            g = _grads(_loss(model, p, x_spt, y_spt, loss_fn), p, names, create_graph)
        if create_graph:
            p = {**p, **{n: p[n] - lr * gi for n, gi in zip(names, g, strict=True)}}
        else:
            p = {**p, **{n: (p[n] - lr * gi).detach().requires_grad_(True) for n, gi in zip(names, g, strict=True)}}
    return p


@dataclass
class MetaStep:
    """Result of one episode: query loss and accuracy after adaptation, and the meta-gradient (name -> tensor)."""

    loss: float
    acc: float
    grads: dict[str, torch.Tensor]


def _query_grad(model, p: Params, x_qry, y_qry, loss_fn) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    p = {n: t.detach().requires_grad_(True) for n, t in p.items()}
    with torch.enable_grad():
        logits = functional_call(model, p, (x_qry,), strict=False)
        loss = loss_fn(logits, y_qry)
        g = torch.autograd.grad(loss, list(p.values()), allow_unused=True)
    return loss.detach(), logits.detach(), [gi if gi is not None else torch.zeros_like(t) for gi, t in
                                            zip(g, p.values(), strict=True)]


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    if logits.dim() != 2 or y.dtype not in (torch.int64, torch.int32):
        return float("nan")  # regression problems (tests)
    return float((logits.argmax(1) == y).float().mean())


def global_norm(ts: Iterable[torch.Tensor]) -> torch.Tensor:
    """The Euclidean norm of several tensors taken as one vector (summed in float64)."""
    return torch.sqrt(sum((t.double() ** 2).sum() for t in ts)).to(torch.get_default_dtype())


def meta_gradient(
    model: nn.Module,
    x_spt: torch.Tensor,
    y_spt: torch.Tensor,
    x_qry: torch.Tensor,
    y_qry: torch.Tensor,
    cfg: MetaConfig,
    *,
    loss_fn: LossFn = F.cross_entropy,
    adapt_names: Sequence[str] | None = None,
) -> MetaStep:
    """Query loss after adaptation and its meta-gradient with respect to every parameter, for ``cfg.method``.

    Pure: reads the model's parameters, never writes them or their ``.grad``.

    Args:
        x_spt: (N*K, ...) support inputs; y_spt: (N*K,) targets; x_qry, y_qry: the query set.
        cfg: method, inner lr and steps, finite-difference step and scheme.
        loss_fn: ``(outputs, targets) -> scalar``; cross-entropy for classification, any loss for tests.
        adapt_names: restrict the inner loop of ``maml`` / ``fomaml`` / ``hfmaml`` / ``fobmaml`` to these
            parameters (``anil`` always adapts the head).

    Returns:
        A :class:`MetaStep` whose ``grads`` has one entry per parameter of ``model`` (zeros where unused).
    """
    params = _params(model)
    names = list(params) if adapt_names is None else list(adapt_names)
    a, steps, m = cfg.inner_lr, cfg.inner_steps, cfg.method
    if m == "maml":
        with torch.enable_grad():
            p = adapt(model, params, x_spt, y_spt, lr=a, steps=steps, names=names, create_graph=True, loss_fn=loss_fn)
            logits = functional_call(model, p, (x_qry,), strict=False)
            loss = loss_fn(logits, y_qry)
            g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        grads = {n: (gi if gi is not None else torch.zeros_like(params[n])) for n, gi in zip(params, g, strict=True)}
        return MetaStep(float(loss.detach()), _accuracy(logits.detach(), y_qry), grads)
    if m == "anil":
        return _anil(model, params, x_spt, y_spt, x_qry, y_qry, a, steps, loss_fn)

    traj: list[Params] = []
    p = adapt(model, params, x_spt, y_spt, lr=a, steps=steps, names=names, loss_fn=loss_fn,
              trajectory=traj if m == "hfmaml" else None)
    loss, logits, gq = _query_grad(model, p, x_qry, y_qry, loss_fn)
    gq = dict(zip(p, gq, strict=True))
    if m == "fomaml":
        return MetaStep(float(loss), _accuracy(logits, y_qry), gq)
    if m == "hfmaml":
        v = {n: gq[n] for n in names}
        for w in reversed(traj):  # v <- (I - a H(w_k)) v, k = N-1 .. 0
            hv = _fd_hvp(model, w, v, x_spt, y_spt, cfg.fd_step, loss_fn)
            v = {n: v[n] - a * hv[n] for n in names}
        return MetaStep(float(loss), _accuracy(logits, y_qry), {**gq, **v})
    # fobmaml: d/dt U(w + t g)
    gvec = {n: gq[n] for n in names}
    gn = float(global_norm(gvec.values()))
    if gn == 0.0:
        return MetaStep(float(loss), _accuracy(logits, y_qry), gq)
    d = cfg.fd_step / gn

    def shifted(t: float) -> Params:
        start = {n: (w.detach() + t * gvec[n] if n in gvec else w.detach()) for n, w in params.items()}
        return adapt(model, start, x_spt, y_spt, lr=a, steps=steps, names=names, loss_fn=loss_fn)

    plus = shifted(d)
    if cfg.fd_scheme == "forward":
        minus, denom = p, d
    else:
        minus, denom = shifted(-d), 2 * d
    est = {n: (plus[n].detach() - minus[n].detach()) / denom for n in names}
    return MetaStep(float(loss), _accuracy(logits, y_qry), {**gq, **est})


def _fd_hvp(model, w: Params, v: Params, x, y, fd_step: float, loss_fn) -> Params:
    """Symmetric finite difference of support gradients along ``v``: ``H(w) v`` without second-order autograd."""
    vn = float(global_norm(v.values()))
    if vn == 0.0:
        return {n: torch.zeros_like(t) for n, t in v.items()}
    d = fd_step / vn
    out = []
    for s in (d, -d):
        ws = {n: (t + s * v[n] if n in v else t).detach().requires_grad_(n in v) for n, t in w.items()}
        with torch.enable_grad():
            out.append(_grads(_loss(model, ws, x, y, loss_fn), ws, list(v), False))
    return {n: (gp - gm) / (2 * d) for n, gp, gm in zip(v, *out, strict=True)}


def _anil(model, params, x_spt, y_spt, x_qry, y_qry, a, steps, loss_fn) -> MetaStep:
    hn = head_names(model)
    head = model.get_classifier()
    prefix = {n: n.rsplit(".", 1)[-1] for n in hn}  # model name -> head-local name
    with torch.enable_grad():
        f_spt = model.forward_head(model.forward_features(x_spt), pre_logits=True)  # (N*K, D)
        f_qry = model.forward_head(model.forward_features(x_qry), pre_logits=True)  # (N*Q, D)
        h = {prefix[n]: params[n] for n in hn}
        for _ in range(steps):
            gl = torch.autograd.grad(loss_fn(functional_call(head, h, (f_spt,)), y_spt), list(h.values()),
                                     create_graph=True)
            h = {k: t - a * gi for (k, t), gi in zip(h.items(), gl, strict=True)}
        logits = functional_call(head, h, (f_qry,))
        loss = loss_fn(logits, y_qry)
        g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    grads = {n: (gi if gi is not None else torch.zeros_like(params[n])) for n, gi in zip(params, g, strict=True)}
    return MetaStep(float(loss.detach()), _accuracy(logits.detach(), y_qry), grads)


def meta_step(
    model: nn.Module,
    episodes: Sequence[Episode],
    optimizer: torch.optim.Optimizer,
    cfg: MetaConfig,
    *,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, float]:
    """One outer step: average the meta-gradients of a meta-batch of episodes and apply ``optimizer``.

    Returns:
        ``{"loss", "acc"}``: mean query loss and accuracy after adaptation (before the update).
    """
    if not episodes:
        raise ConfigError("meta_step needs at least one episode")
    model.train()  # MAML convention: batch statistics everywhere
    total: dict[str, torch.Tensor] = {}
    losses, accs = [], []
    for x_spt, y_spt, x_qry, y_qry in episodes:
        r = meta_gradient(model, x_spt, y_spt, x_qry, y_qry, cfg, loss_fn=loss_fn)
        for n, g in r.grads.items():
            total[n] = total[n] + g if n in total else g.detach().clone()
        losses.append(r.loss)
        accs.append(r.acc)
    optimizer.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        p.grad = total[n] / len(episodes)
    optimizer.step()
    return {"loss": sum(losses) / len(losses), "acc": sum(accs) / len(accs)}


def adapted_logits(
    model: nn.Module,
    x_spt: torch.Tensor,
    y_spt: torch.Tensor,
    x_qry: torch.Tensor,
    *,
    method: str,
    lr: float,
    steps: int,
) -> torch.Tensor:
    """Classify the query set with the algorithm's own adaptation (the meta-trained model as its classifier).

    ``anil`` adapts the head on frozen features; every other method adapts all parameters (first-order SGD
    steps, as at MAML test time). Batch statistics, as in training.

    Returns:
        (N*Q, n_way) logits.
    """
    model.train()
    params = _params(model)
    names = head_names(model) if method == "anil" else list(params)
    p = adapt(model, params, x_spt, y_spt, lr=lr, steps=steps, names=names)
    with torch.no_grad():
        return functional_call(model, p, (x_qry,), strict=False)


def adapted_accuracies(
    model: nn.Module,
    episodes: Iterable[Episode],
    *,
    method: str,
    lr: float,
    steps: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-episode query accuracy of :func:`adapted_logits` (the algorithm's own adaptation as the classifier).

    Args:
        episodes: ``(x_spt, y_spt, x_qry, y_qry)`` tuples; the model's head must be ``n_way``-way.

    Returns:
        (n_tasks,) accuracies in [0, 1].

    Raises:
        ConfigError: the head does not have one output per episode class.
    """
    accs = []
    for x_spt, y_spt, x_qry, y_qry in episodes:
        if device is not None:
            x_spt, y_spt, x_qry, y_qry = (t.to(device) for t in (x_spt, y_spt, x_qry, y_qry))
        n_way = int(y_spt.max()) + 1
        if getattr(model, "num_classes", n_way) != n_way:
            raise ConfigError(f"adaptation needs an {n_way}-way head (one output per episode class), the model has "
                              f"{model.num_classes}; meta-train with --n-way {n_way} or evaluate with a linear probe")
        logits = adapted_logits(model, x_spt, y_spt, x_qry, method=method, lr=lr, steps=steps)  # (N*Q, n_way)
        accs.append((logits.argmax(1) == y_qry).float().mean())
    return torch.stack(accs)
