"""Gradient-based meta-learning: MAML, FO-MAML, HF-MAML, ANIL and FO-B-MAML on any timm backbone.

The algorithms are pure functions of a model and one episode ``(x_spt, y_spt, x_qry, y_qry)``: each returns the
query loss after adaptation and the meta-gradient of that loss with respect to the model's parameters. The inner
loop is functional (:func:`torch.func.functional_call` over a dict of parameters), so the module itself is never
modified by adaptation; only the outer optimiser writes it.

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
  momentum step, clipped to a plain step below ``clip``), as the paper recommends.

BatchNorm follows the MAML convention: batch statistics in the inner loop, the outer loop and at test time (the
module is put in ``train()`` mode by the algorithms; running statistics are updated but never used). Heads are
``n_way``-way and meta-learned; episode labels are ``0..n_way-1``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from ..train.loop import TrainingMethod, TrainResult, register_method, run_epochs
from ..utils.progress import progress

__all__ = [
    "METHODS",
    "PRESETS",
    "SNGDM_OUTER_LR",
    "MetaConfig",
    "MetaStep",
    "NormalizedSGD",
    "adapt",
    "head_names",
    "meta_gradient",
    "meta_presets",
    "meta_step",
    "adapted_logits",
]

logger = logging.getLogger(__name__)

METHODS = ("maml", "fomaml", "hfmaml", "anil", "fobmaml")

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MetaConfig:
    """Settings of episodic meta-training.

    Defaults are MAML's mini-ImageNet 5-way 1-shot settings (Finn et al. 2017, §5.2 and their code): Conv4 with 32
    filters, inner lr 0.01, 5 inner steps in training and 10 at test, 4 tasks per meta-batch (2 for 5-shot),
    15 queries per class, Adam with outer lr 1e-3. ANIL (Raghu et al. 2020) keeps the same settings.

    Attributes:
        method: one of :data:`METHODS`.
        fd_step: finite-difference radius in parameter space (``hfmaml``, ``fobmaml``).
        fd_scheme: ``"symmetric"`` or ``"forward"`` (``fobmaml``; ``hfmaml`` is symmetric as in Fallah et al.).
        outer: ``"adam"`` or ``"sngdm"`` (normalised momentum, :class:`NormalizedSGD`); ``None`` picks
            ``sngdm`` for ``fobmaml`` and ``adam`` otherwise.
        clip: threshold of the clipped-normalised step (``sngdm``): below it the step is ``outer_lr / clip * m``.
        meta_steps: outer steps in all; ``steps_per_epoch`` of them form one epoch (one checkpoint).
        val_episodes: episodes of the validation split scored after each epoch (0: none).
    """

    method: str = "maml"
    n_way: int = 5
    n_shot: int = 1
    n_query: int = 15
    inner_lr: float = 0.01
    inner_steps: int = 5
    inner_steps_test: int = 10
    meta_batch: int = 4
    outer: str | None = None
    outer_lr: float = 1e-3
    momentum: float = 0.9
    clip: float = 1.0
    fd_step: float = 1e-3
    fd_scheme: str = "symmetric"
    meta_steps: int = 60000
    steps_per_epoch: int = 500
    val_episodes: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (self.fd_scheme in ("symmetric", "forward"), f"fd_scheme must be symmetric|forward, got {self.fd_scheme!r}"),
            (self.outer in (None, "adam", "sngdm"), f"outer must be adam|sngdm, got {self.outer!r}"),
            (self.n_way >= 2, f"n_way must be >= 2, got {self.n_way}"),
            (self.n_shot >= 1 and self.n_query >= 1, f"n_shot and n_query must be >= 1, got {self.n_shot}, {self.n_query}"),
            (self.inner_steps >= 1 and self.inner_steps_test >= 1, "inner_steps and inner_steps_test must be >= 1"),
            (self.inner_lr > 0 and self.outer_lr > 0, "inner_lr and outer_lr must be > 0"),
            (self.meta_batch >= 1 and self.meta_steps >= 1 and self.steps_per_epoch >= 1,
             "meta_batch, meta_steps and steps_per_epoch must be >= 1"),
            (self.fd_step > 0 and self.clip > 0 and 0 <= self.momentum < 1, "fd_step and clip > 0, 0 <= momentum < 1"),
            (self.val_episodes >= 0, "val_episodes must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"MetaConfig: {msg}")

    @property
    def outer_optimizer(self) -> str:
        return self.outer or ("sngdm" if self.method == "fobmaml" else "adam")

    @property
    def epochs(self) -> int:
        return math.ceil(self.meta_steps / self.steps_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: preset -> MetaConfig overrides. ``maml-mini-*`` / ``anil-mini-*`` are the published settings; ``*-demo`` is a
#: short CPU run on the embedded benchmark (84px images are not needed to check that learning happens).
PRESETS: dict[str, dict[str, Any]] = {
    "mini-1shot": dict(n_shot=1, meta_batch=4),
    "mini-5shot": dict(n_shot=5, meta_batch=2),
    "demo": dict(n_way=5, n_shot=5, n_query=5, inner_steps=1, inner_steps_test=5, inner_lr=0.1, meta_batch=2,
                 meta_steps=60, steps_per_epoch=20, outer_lr=3e-3, val_episodes=0),
}

#: preset -> outer lr of the normalised outer step (``sngdm``, FO-B-MAML's default), used when no ``outer_lr`` is
#: given: SNGDM's lr is the *length* of the whole step, Adam's the size of each coordinate's, so Adam's lr is far too
#: small for it (FO-B-MAML at 3e-3 stayed at chance on the demo after 1500 steps). ``demo``: 0.3, measured (21.4% ->
#: 33.8% 5-way 5-shot after 1500 steps, ``scripts/demo_meta.py``). ``mini-*``: 0.1, our choice, not measured: about
#: the length of an Adam 1e-3 step over Conv4's 32.9k weights (1e-3 x sqrt(32901) = 0.18), rounded down.
SNGDM_OUTER_LR: dict[str, float] = {"mini-1shot": 0.1, "mini-5shot": 0.1, "demo": 0.3}


def meta_presets() -> tuple[str, ...]:
    return tuple(PRESETS)


def make_meta_config(method: str, preset: str = "mini-1shot", **overrides: Any) -> MetaConfig:
    """``MetaConfig(method, **PRESETS[preset], **overrides)``; :class:`ConfigError` for an unknown preset.

    With the normalised outer step (``sngdm``: FO-B-MAML's default, or ``outer="sngdm"``) and no ``outer_lr`` in
    ``overrides``, the outer lr is :data:`SNGDM_OUTER_LR` of the preset instead of the preset's Adam lr.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown meta-training preset {preset!r}; known: {', '.join(PRESETS)}")
    cfg = MetaConfig(method=method, **{**PRESETS[preset], **overrides})
    if cfg.outer_optimizer == "sngdm" and "outer_lr" not in overrides:
        cfg = replace(cfg, outer_lr=SNGDM_OUTER_LR[preset])
    return cfg


__all__.append("make_meta_config")


# ------------------------------------------------------------------------------------------------ functional core
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
    return list(torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph))


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
            p = {**p, **{n: p[n] - lr * gi for n, gi in zip(names, g)}}
        else:
            p = {**p, **{n: (p[n] - lr * gi).detach().requires_grad_(True) for n, gi in zip(names, g)}}
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
        g = torch.autograd.grad(loss, list(p.values()))
    return loss.detach(), logits.detach(), list(g)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    if logits.dim() != 2 or y.dtype not in (torch.int64, torch.int32):
        return float("nan")  # regression problems (tests)
    return float((logits.argmax(1) == y).float().mean())


