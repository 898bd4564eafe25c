"""MetaNTK-NAS pruning search: score every live op by MetaNTK trainability and linear regions, prune, repeat.

Follows ``reference/method-facts.md`` §4-6. Each round scores every live (cell type, edge, op) of a supernet by

* the relative change of the condition number of the analytic MetaNTK when the op is removed (kernel network:
  C=48, 5 or 8 cells, GroupNorm16, a fresh random ``Linear(576, n_way)`` head, 3 tasks x 5 ways x (1 query +
  1 support) at 32x32), and
* the relative change of the number of linear regions of the thin proxy network on 3 x 1000 random 3x3 patches,

each averaged over ``repeats`` (per-repeat values rounded to 3 decimals), ranks both (ΔC descending, ΔR ascending,
3-significant-figure sort keys, dense ranks on exact ties), prunes the op with the lowest rank sum on every edge,
and finally keeps the two best input edges of every node. Baselines: ``tenas`` (the NTK of the classifier output
on plain batches, §4.7), ``regions-only``, ``metantk-only`` and ``random`` (§6.4).

Fast by exact means: the hook Gram (:func:`metantk_zoo.kernels.empirical_ntk`), one network per round whose
candidates are masks (the reference rebuilds and copies a network per candidate; weights are identical either
way), the unpruned network's kernel computed once per round and repeat (``protocol="shared"``, the default; the
reference's draws are ``protocol="reference"``), patches built as tensors and regions counted with ``unique``.

Every random draw comes from a generator derived from ``(seed, stage, candidate, repeat)``, so results do not
depend on the order in which candidates are scored: a resumed or multi-process (``torchrun``) search gives the
same genotype as an uninterrupted single-process one. Search takes image tensors through a
:class:`SearchSource`, never a dataset name.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137; TE-NAS: https://arxiv.org/abs/2102.11535.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..data.constants import CIFAR_MEAN, CIFAR_STD
from ..errors import CheckpointError, ConfigError, DatasetError
from ..genotype import Genotype
from ..models.ops import DARTS_FEWSHOT
from ..utils.distributed import current, gather_objects
from ..utils.io import read_json, write_json
from ..utils.progress import progress
from .inputs import kernel_inputs, normalize_uint8, region_patches, resize_uint8, tenas_augment
from .kernels import NAN_CONDITION, condition_number, empirical_ntk, meta_ntk
from .regions import count_linear_regions
from .supernet import (
    EDGES,
    NODE_EDGES,
    SuperNet,
    genotype_from_alive,
    genotype_from_weights,
    initial_alive,
    reset_parameters,
)

__all__ = [
    "METHODS",
    "PRESETS",
    "SearchConfig",
    "SearchSource",
    "TensorSource",
    "SearchResult",
    "search",
    "rank_candidates",
    "round_sig",
]

logger = logging.getLogger(__name__)

METHODS = ("metantk", "tenas", "regions-only", "metantk-only", "random")
_CELLS = ("normal", "reduce")
_CHECKPOINT_VERSION = 1


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


#: The four published search scripts (§4.1) and a CPU-sized preset.
PRESETS: dict[str, SearchConfig] = {
    "mini5": SearchConfig(kernel="maml", inner_lr_time=math.inf, reg_coef=1e-3, num_cells=5, num_classes=64),
    "mini8": SearchConfig(kernel="anil", inner_lr_time=1.0, reg_coef=1e-5, num_cells=8, num_classes=64),
    "tiered5": SearchConfig(kernel="maml", inner_lr_time=math.inf, reg_coef=1e-3, num_cells=5, num_classes=351),
    "tiered8": SearchConfig(kernel="anil", inner_lr_time=math.inf, reg_coef=1e-3, num_cells=8, num_classes=351),
    # mini5's kernel settings on a CPU budget: 3 candidate ops (one parameter-free, one conv, one pool), C=4,
    # 3 cells, 8x8 inputs, 1 repeat, 1 batch of 100 patches: 104 candidates instead of 500.
    "tiny": SearchConfig(kernel="maml", inner_lr_time=math.inf, reg_coef=1e-3, channels=4, num_cells=3,
                         resolution=8, repeats=1, region_patches=100, region_batches=1,
                         ops=("skip_connect", "sep_conv_3x3", "max_pool_3x3BN")),
}


# ---------------------------------------------------------------------------------------------------- data
class SearchSource(Protocol):
    """What the search reads: integer labels of every image and a loader of uint8 images by index."""

    labels: torch.Tensor  # (M,) int64

    def load(self, indices: Sequence[int]) -> torch.Tensor:  # uint8 (n, 3, H, W)
        ...


@dataclass
class TensorSource:
    """A :class:`SearchSource` over in-memory tensors: uint8 images (M, 3, H, W) and labels (M,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise DatasetError(f"expected uint8 images (M, 3, H, W), found {self.images.dtype} "
                               f"{tuple(self.images.shape)}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"expected {self.images.shape[0]} labels, found shape {tuple(self.labels.shape)}")

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.int64)]


