"""The outer optimisers of meta-training: Adam (MAML's) or normalised SGD with momentum (SNGDM, FO-B-MAML's).

SNGDM: Chayti and Jaggi, https://arxiv.org/abs/2409.03682.
"""

from __future__ import annotations

import torch
from torch import nn

from .algorithms import global_norm
from .config import MetaConfig

__all__ = ["NormalizedSGD", "make_outer_optimizer"]


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
            scale = group["lr"] / max(float(global_norm(ms)), group["clip"])
            for p, buf in zip(ps, ms, strict=True):
                p.add_(buf, alpha=-scale)
        return loss


def make_outer_optimizer(model: nn.Module, cfg: MetaConfig) -> torch.optim.Optimizer:
    """Adam (MAML's outer optimiser) or :class:`NormalizedSGD`, as ``cfg.outer_optimizer`` says."""
    if cfg.outer_optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    return NormalizedSGD(model.parameters(), lr=cfg.outer_lr, momentum=cfg.momentum, clip=cfg.clip)