def _norm(ts: Iterable[torch.Tensor]) -> torch.Tensor:
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
        grads = {n: (gi if gi is not None else torch.zeros_like(params[n])) for n, gi in zip(params, g)}
        return MetaStep(float(loss.detach()), _accuracy(logits.detach(), y_qry), grads)
    if m == "anil":
        return _anil(model, params, x_spt, y_spt, x_qry, y_qry, a, steps, loss_fn)

    traj: list[Params] = []
    p = adapt(model, params, x_spt, y_spt, lr=a, steps=steps, names=names, loss_fn=loss_fn,
              trajectory=traj if m == "hfmaml" else None)
    loss, logits, gq = _query_grad(model, p, x_qry, y_qry, loss_fn)
    gq = dict(zip(p, gq))
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
    gn = float(_norm(gvec.values()))
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
    vn = float(_norm(v.values()))
    if vn == 0.0:
        return {n: torch.zeros_like(t) for n, t in v.items()}
    d = fd_step / vn
    out = []
    for s in (d, -d):
        ws = {n: (t + s * v[n] if n in v else t).detach().requires_grad_(n in v) for n, t in w.items()}
        with torch.enable_grad():
            out.append(_grads(_loss(model, ws, x, y, loss_fn), ws, list(v), False))
    return {n: (gp - gm) / (2 * d) for n, gp, gm in zip(v, *out)}


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
            h = {k: t - a * gi for (k, t), gi in zip(h.items(), gl)}
        logits = functional_call(head, h, (f_qry,))
        loss = loss_fn(logits, y_qry)
        g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    grads = {n: (gi if gi is not None else torch.zeros_like(params[n])) for n, gi in zip(params, g)}
    return MetaStep(float(loss.detach()), _accuracy(logits.detach(), y_qry), grads)