#: the search keeps its resized images (uint8 at the search resolution) up to this size: 118 MB for
#: mini-ImageNet's 38,400 training images at 32x32; a larger source is resized on every draw instead
RESIZED_CACHE_BYTES = 2**30


class _Data:
    """Episode and image sampling over a source, recording which images were seen (for the fingerprint)."""

    def __init__(self, source: SearchSource, cfg: SearchConfig, device: torch.device):
        self.source, self.cfg, self.device = source, cfg, device
        labels = torch.as_tensor(source.labels, dtype=torch.int64).cpu()
        self.labels = labels
        need = cfg.n_shot + cfg.n_query
        classes = []
        for c in torch.unique(labels).tolist():
            idx = torch.nonzero(labels == c).flatten()
            if len(idx) >= need:
                classes.append(idx)
        if cfg.method in ("metantk", "metantk-only") and len(classes) < cfg.n_way:
            raise DatasetError(f"the meta-batch needs {cfg.n_way} classes with at least {need} images each "
                               f"({cfg.n_shot} shot + {cfg.n_query} query); the data has {len(classes)} such "
                               f"classes (of {len(torch.unique(labels))}); lower --n-way or use more data")
        if len(labels) == 0:
            raise DatasetError("the search data has no images")
        self.classes = classes
        self.seen: set[int] = set()
        self._resized: torch.Tensor | None = None  # (M, 3, r, r) uint8, filled as images are first drawn
        self._have_resized = torch.zeros(len(labels), dtype=torch.bool)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.tolist()
        self.seen.update(idx)
        images = self.source.load(idx)
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise DatasetError(f"the search source must load uint8 images (n, 3, H, W); found {images.dtype} "
                               f"{tuple(images.shape)}")
        return images.to(self.device)

    def load_resized(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, r, r) images at the search resolution. Each image is resized once per search and kept
        (up to :data:`RESIZED_CACHE_BYTES`); an image's resize does not depend on its batch, so no value changes."""
        r, m = self.cfg.resolution, len(self.labels)
        if m * 3 * r * r > RESIZED_CACHE_BYTES:
            return resize_uint8(self.load(indices), r)
        if self._resized is None:
            self._resized = torch.zeros(m, 3, r, r, dtype=torch.uint8, device=self.device)
        missing = torch.unique(indices[~self._have_resized[indices]])
        if len(missing):
            self._resized[missing.to(self.device)] = resize_uint8(self.load(missing), r)
            self._have_resized[missing] = True
        return self._resized[indices.to(self.device)]

    def meta_batch(self, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        qry, spt = [], []
        for _ in range(cfg.n_tasks):
            eg = _rng("episode", int(torch.randint(cfg.episode_pool, (1,), generator=g))) if cfg.episode_pool else g
            chosen = torch.randperm(len(self.classes), generator=eg)[: cfg.n_way]
            for c in chosen.tolist():
                members = self.classes[c][torch.randperm(len(self.classes[c]), generator=eg)]
                spt.append(members[: cfg.n_shot])
                qry.append(members[cfg.n_shot : cfg.n_shot + cfg.n_query])
        x_qry, x_spt = self.load(torch.cat(qry)), self.load(torch.cat(spt))  # (T*W*Q, 3, H, W), (T*W*S, ...)
        return kernel_inputs(x_qry, x_spt, g, cfg.resolution, cfg.augment)

    def plain_batch(self, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        idx = _draw(len(self.labels), cfg.ntk_batch, g)
        x = self.load_resized(idx)
        if cfg.augment:
            x = tenas_augment(x, g)
        return normalize_uint8(x, CIFAR_MEAN, CIFAR_STD)

    def patch_batches(self, g: torch.Generator) -> list[torch.Tensor]:
        cfg = self.cfg
        idx = _draw(len(self.labels), cfg.region_batches * cfg.region_patches, g)
        x = region_patches(self.load_resized(idx), g, cfg.resolution)  # (B*P, 1, 3, 3)
        return list(x.split(cfg.region_patches))

    def fingerprint(self, seen: Sequence[int]) -> str:
        h = hashlib.sha256()
        h.update(self.labels.numpy().tobytes())
        seen = sorted(seen)
        h.update(torch.tensor(seen, dtype=torch.int64).numpy().tobytes())
        for i in range(0, len(seen), 1024):
            h.update(self.source.load(seen[i : i + 1024]).cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def _draw(m: int, n: int, g: torch.Generator) -> torch.Tensor:
    """n indices of range(m): a shuffled pass (without replacement), repeated when m < n."""
    reps = -(-n // m)
    return torch.cat([torch.randperm(m, generator=g) for _ in range(reps)])[:n]


def _rng(*keys: Any) -> torch.Generator:
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# ------------------------------------------------------------------------------------------------- ranking
def round_sig(x: float, sig: int = 3) -> float:
    """Round to ``sig`` significant figures (the reference's ``round_to`` sort keys); 0 and non-finite unchanged."""
    if x == 0 or not math.isfinite(x):
        return x
    p = math.floor(math.log10(abs(x))) + 1
    return round(x * 10.0 ** (-p), sig) * 10.0**p


def _dense_ranks(order: list[int], values: Sequence[float]) -> dict[int, int]:
    ranks, prev, r = {}, None, -1
    for i in order:
        if prev is None or values[i] != values[prev]:  # ties on the exact (unrounded) means
            r += 1
        ranks[i] = r
        prev = i
    return ranks


def rank_candidates(d_cond: Sequence[float], d_regions: Sequence[float], precision: int = 3):
    """The reference's rank-sum (§6.2) over candidates given in iteration order.

    ΔC sorted descending and ΔR ascending by their ``precision``-significant-figure values (stable), dense ranks
    on exact equality of the unrounded values, total = rank_C + rank_R, candidates ordered by total (stable over
    the ΔC order). Non-finite scores sort as the least prunable.

    Returns:
        (order, rank_cond, rank_regions, total): ``order`` lists candidate indices, most prunable first.
    """
    n = len(d_cond)
    c_key = [round_sig(v, precision) if math.isfinite(v) else -math.inf for v in d_cond]
    r_key = [round_sig(v, precision) if math.isfinite(v) else math.inf for v in d_regions]
    order_c = sorted(range(n), key=lambda i: c_key[i], reverse=True)
    order_r = sorted(range(n), key=lambda i: r_key[i])
    rank_c, rank_r = _dense_ranks(order_c, d_cond), _dense_ranks(order_r, d_regions)
    total = {i: rank_c[i] + rank_r[i] for i in range(n)}
    order = sorted(order_c, key=lambda i: total[i])
    return order, [rank_c[i] for i in range(n)], [rank_r[i] for i in range(n)], [total[i] for i in range(n)]


# ------------------------------------------------------------------------------------------------- results
@dataclass
class SearchResult:
    """The outcome of :func:`search`.

    Attributes:
        genotype: the searched cell pair.
        config: the resolved :class:`SearchConfig`.
        seed: the run seed.
        rounds: one dict per stage (pruning rounds, then edge groups): ``stage``, ``name`` and ``candidates``,
            each candidate with its per-repeat and mean ΔC/ΔR, ranks, total and whether it was pruned.
        wall_time: seconds spent scoring (summed over resumed sessions).
        device: where the kernels ran.
        versions: package versions.
        data_fingerprint: sha256 over the labels and every image the search loaded.
    """

    genotype: Genotype
    config: SearchConfig
    seed: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    data_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "genotype": self.genotype.to_dict(),
            "genotype_darts": self.genotype.to_darts(),
            "config": self.config.to_dict(),
            "seed": self.seed,
            "wall_time": self.wall_time,
            "device": self.device,
            "versions": self.versions,
            "data_fingerprint": self.data_fingerprint,
            "rounds": self.rounds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        return cls(genotype=Genotype.from_dict(d["genotype"]), config=SearchConfig.from_dict(d["config"]),
                   seed=d["seed"], rounds=d.get("rounds", []), wall_time=d.get("wall_time", 0.0),
                   device=d.get("device", "cpu"), versions=d.get("versions", {}),
                   data_fingerprint=d.get("data_fingerprint", ""))


# -------------------------------------------------------------------------------------------------- search
class _WithHead(nn.Module):
    def __init__(self, body: SuperNet, head: nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.forward_features(x))


class _Scorer:
    """Scores candidates of one stage; everything random is derived from (seed, stage, candidate, repeat)."""

    def __init__(self, cfg: SearchConfig, seed: int, data: _Data, device: torch.device, backend: str,
                 share_inputs: bool = True):
        self.cfg, self.seed, self.data, self.device, self.backend = cfg, seed, data, device, backend
        self.use_kernel = cfg.method in ("metantk", "tenas", "metantk-only")
        self.use_regions = cfg.method in ("metantk", "tenas", "regions-only")
        self.kernel_net = None
        if self.use_kernel:
            self.kernel_net = SuperNet.kernel_net(cfg.channels, cfg.num_cells, cfg.num_classes, space=cfg.space,
                                                  share_inputs=share_inputs)
            self.kernel_net.to(device).train()
        self.thin = SuperNet.thin_net(cfg.region_channels, space=cfg.space).to(device).train()
        self.thin.share_inputs = share_inputs
        self._origin: dict[tuple, tuple[float, bool]] = {}

    def start_stage(self, stage: str) -> None:
        """Re-draw the kernel network's weights (the reference builds a new one per round)."""
        self._origin = {}
        if self.kernel_net is not None:  # the edge pass keeps one network for all its groups, as the reference
            init_key = "group-pass" if stage.startswith("group") else stage
            reset_parameters(self.kernel_net, _rng(self.seed, "kernel-init", init_key), self.cfg.init)

    def _head(self, g: torch.Generator) -> nn.Linear:
        head = nn.Linear(self.kernel_net.num_features, self.cfg.n_way)
        return reset_parameters(head, g, "default").to(self.device)  # nn.Linear's default init, as the reference

    def _cond(self, alive: torch.Tensor, x: torch.Tensor, head_g: torch.Generator | None) -> tuple[float, bool]:
        """Condition number of the (Meta)NTK of the kernel network with mask ``alive``; flag if non-finite."""
        cfg, net = self.cfg, self.kernel_net
        net.set_alive(alive.to(self.device))
        if cfg.method == "tenas":
            theta = empirical_ntk(net, x, backend=self.backend)
            finite = bool(torch.isfinite(theta).all())
            return condition_number(theta), not finite
        head = self._head(head_g)
        grams = empirical_ntk(_WithHead(net, head), x, backend=self.backend, per_layer=True)
        theta = torch.stack(list(grams.values())).sum(0)
        nngp = grams["head"]
        if not torch.isfinite(theta).all():
            return NAN_CONDITION, True
        if torch.allclose(theta, nngp):  # the body contributes nothing: the reference's fallback
            return NAN_CONDITION, False
        k = theta if cfg.kernel == "maml" else nngp
        n_q, n_s = cfg.n_way * cfg.n_query, cfg.n_way * cfg.n_shot
        phi = meta_ntk(theta, k, n_tasks=cfg.n_tasks, n_query=n_q, n_support=n_s,
                       inner_lr_time=cfg.inner_lr_time, reg_coef=cfg.reg_coef)
        return condition_number(phi), not bool(torch.isfinite(phi).all())

    def _kernel_input(self, g: torch.Generator) -> torch.Tensor:
        return self.data.plain_batch(g) if self.cfg.method == "tenas" else self.data.meta_batch(g)

    def score(self, stage: str, key: tuple[int, int, int], alive: torch.Tensor, origin: torch.Tensor,
              thin_origin: torch.Tensor) -> dict[str, Any]:
        """Per-repeat condition numbers and region counts of one candidate (``alive`` = without the op)."""
        cfg, seed = self.cfg, self.seed
        row: dict[str, Any] = {"cond_origin": [], "cond": [], "regions_origin": [], "regions": [], "nonfinite": False}
        if self.use_regions:
            reset_parameters(self.thin, _rng(seed, "thin-init", stage, key), self.cfg.init)
        for r in range(cfg.repeats):
            if self.use_kernel:
                if cfg.protocol == "shared":
                    if r not in self._origin:
                        x = self._kernel_input(_rng(seed, "kernel-batch", stage, r))
                        self._origin[r] = (x, *self._cond(origin, x, _rng(seed, "head", stage, r)))
                    x, c_o, bad_o = self._origin[r]
                    head_key = ("head", stage, r) if cfg.shared_head else ("head", stage, r, key)
                else:
                    x = self._kernel_input(_rng(seed, "kernel-batch", stage, key, r))
                    c_o, bad_o = self._cond(origin, x, _rng(seed, "head", stage, key, r, "origin"))
                    head_key = ("head", stage, key, r, "origin") if cfg.shared_head else ("head", stage, key, r)
                c_c, bad_c = self._cond(alive, x, _rng(seed, *head_key))
                row["cond_origin"].append(c_o)
                row["cond"].append(c_c)
                row["nonfinite"] = row["nonfinite"] or bad_o or bad_c
            if self.use_regions:
                batches = self.data.patch_batches(_rng(seed, "patches", stage, key, r))
                self.thin.set_alive(thin_origin.to(self.device))
                row["regions_origin"].append(count_linear_regions(self.thin, batches))
                self.thin.set_alive(alive.to(self.device))
                row["regions"].append(count_linear_regions(self.thin, batches))
        return row


def _delta(origin: float, cand: float, precision: int) -> float:
    with_nan = (origin - cand) / origin if origin != 0 else math.nan
    return round(with_nan, precision) if math.isfinite(with_nan) else math.nan


def _stages(alive: torch.Tensor) -> list[tuple]:
    """The edge-group stages that remain: (cell, node) for nodes with more than 2 live input edges."""
    out = []
    for c in range(2):
        for node, edge_ids in enumerate(NODE_EDGES):
            if sum(bool(alive[c, e].any()) for e in edge_ids) > 2:
                out.append((c, node))
    return out


def search(
    source: SearchSource,
    cfg: SearchConfig,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    backend: str = "hook",
    share_inputs: bool = True,
    show_progress: bool = True,
) -> SearchResult:
    """Run a MetaNTK-NAS pruning search (or a baseline) and return its genotype and per-round scores.

    Args:
        source: images and labels (:class:`TensorSource` or the data layer's adapter); the search draws its own
            episodes and patches from it.
        cfg: the settings (:data:`PRESETS` or a :class:`SearchConfig`).
        seed: run seed; every random draw derives from it.
        device: where kernels and region counts run.
        checkpoint: a JSON file written atomically after every stage (rank 0 only).
        resume: continue from ``checkpoint`` if it exists (it must have the same config and seed).
        backend: per-sample-gradient backend of the NTK (``hook``, ``opacus`` or ``func``).
        share_inputs: the kernel and thin networks compute the ReLU and pools that all ops on one state's edges
            start with once (:class:`~metantk_zoo.supernet.SuperNet`); the same forward and region counts, a
            different float summation order in the kernel's backward (about 1e-8 relative). ``False`` runs every op
            on its own as the reference.
        show_progress: a progress bar per stage on stderr.

    Returns:
        The :class:`SearchResult`. With ``torchrun``, each rank scores a disjoint share of every stage's
        candidates and all ranks return the same result.

    Raises:
        DatasetError: too few classes for the meta-batch, or a source that does not return uint8 images.
        CheckpointError: a checkpoint of another config or seed.
    """
    from ..version import __version__

    device = torch.device(device)
    info = current()
    rank, world = info.rank, info.world_size
    data = _Data(source, cfg, device)
    versions = {"metantk_zoo": __version__, "torch": torch.__version__, "python": platform.python_version()}
    space = cfg.space

    if cfg.method == "random":
        alphas = 1e-3 * torch.randn(2, len(EDGES), len(space), generator=_rng(seed, "random-alphas"),
                                    dtype=torch.float64)
        g = genotype_from_weights(torch.softmax(alphas, -1), space)
        return SearchResult(g, cfg, seed, [], 0.0, str(device), versions, data.fingerprint([]))

    state: dict[str, Any] = {"alive": initial_alive(len(space)), "group_origin": None, "rounds": [],
                             "seen": [], "wall_time": 0.0, "n_rounds": 0}
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        state = _load_checkpoint(checkpoint, cfg, seed, len(space))
        data.seen.update(state["seen"])
        logger.info("resuming search from %s after %d stage(s)", checkpoint, len(state["rounds"]))

    scorer = _Scorer(cfg, seed, data, device, backend, share_inputs)
    while True:
        t0 = time.perf_counter()
        alive: torch.Tensor = state["alive"]
        multi = alive.sum(-1) > 1  # (2, 9)
        if multi.any():
            stage = f"round{state['n_rounds']}"
            cands = [(c, e, o) for c in range(2) for e in range(len(EDGES)) if multi[c, e]
                     for o in range(len(space)) if alive[c, e, o]]
            origin = thin_origin = alive
            kind = "round"
        else:
            groups = _stages(alive)
            if not groups:
                break
            c, node = groups[0]
            if state["group_origin"] is None:
                state["group_origin"] = alive.clone()
            stage = f"group-{_CELLS[c]}-node{node}"
            cands = [(c, e, int(torch.nonzero(alive[c, e])[0])) for e in NODE_EDGES[node] if alive[c, e].any()]
            origin = state["group_origin"] if cfg.stale_group_origin else alive
            thin_origin = alive
            kind = "group"
        scorer.start_stage(stage)
        mine = cands[rank::world]
        scores = {}
        bar = progress(mine, desc=f"{stage} ({len(cands)} candidates)", total=len(mine)) if show_progress else mine
        for key in bar:
            cand = alive.clone()
            cand[key] = False
            scores[key] = scorer.score(stage, key, cand, origin, thin_origin)
        for part in gather_objects((scores, sorted(data.seen))):
            scores.update(part[0])
            data.seen.update(part[1])
        rows = _rank_stage(cands, scores, cfg, kind)
        for row in rows:
            if row["nonfinite"]:
                logger.warning("%s: non-finite kernel for candidate %s edge %s op %s; condition number set to %g "
                               "as the reference does", stage, row["cell"], row["edge"], row["op"], NAN_CONDITION)
        new_alive = alive.clone()
        for row, key in zip(rows, cands):
            if row["pruned"]:
                new_alive[key] = False
        state["alive"] = new_alive
        state["rounds"].append({"stage": kind, "name": stage, "candidates": rows})
        state["n_rounds"] += kind == "round"
        state["seen"] = sorted(data.seen)
        state["wall_time"] += time.perf_counter() - t0
        logger.info("%s: pruned %s", stage, ", ".join(f"{r['cell']}/{r['edge']}/{r['op']}" for r in rows
                                                       if r["pruned"]))
        if checkpoint is not None and rank == 0:
            _save_checkpoint(checkpoint, cfg, seed, state)

    genotype = genotype_from_alive(state["alive"], space)
    return SearchResult(genotype, cfg, seed, state["rounds"], state["wall_time"], str(device), versions,
                        data.fingerprint(state["seen"]))


def _rank_stage(cands: list[tuple[int, int, int]], scores: dict, cfg: SearchConfig, kind: str) -> list[dict[str, Any]]:
    p = cfg.precision
    rows = []
    for key in cands:
        s = scores[key]
        d_c = [_delta(o, c, p) for o, c in zip(s["cond_origin"], s["cond"])] or [0.0] * cfg.repeats
        d_r = [_delta(o, c, p) for o, c in zip(s["regions_origin"], s["regions"])] or [0.0] * cfg.repeats
        c, e, o = key
        rows.append({"cell": _CELLS[c], "edge": e, "edge_name": f"{EDGES[e][0]}<-{EDGES[e][1]}", "op": cfg.space[o],
                     "delta_cond": sum(d_c) / len(d_c), "delta_regions": sum(d_r) / len(d_r),
                     "delta_cond_repeats": d_c, "delta_regions_repeats": d_r, **s})
    order, rank_c, rank_r, total = rank_candidates([r["delta_cond"] for r in rows],
                                                   [r["delta_regions"] for r in rows], p)
    for i, row in enumerate(rows):
        row.update(rank_cond=rank_c[i], rank_regions=rank_r[i], total=total[i], pruned=False)
    if kind == "group":  # edge-group stage: one candidate per edge, keep the two with the highest totals
        for i in order[: max(0, len(order) - 2)]:
            rows[i]["pruned"] = True
    else:  # pruning round: the most prunable op of every edge
        done = set()
        for i in order:
            edge = (cands[i][0], cands[i][1])
            if edge not in done:
                rows[i]["pruned"] = True
                done.add(edge)
    return rows


def _save_checkpoint(path: str | os.PathLike, cfg: SearchConfig, seed: int, state: dict[str, Any]) -> None:
    write_json(path, {
        "version": _CHECKPOINT_VERSION, "config": cfg.to_dict(), "seed": seed,
        "alive": state["alive"].to(torch.int8).tolist(),
        "group_origin": None if state["group_origin"] is None else state["group_origin"].to(torch.int8).tolist(),
        "rounds": state["rounds"], "seen": state["seen"], "wall_time": state["wall_time"],
        "n_rounds": state["n_rounds"],
    })


def _load_checkpoint(path: str | os.PathLike, cfg: SearchConfig, seed: int, n_ops: int) -> dict[str, Any]:
    d = read_json(path, what="search checkpoint")
    if not isinstance(d, dict) or d.get("version") != _CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is not a search checkpoint of this version")
    if d.get("seed") != seed or SearchConfig.from_dict(d["config"]) != cfg:
        raise CheckpointError(f"{path} belongs to another search (seed {d.get('seed')}, config differs or seed "
                              f"differs from {seed}); use a new --out or the original settings")
    alive = torch.tensor(d["alive"], dtype=torch.bool)
    if tuple(alive.shape) != (2, len(EDGES), n_ops):
        raise CheckpointError(f"{path}: mask of shape {tuple(alive.shape)}, expected {(2, len(EDGES), n_ops)}")
    go = d.get("group_origin")
    return {"alive": alive, "group_origin": None if go is None else torch.tensor(go, dtype=torch.bool),
            "rounds": d["rounds"], "seen": d["seen"], "wall_time": d["wall_time"], "n_rounds": d["n_rounds"]}
