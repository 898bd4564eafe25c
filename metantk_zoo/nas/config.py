"""Search settings: :class:`SearchConfig`, the published presets and the method names.

Defaults are the reference's mini-ImageNet 5-cell run (``reference/method-facts.md`` §4.1,
``scripts/script_mini_5cell.sh``). MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..models.ops import DARTS_FEWSHOT

__all__ = ["METHODS", "CELLS", "PRESETS", "SearchConfig"]

METHODS = ("metantk", "tenas", "regions-only", "metantk-only", "random")
#: the two cell types of the supernet, in the order of the mask's first axis
CELLS = ("normal", "reduce")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of one search; defaults are the reference's mini-ImageNet 5-cell run (``scripts/script_mini_5cell.sh``).

    Attributes:
        method: ``metantk`` (the paper), ``tenas`` (NTK of the classifier output + regions), ``regions-only``,
            ``metantk-only`` or ``random``.
        kernel: ``maml`` (K = Theta) or ``anil`` (K = the head Gram).
        inner_lr_time: tau; values >= 1000 mean infinity, as the reference.
        reg_coef: lambda of the inner-loop ridge.
        repeats: score repeats per candidate (3).
        n_tasks, n_way, n_shot, n_query: the kernel's meta-batch (3 tasks, 5-way, 1 shot, 1 query per class).
        ntk_batch: images per kernel for the ``tenas`` baseline (30).
        channels, num_cells, resolution, num_classes: kernel network C (48), L (5/8), input size (32) and its
            classifier width (64 mini / 351 tiered; only the ``tenas`` NTK uses it).
        region_channels: thin-network C (1); region_patches, region_batches: 3 batches of 1000 patches.
        ops: candidate ops (the 7 of the few-shot DARTS space).
        protocol: ``shared`` computes the unpruned kernel once per round and repeat, on one meta-batch shared by the
            round's candidates; ``reference`` draws a new meta-batch and recomputes it for every candidate.
        shared_head: the candidate uses the unpruned network's random head (the reference draws a new one).
        init: ``default`` (PyTorch's default init, what the reference ran) or ``kaiming`` (the paper's text).
        episode_pool: draw episodes from a fixed pool of this many index-seeded episodes (1000); 0: fresh episodes.
        augment: TE-NAS augmentation of supports.
        precision: decimals of per-repeat scores and significant figures of sort keys (3).
        stale_group_origin: the edge pass compares against the network at its start (the reference's quirk).
    """

    method: str = "metantk"
    kernel: str = "maml"
    inner_lr_time: float = math.inf
    reg_coef: float = 1e-3
    repeats: int = 3
    n_tasks: int = 3
    n_way: int = 5
    n_shot: int = 1
    n_query: int = 1
    ntk_batch: int = 30
    channels: int = 48
    num_cells: int = 5
    resolution: int = 32
    num_classes: int = 64
    region_channels: int = 1
    region_patches: int = 1000
    region_batches: int = 3
    ops: tuple[str, ...] = DARTS_FEWSHOT[1:]
    protocol: str = "shared"
    shared_head: bool = False
    init: str = "default"
    episode_pool: int = 1000
    augment: bool = True
    precision: int = 3
    stale_group_origin: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.inner_lr_time >= 1000:
            object.__setattr__(self, "inner_lr_time", math.inf)  # prune_metantknas.py: tau >= 1000 -> inf
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        choices = {"method": METHODS, "kernel": ("maml", "anil"), "protocol": ("shared", "reference"),
                   "init": ("default", "kaiming")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; found {getattr(self, name)!r}")
        positive = ("repeats", "n_tasks", "n_way", "n_shot", "n_query", "ntk_batch", "channels", "resolution",
                    "num_classes", "region_channels", "region_patches", "region_batches")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, found {v!r}")
        if self.num_cells < 3:
            raise ConfigError(f"num_cells must be >= 3, found {self.num_cells}")
        if self.resolution < 3:
            raise ConfigError(f"resolution must be >= 3 (3x3 region patches), found {self.resolution}")
        if not self.inner_lr_time > 0 or not self.reg_coef >= 0:
            raise ConfigError(f"inner_lr_time must be > 0 and reg_coef >= 0, found {self.inner_lr_time}, "
                              f"{self.reg_coef}")
        if self.episode_pool < 0 or self.precision < 0:
            raise ConfigError("episode_pool and precision must be >= 0")
        if 0 < self.episode_pool < self.n_tasks:
            raise ConfigError(f"episode_pool ({self.episode_pool}) must be 0 or at least n_tasks ({self.n_tasks}): the "
                              f"tasks of a meta-batch are distinct episodes")
        bad = [op for op in self.ops if op not in DARTS_FEWSHOT[1:]]
        if bad or not self.ops or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"ops must be distinct names of {', '.join(DARTS_FEWSHOT[1:])}; found {list(self.ops)}")

    @property
    def space(self) -> tuple[str, ...]:
        return ("none", *self.ops)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ops"] = list(self.ops)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """Build from a dict (e.g. a saved ``config.json``); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown search config field(s) {unknown}; known: {', '.join(sorted(names))}")
        data = dict(data)
        if "ops" in data:
            data["ops"] = tuple(data["ops"])
        if isinstance(data.get("inner_lr_time"), str):
            data["inner_lr_time"] = float(data["inner_lr_time"])
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SearchConfig:
        """A named preset (:data:`PRESETS`) with field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown search preset {name!r}; known presets: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


#: The four published search scripts (§4.1) and a CPU-sized preset. The paper presets use the reference's protocol
#: (a fresh meta-batch and the unpruned kernel recomputed for every candidate and repeat), so that they reproduce the
#: paper's procedure by default; ``protocol="shared"`` (about twice as fast) is an option: see the README.
PRESETS: dict[str, SearchConfig] = {
    "mini5": SearchConfig(kernel="maml", inner_lr_time=math.inf, reg_coef=1e-3, num_cells=5, num_classes=64,
                          protocol="reference"),
    "mini8": SearchConfig(kernel="anil", inner_lr_time=1.0, reg_coef=1e-5, num_cells=8, num_classes=64,
                          protocol="reference"),
    "tiered5": SearchConfig(kernel="maml", inner_lr_time=math.inf, reg_coef=1e-3, num_cells=5, num_classes=351,
                            protocol="reference"),
    "tiered8": SearchConfig(kernel="anil", inner_lr_time=math.inf, reg_coef=1e-3, num_cells=8, num_classes=351,
                            protocol="reference"),
    # mini5's kernel settings on a CPU budget: 3 candidate ops (one parameter-free, one conv, one pool), C=4,
    # 3 cells, 8x8 inputs, 1 repeat, 1 batch of 100 patches: 104 candidates instead of 500.
    "tiny": SearchConfig(kernel="maml", inner_lr_time=math.inf, reg_coef=1e-3, channels=4, num_cells=3,
                         resolution=8, repeats=1, region_patches=100, region_batches=1,
                         ops=("skip_connect", "sep_conv_3x3", "max_pool_3x3BN")),
}