# ------------------------------------------------------------------------------------------------ outer loop
class NormalizedSGD(torch.optim.Optimizer):
    """Normalised SGD with momentum (SNGDM), clipped: ``w -= lr * m / max(||m||, clip)`` with one global norm.

    ``m <- momentum * m + (1 - momentum) * g``. Above ``clip`` the step has length ``lr`` (normalised step); below,
    it is the plain momentum step ``lr / clip * m`` (clipped-gradient form). Chayti and Jaggi
    (https://arxiv.org/abs/2409.03682) recommend normalised or clipped outer steps for MAML objectives, whose
    smoothness grows with the meta-gradient norm.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, clip: float = 1.0):
        if lr <= 0 or clip <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"NormalizedSGD: need lr > 0, clip > 0, 0 <= momentum < 1 (got {lr}, {clip}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, clip=clip))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            ms = []
            for p in ps:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                buf = st["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad, alpha=1 - group["momentum"])
                ms.append(buf)
            if not ms:
                continue
            scale = group["lr"] / max(float(_norm(ms)), group["clip"])
            for p, buf in zip(ps, ms):
                p.add_(buf, alpha=-scale)
        return loss


def make_outer_optimizer(model: nn.Module, cfg: MetaConfig) -> torch.optim.Optimizer:
    """Adam (MAML's outer optimiser) or :class:`NormalizedSGD`, as ``cfg.outer_optimizer`` says."""
    if cfg.outer_optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    return NormalizedSGD(model.parameters(), lr=cfg.outer_lr, momentum=cfg.momentum, clip=cfg.clip)


__all__.append("make_outer_optimizer")

Episode = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


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


__all__.append("adapted_accuracies")


# ------------------------------------------------------------------------------------------------ trainer
#: ``episodes(i) -> (x_spt, y_spt, x_qry, y_qry)``: episode number ``i`` as tensors (a pure function of ``i``).
EpisodeFn = Callable[[int], Episode]


def train_meta(
    model: nn.Module,
    data: EpisodeFn,
    cfg: MetaConfig,
    *,
    run_dir: str | os.PathLike,
    architecture: str = "?",
    resume: bool = False,
    device: torch.device | str | None = None,
    extra_config: dict[str, Any] | None = None,
    val_data: EpisodeFn | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Meta-train ``model`` with ``cfg.method``, checkpointing every ``cfg.steps_per_epoch`` meta-steps.

    Meta-step ``t`` (0-based) uses episodes ``t * meta_batch ... t * meta_batch + meta_batch - 1`` of ``data``, so
    the data order is a pure function of the step and a resumed run sees the same episodes. The run directory,
    checkpoints (weights, outer-optimiser state, RNG), ``resume``, ``metrics.jsonl`` and the plot are
    :func:`metantk_zoo.train.run_epochs`'.

    Args:
        model: a timm-style classifier with an ``n_way``-way head (``get_classifier``, ``forward_head``).
        data: meta-train episodes (:data:`EpisodeFn`).
        cfg: method and settings.
        run_dir: the run directory (:mod:`metantk_zoo.rundir`).
        architecture: the model's architecture name, stored in checkpoints and weights.
        resume: continue from the run's last checkpoint.
        device: defaults to CPU.
        extra_config: more entries for ``config.json``.
        val_data: validation episodes; with ``cfg.val_episodes > 0`` each epoch reports ``val_acc``, the mean
            query accuracy after ``inner_steps_test`` adaptation steps on episodes ``0 .. val_episodes-1``.

    Returns:
        The :class:`~metantk_zoo.train.TrainResult`.

    Raises:
        ConfigError: a head that is not ``n_way``-way, a non-empty run directory without ``resume``, a resumed run
            with another config, or a diverged run.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if getattr(model, "num_classes", None) != cfg.n_way:
        raise ConfigError(f"meta-training {cfg.n_way}-way episodes needs a {cfg.n_way}-way head; the model has "
                          f"{getattr(model, 'num_classes', '?')} outputs (create it with num_classes={cfg.n_way})")
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = make_outer_optimizer(model, cfg)

    def batch(t: int) -> list[Episode]:
        return [tuple(x.to(device) for x in data(t * cfg.meta_batch + i)) for i in range(cfg.meta_batch)]

    def epoch_fn(epoch: int) -> dict[str, float]:
        first, last = (epoch - 1) * cfg.steps_per_epoch, min(epoch * cfg.steps_per_epoch, cfg.meta_steps)
        start = time.perf_counter()
        stats = [meta_step(model, batch(t), optimizer, cfg)
                 for t in progress(range(first, last), desc=f"epoch {epoch}", unit="step")]
        loss = sum(s["loss"] for s in stats) / len(stats)
        if not math.isfinite(loss):
            raise ConfigError(f"meta-training diverged at epoch {epoch} (query loss {loss}); lower --outer-lr or "
                              f"--inner-lr")
        out = {"loss": loss, "acc": sum(s["acc"] for s in stats) / len(stats), "meta_steps": last,
               "sec_per_step": (time.perf_counter() - start) / len(stats)}
        if val_data is not None and cfg.val_episodes:
            accs = adapted_accuracies(model, (val_data(i) for i in range(cfg.val_episodes)), method=cfg.method,
                                      lr=cfg.inner_lr, steps=cfg.inner_steps_test, device=device)
            out["val_acc"] = float(accs.mean())
        return out

    config = {"method": cfg.method, "config": cfg.to_dict(), **(extra_config or {})}
    return run_epochs(
        model=model, optimizer=optimizer, epoch_fn=epoch_fn, epochs=cfg.epochs, run_dir=run_dir, config=config,
        architecture=architecture, resume=resume,
        data_state_fn=lambda e: {"order": "episode = step * meta_batch + task", "seed": cfg.seed,
                                 "next_step": min(e * cfg.steps_per_epoch, cfg.meta_steps)},
        on_epoch_end=on_epoch_end,
        plot_keys=(("loss", "query loss after adaptation"), ("acc", "query accuracy after adaptation")),
    )


__all__ += ["EpisodeFn", "train_meta"]

_DESCRIPTIONS = {
    "maml": "MAML: second-order meta-gradient through the inner loop (Finn et al. 2017)",
    "fomaml": "first-order MAML: inner-loop Jacobian dropped",
    "hfmaml": "Hessian-free MAML: Hessian-vector products by finite differences (Fallah et al. 2020)",
    "anil": "ANIL: only the head adapts in the inner loop (Raghu et al. 2020)",
    "fobmaml": "FO-B-MAML: finite-difference meta-gradient, normalised outer step (Chayti & Jaggi 2024)",
}

def _config_from_cli(method: str, preset: str, num_cells: int | None, overrides: dict[str, Any]) -> MetaConfig:
    """``metantk-zoo train --method M``'s generic flags mapped onto :class:`MetaConfig` fields.

    ``--lr`` is the outer lr, ``--batch-size`` the meta-batch (tasks per outer step), ``--epochs`` sets
    ``meta_steps = epochs * steps_per_epoch``; ``--workers`` does not apply (episodes are read in-process).
    """
    o = dict(overrides)
    o.pop("num_workers", None)
    for flag, name in (("lr", "outer_lr"), ("batch_size", "meta_batch")):
        if flag in o:
            o[name] = o.pop(flag)
    if "epochs" in o:
        spe = o.get("steps_per_epoch", PRESETS.get(preset, {}).get("steps_per_epoch", MetaConfig.steps_per_epoch))
        o["meta_steps"] = int(o.pop("epochs")) * int(spe)
    known = {f.name for f in fields(MetaConfig)} - {"method"}
    unknown = sorted(set(o) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for --method {method}; MetaConfig fields: "
                          f"{', '.join(sorted(known))}")
    return make_meta_config(method, preset, **o)


for _m in METHODS:
    register_method(TrainingMethod(
        name=_m,
        config_cls=MetaConfig,
        presets=tuple(PRESETS),
        make_config=lambda preset, num_cells, overrides, _m=_m: _config_from_cli(_m, preset, num_cells, overrides),
        train=train_meta,
        data_kind="episodes",
        description=_DESCRIPTIONS[_m],
    ))
