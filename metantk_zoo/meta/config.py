"""Meta-training settings: :class:`MetaConfig`, the method names, the presets and their outer learning rates.

Defaults are MAML's mini-ImageNet 5-way 1-shot settings (Finn et al. 2017, https://arxiv.org/abs/1703.03400).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import ConfigError

__all__ = ["METHODS", "PRESETS", "SNGDM_OUTER_LR", "MetaConfig", "meta_presets", "make_meta_config"]

METHODS = ("maml", "fomaml", "hfmaml", "anil", "fobmaml")


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
            (self.fd_scheme in ("symmetric", "forward"),
             f"fd_scheme must be symmetric|forward, got {self.fd_scheme!r}"),
            (self.outer in (None, "adam", "sngdm"), f"outer must be adam|sngdm, got {self.outer!r}"),
            (self.n_way >= 2, f"n_way must be >= 2, got {self.n_way}"),
            (self.n_shot >= 1 and self.n_query >= 1,
             f"n_shot and n_query must be >= 1, got {self.n_shot}, {self.n_query}"),
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
    """The names of :data:`PRESETS`."""
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
