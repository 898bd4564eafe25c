"""The MetaNTK-NAS search loop: score every live op by MetaNTK trainability and linear regions, prune, repeat.

Follows ``reference/method-facts.md`` §4-6. Each round scores every live (cell type, edge, op) of a supernet by

* the relative change of the condition number of the analytic MetaNTK when the op is removed (kernel network:
  C=48, 5 or 8 cells, GroupNorm16, a fresh random ``Linear(576, n_way)`` head, 3 tasks x 5 ways x (1 query +
  1 support) at 32x32), and
* the relative change of the number of linear regions of the thin proxy network on 3 x 1000 random 3x3 patches,

each averaged over ``repeats`` (per-repeat values rounded to 3 decimals), ranks both (ΔC descending, ΔR ascending,
3-significant-figure sort keys, dense ranks on exact ties: :mod:`.ranking`), prunes the op with the lowest rank
sum on every edge, and finally keeps the two best input edges of every node. Baselines: ``tenas`` (the NTK of the
classifier output on plain batches, §4.7), ``regions-only``, ``metantk-only`` and ``random`` (§6.4).

Fast by exact means: the hook Gram (:func:`metantk_zoo.nas.kernels.empirical_ntk`), one network per round whose
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

import hashlib
import logging
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
from ..utils.distributed import current, gather_objects
from ..utils.io import as_float, read_json, write_json
from ..utils.progress import progress
from .config import CELLS, SearchConfig
from .inputs import kernel_inputs, normalize_uint8, region_patches, resize_uint8, tenas_augment
from .kernels import NAN_CONDITION, condition_number, empirical_ntk, meta_ntk
from .ranking import rank_stage
from .recorded import RecordedKernelPass, check_kernel_graph
from .recorded import StackedHeads as _StackedHeads
from .recorded import WithHead as _WithHead
from .regions import count_linear_regions
from .supernet import (
    EDGES,
    NODE_EDGES,
    SuperNet,
    candidate_weights,
    genotype_from_alive,
    genotype_from_weights,
    initial_alive,
    reset_parameters,
)

__all__ = ["SearchSource", "TensorSource", "SearchResult", "search"]

logger = logging.getLogger(__name__)

_CHECKPOINT_VERSION = 1
#: while a stage runs in one process, its finished candidates are written to the checkpoint at most this often (s):
#: a search killed mid-stage loses at most this much scoring
PARTIAL_SAVE_EVERY_S = 5.0


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


#: tries per task to draw an episode that is not already in the meta-batch
_EPISODE_REDRAWS = 100

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
        """The kernel's meta-batch: ``n_tasks`` distinct episodes, as the reference's shuffled sampler never repeats
        one within a batch. A pool index already in the batch, or an episode with the same support and query images
        as an earlier task, is drawn again (batches without a repeat are unchanged)."""
        cfg = self.cfg
        qry, spt, used, seen = [], [], set(), set()
        for _ in range(cfg.n_tasks):
            for _ in range(_EPISODE_REDRAWS):
                if cfg.episode_pool:
                    index = int(torch.randint(cfg.episode_pool, (1,), generator=g))
                    if index in used:
                        continue
                    used.add(index)
                    eg = _rng("episode", index)
                else:
                    eg = g
                s_t, q_t = [], []
                chosen = torch.randperm(len(self.classes), generator=eg)[: cfg.n_way]
                for c in chosen.tolist():
                    members = self.classes[c][torch.randperm(len(self.classes[c]), generator=eg)]
                    s_t.append(members[: cfg.n_shot])
                    q_t.append(members[cfg.n_shot : cfg.n_shot + cfg.n_query])
                key = (frozenset(torch.cat(s_t).tolist()), frozenset(torch.cat(q_t).tolist()))
                if key not in seen:
                    break
            else:
                raise DatasetError(f"could not draw {cfg.n_tasks} distinct {cfg.n_way}-way episodes from the search "
                                   f"data in {_EPISODE_REDRAWS} tries; use more classes or images, or fewer tasks")
            seen.add(key)
            spt += s_t
            qry += q_t
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


#: the most candidates scored in one pass when the batch is chosen from free GPU memory
MAX_CANDIDATE_BATCH = 64


def default_candidate_batch(device: torch.device, per_candidate_bytes: int | None = None) -> int:
    """Candidates per pass when ``candidate_batch`` is not given: 1 on the CPU (batching gains nothing there,
    ``scripts/bench_search.py``); on CUDA as many as half the free memory holds at ``per_candidate_bytes`` each (the
    measured peak of one candidate), at most :data:`MAX_CANDIDATE_BATCH`; 1 until that peak is known."""
    if device.type != "cuda" or not per_candidate_bytes:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_CANDIDATE_BATCH, int(0.5 * free // per_candidate_bytes)))


class _Scorer:
    """Scores candidates of one stage; everything random is derived from (seed, stage, candidate, repeat)."""

    def __init__(self, cfg: SearchConfig, seed: int, data: _Data, device: torch.device, backend: str,
                 share_inputs: bool = True, candidate_batch: int | None = 1, kernel_graph: str = "eager"):
        self.cfg, self.seed, self.data, self.device, self.backend = cfg, seed, data, device, backend
        self.candidate_batch = candidate_batch  # None: chosen from free memory after the first candidate
        self.kernel_graph = kernel_graph
        self._recorded: dict[tuple, RecordedKernelPass] = {}  # this stage's recorded passes, by batch shape
        self._structure: torch.Tensor | None = None  # the stage's origin: every mask scored is within it
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
        self._recorded = {}
        if self.kernel_net is not None:  # the edge pass keeps one network for all its groups, as the reference
            init_key = "group-pass" if stage.startswith("group") else stage
            reset_parameters(self.kernel_net, _rng(self.seed, "kernel-init", init_key), self.cfg.init)

    def _head(self, g: torch.Generator) -> nn.Linear:
        head = nn.Linear(self.kernel_net.num_features, self.cfg.n_way)
        dtype = self.kernel_net.classifier.weight.dtype
        return reset_parameters(head, g, "default").to(self.device, dtype)  # nn.Linear's default init, as the reference

    def _cond(self, alive: torch.Tensor, x: torch.Tensor, head_g: torch.Generator | None) -> tuple[float, bool]:
        """Condition number of the (Meta)NTK of the kernel network with mask ``alive``; flag if non-finite."""
        cfg, net = self.cfg, self.kernel_net
        if self.kernel_graph != "eager":
            return self._cond_recorded([(alive, x, head_g)])[0]
        net.set_alive(alive.to(self.device))
        if cfg.method == "tenas":
            theta = empirical_ntk(net, x, backend=self.backend)
            finite = bool(torch.isfinite(theta).all())
            return condition_number(theta), not finite
        head = self._head(head_g)
        grams = empirical_ntk(_WithHead(net, head), x, backend=self.backend, per_layer=True)
        return self._meta_cond(torch.stack(list(grams.values())).sum(0), grams["head"])

    def _cond_many(self, items: list[tuple[torch.Tensor, torch.Tensor, torch.Generator]]) -> list[tuple[float, bool]]:
        """:meth:`_cond` of several (mask, input, head generator) at once: the masks through
        :meth:`SuperNet.set_candidates`, the inputs stacked, one head per item, the Gram folded per item."""
        if len(items) == 1 or self.kernel_graph != "eager":
            return self._cond_recorded(items) if self.kernel_graph != "eager" else [self._cond(*items[0])]
        cfg, net, n_groups = self.cfg, self.kernel_net, len(items)
        net.set_candidates(torch.stack([alive for alive, _, _ in items]).to(self.device))
        x = torch.cat([x for _, x, _ in items])  # (G*n, 3, r, r)
        try:
            if cfg.method == "tenas":
                thetas = empirical_ntk(net, x, backend=self.backend, groups=n_groups)  # (G, n, n)
                return [(condition_number(t), not bool(torch.isfinite(t).all())) for t in thetas]
            heads = _StackedHeads([self._head(g) for _, _, g in items])
            grams = empirical_ntk(_WithHead(net, heads), x, backend=self.backend, per_layer=True, groups=n_groups)
        finally:
            net.set_candidates(None)
        theta = torch.stack(list(grams.values())).sum(0)  # (G, n, n)
        return [self._meta_cond(theta[i], grams[f"head.heads.{i}"][i]) for i in range(n_groups)]

    def _cond_recorded(self, items: list[tuple[torch.Tensor, torch.Tensor, torch.Generator]]
                       ) -> list[tuple[float, bool]]:
        """:meth:`_cond_many` through a :class:`RecordedKernelPass` of the stage's structure, recorded on the first
        batch of this shape in the stage and replayed after (``kernel_graph`` ``cuda-graph`` or ``fx``)."""
        cfg, n_groups = self.cfg, len(items)
        weights = candidate_weights(torch.stack([alive for alive, _, _ in items])).to(self.device)
        x = torch.cat([x for _, x, _ in items])  # (G*n, 3, r, r)
        heads = None if cfg.method == "tenas" else [self._head(g) for _, _, g in items]
        key = (n_groups, tuple(x.shape))
        if key not in self._recorded:
            self._recorded[key] = RecordedKernelPass(self.kernel_net, self._structure.to(self.device), x, weights,
                                                     heads, self.kernel_graph)
        theta, nngp = self._recorded[key](x, weights, heads)  # (G, n, n) each
        if nngp is None:
            return [(condition_number(t), not bool(torch.isfinite(t).all())) for t in theta]
        return [self._meta_cond(theta[i], nngp[i]) for i in range(n_groups)]

    def _meta_cond(self, theta: torch.Tensor, nngp: torch.Tensor) -> tuple[float, bool]:
        """Condition number of the MetaNTK of ``theta`` (NTK) and ``nngp`` (head Gram); flag if non-finite."""
        cfg = self.cfg
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
        self._structure = origin
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

    def score_many(self, stage: str, keys: Sequence[tuple[int, int, int]], alives: Sequence[torch.Tensor],
                   origin: torch.Tensor, thin_origin: torch.Tensor) -> dict[tuple[int, int, int], dict[str, Any]]:
        """:meth:`score` of several candidates, each repeat's kernels in one pass (:meth:`_cond_many`): the same
        random draws, the same rows (kernels equal to float rounding; float64: 1e-10 relative, tested)."""
        cfg, seed = self.cfg, self.seed
        self._structure = origin
        rows = {key: {"cond_origin": [], "cond": [], "regions_origin": [], "regions": [], "nonfinite": False}
                for key in keys}
        for r in range(cfg.repeats if self.use_kernel else 0):
            items, slots = [], []
            for key, alive in zip(keys, alives, strict=True):
                if cfg.protocol == "shared":
                    if r not in self._origin:
                        x = self._kernel_input(_rng(seed, "kernel-batch", stage, r))
                        self._origin[r] = (x, *self._cond(origin, x, _rng(seed, "head", stage, r)))
                    x, c_o, bad_o = self._origin[r]
                    rows[key]["cond_origin"].append(c_o)
                    rows[key]["nonfinite"] = rows[key]["nonfinite"] or bad_o
                    head_key = ("head", stage, r) if cfg.shared_head else ("head", stage, r, key)
                else:
                    x = self._kernel_input(_rng(seed, "kernel-batch", stage, key, r))
                    items.append((origin, x, _rng(seed, "head", stage, key, r, "origin")))
                    slots.append((key, "cond_origin"))
                    head_key = ("head", stage, key, r, "origin") if cfg.shared_head else ("head", stage, key, r)
                items.append((alive, x, _rng(seed, *head_key)))
                slots.append((key, "cond"))
            for (key, name), (value, bad) in zip(slots, self._cond_many(items), strict=True):
                rows[key][name].append(value)
                rows[key]["nonfinite"] = rows[key]["nonfinite"] or bad
        if self.use_regions:
            for key, alive in zip(keys, alives, strict=True):
                reset_parameters(self.thin, _rng(seed, "thin-init", stage, key), cfg.init)
                for r in range(cfg.repeats):
                    batches = self.data.patch_batches(_rng(seed, "patches", stage, key, r))
                    self.thin.set_alive(thin_origin.to(self.device))
                    rows[key]["regions_origin"].append(count_linear_regions(self.thin, batches))
                    self.thin.set_alive(alive.to(self.device))
                    rows[key]["regions"].append(count_linear_regions(self.thin, batches))
        return rows

    def measure_candidate(self, stage: str, key: tuple[int, int, int], alive: torch.Tensor, origin: torch.Tensor,
                          thin_origin: torch.Tensor) -> dict[str, Any]:
        """:meth:`score` of one candidate; on CUDA with the batch size still open, its peak memory sets it."""
        if self.candidate_batch is not None or self.device.type != "cuda":
            return self.score(stage, key, alive, origin, thin_origin)
        self._structure = origin
        if self.cfg.protocol == "shared":  # the unpruned kernels are computed once per stage: not in the peak
            for r in range(self.cfg.repeats if self.use_kernel else 0):
                if r not in self._origin:
                    x = self._kernel_input(_rng(self.seed, "kernel-batch", stage, r))
                    self._origin[r] = (x, *self._cond(origin, x, _rng(self.seed, "head", stage, r)))
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        row = self.score(stage, key, alive, origin, thin_origin)
        peak = torch.cuda.max_memory_allocated(self.device) - base
        self.candidate_batch = default_candidate_batch(self.device, peak)
        logger.info("candidate batch %d (one candidate's peak %.0f MiB)", self.candidate_batch, peak / 2**20)
        return row


def _stages(alive: torch.Tensor) -> list[tuple]:
    """The edge-group stages that remain: (cell, node) for nodes with more than 2 live input edges."""
    out = []
    for c in range(2):
        for node, edge_ids in enumerate(NODE_EDGES):
            if sum(bool(alive[c, e].any()) for e in edge_ids) > 2:
                out.append((c, node))
    return out


@dataclass
class _Stage:
    """One stage of the loop: a pruning round over every edge with several live ops, or one node's edge group."""

    name: str  # "round<k>" or "group-<cell>-node<n>"
    kind: str  # "round" or "group"
    cands: list[tuple[int, int, int]]  # (cell, edge, op) in iteration order
    origin: torch.Tensor  # (2, E, O) bool: the kernel network a candidate is compared with
    thin_origin: torch.Tensor  # (2, E, O) bool: the thin network a candidate is compared with


def _next_stage(state: dict[str, Any], cfg: SearchConfig) -> _Stage | None:
    """The stage that follows ``state``, or None when every node keeps two input edges with one op each.

    Pruning rounds come first, while an edge has more than one live op; then the edge groups, node by node. The
    first edge group records the mask it starts from in ``state["group_origin"]``.
    """
    alive: torch.Tensor = state["alive"]
    space = cfg.space
    multi = alive.sum(-1) > 1  # (2, 9)
    if multi.any():
        cands = [(c, e, o) for c in range(2) for e in range(len(EDGES)) if multi[c, e]
                 for o in range(len(space)) if alive[c, e, o]]
        return _Stage(f"round{state['n_rounds']}", "round", cands, alive, alive)
    groups = _stages(alive)
    if not groups:
        return None
    c, node = groups[0]
    if state["group_origin"] is None:
        state["group_origin"] = alive.clone()
    cands = [(c, e, int(torch.nonzero(alive[c, e])[0])) for e in NODE_EDGES[node] if alive[c, e].any()]
    origin = state["group_origin"] if cfg.stale_group_origin else alive
    return _Stage(f"group-{CELLS[c]}-node{node}", "group", cands, origin, alive)


def _score_stage(scorer: _Scorer, stage: _Stage, alive: torch.Tensor, show_progress: bool,
                 done: dict | None = None, on_chunk: Any = None) -> dict:
    """Score this rank's share of the stage's candidates and gather every rank's scores (and seen images).

    ``done`` holds candidates already scored (a resumed stage: they are not scored again); ``on_chunk(scores)`` is
    called with every score so far after each chunk (the partial checkpoint)."""
    info = current()
    scorer.start_stage(stage.name)
    scores = dict(done or {})
    mine = [key for key in stage.cands[info.rank :: info.world_size] if key not in scores]
    desc = f"{stage.name} ({len(stage.cands)} candidates)"
    bar = progress(total=len(mine) + len(scores), desc=desc, initial=len(scores)) if show_progress else None
    while mine:
        chunk, mine = mine[: scorer.candidate_batch or 1], mine[scorer.candidate_batch or 1 :]
        cands = []
        for key in chunk:
            cand = alive.clone()
            cand[key] = False
            cands.append(cand)
        if len(chunk) == 1:
            scores[chunk[0]] = scorer.measure_candidate(stage.name, chunk[0], cands[0], stage.origin,
                                                        stage.thin_origin)
        else:
            scores.update(scorer.score_many(stage.name, chunk, cands, stage.origin, stage.thin_origin))
        if bar is not None:
            bar.update(len(chunk))
        if on_chunk is not None:
            on_chunk(scores)
    if bar is not None:
        bar.close()
    for part in gather_objects((scores, sorted(scorer.data.seen))):
        scores.update(part[0])
        scorer.data.seen.update(part[1])
    return scores


def _apply_stage(state: dict[str, Any], stage: _Stage, rows: list[dict[str, Any]], seen: set[int]) -> None:
    """Prune the stage's marked candidates from ``state["alive"]`` and record the stage's rows."""
    for row in rows:
        if row["nonfinite"]:
            logger.warning("%s: non-finite kernel for candidate %s edge %s op %s; condition number set to %g "
                           "as the reference does", stage.name, row["cell"], row["edge"], row["op"], NAN_CONDITION)
    new_alive = state["alive"].clone()
    for row, key in zip(rows, stage.cands, strict=True):
        if row["pruned"]:
            new_alive[key] = False
    state["alive"] = new_alive
    state["rounds"].append({"stage": stage.kind, "name": stage.name, "candidates": rows})
    state["n_rounds"] += stage.kind == "round"
    state["seen"] = sorted(seen)
    logger.info("%s: pruned %s", stage.name, ", ".join(f"{r['cell']}/{r['edge']}/{r['op']}" for r in rows
                                                        if r["pruned"]))


def _random_genotype(cfg: SearchConfig, seed: int) -> Genotype:
    """The ``random`` baseline (§6.4): the genotype of tiny random architecture weights."""
    alphas = 1e-3 * torch.randn(2, len(EDGES), len(cfg.space), generator=_rng(seed, "random-alphas"),
                                dtype=torch.float64)
    return genotype_from_weights(torch.softmax(alphas, -1), cfg.space)


def _initial_state(cfg: SearchConfig, seed: int, data: _Data, checkpoint: str | os.PathLike | None,
                   resume: bool) -> dict[str, Any]:
    """The loop's state: the full supernet, or the checkpoint's state when resuming."""
    state: dict[str, Any] = {"alive": initial_alive(len(cfg.space)), "group_origin": None, "rounds": [],
                             "seen": [], "wall_time": 0.0, "n_rounds": 0, "partial": None}
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        state = _load_checkpoint(checkpoint, cfg, seed, len(cfg.space))
        data.seen.update(state["seen"])
        if state["partial"] is not None:
            data.seen.update(state["partial"]["seen"])
        logger.info("resuming search from %s after %d stage(s)%s", checkpoint, len(state["rounds"]),
                    f" and {len(state['partial']['scores'])} candidate(s) of {state['partial']['stage']}"
                    if state["partial"] is not None else "")
    return state


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
    candidate_batch: int | None = None,
    kernel_graph: str = "eager",
) -> SearchResult:
    """Run a MetaNTK-NAS pruning search (or a baseline) and return its genotype and per-round scores.

    Args:
        source: images and labels (:class:`TensorSource` or the data layer's adapter); the search draws its own
            episodes and patches from it.
        cfg: the settings (:data:`PRESETS` or a :class:`SearchConfig`).
        seed: run seed; every random draw derives from it.
        device: where kernels and region counts run.
        checkpoint: a JSON file written atomically after every stage (rank 0 only) and, in one process, with the
            stage's finished candidates at most every :data:`PARTIAL_SAVE_EVERY_S` seconds while it runs.
        resume: continue from ``checkpoint`` if it exists (it must have the same config and seed).
        backend: per-sample-gradient backend of the NTK (``hook``, ``opacus`` or ``func``).
        share_inputs: the kernel and thin networks compute the ReLU and pools that all ops on one state's edges
            start with once (:class:`~metantk_zoo.nas.supernet.SuperNet`); the same forward and region counts, a
            different float summation order in the kernel's backward (about 1e-8 relative). ``False`` runs every op
            on its own as the reference.
        show_progress: a progress bar per stage on stderr.
        candidate_batch: candidates scored in one forward and backward (their meta-batches stacked, each sample
            masked by its candidate, the hook Gram folded per candidate): the same scores, to float rounding.
            ``None``: 1 on the CPU, on CUDA as many as half the free memory holds (:func:`default_candidate_batch`).
        kernel_graph: ``"eager"``, or record each stage's kernel pass once and replay it per candidate batch:
            ``"cuda-graph"`` (CUDA) or ``"fx"`` (a traced ATen graph; CPU or CUDA). The same scores to float
            rounding (float64: 1e-10 relative), :mod:`.recorded`. Hook backend only.

    Returns:
        The :class:`SearchResult`. With ``torchrun``, each rank scores a disjoint share of every stage's
        candidates and all ranks return the same result.

    Raises:
        DatasetError: too few classes for the meta-batch, or a source that does not return uint8 images.
        CheckpointError: a checkpoint of another config or seed.
        ConfigError: a ``candidate_batch`` below 1, an unknown ``kernel_graph``, ``cuda-graph`` off CUDA, or a
            recorded pass with a backend other than ``hook``.
    """
    from ..version import __version__

    if candidate_batch is not None and (isinstance(candidate_batch, bool) or not isinstance(candidate_batch, int)
                                        or candidate_batch < 1):
        raise ConfigError(f"candidate_batch must be a positive integer (or None: chosen from free memory), found "
                          f"{candidate_batch!r}")
    device = torch.device(device)
    check_kernel_graph(kernel_graph, device)
    if kernel_graph != "eager" and backend != "hook":
        raise ConfigError(f"kernel_graph {kernel_graph!r} records the hook Gram; found backend {backend!r}")
    data = _Data(source, cfg, device)
    versions = {"metantk_zoo": __version__, "torch": torch.__version__, "python": platform.python_version()}
    if cfg.method == "random":
        return SearchResult(_random_genotype(cfg, seed), cfg, seed, [], 0.0, str(device), versions,
                            data.fingerprint([]))

    state = _initial_state(cfg, seed, data, checkpoint, resume)
    if candidate_batch is None and device.type != "cuda":
        candidate_batch = default_candidate_batch(device)
    scorer = _Scorer(cfg, seed, data, device, backend, share_inputs, candidate_batch, kernel_graph)
    single = current().world_size == 1  # under torchrun the stage is the unit of a checkpoint
    while True:
        t0 = time.perf_counter()
        alive: torch.Tensor = state["alive"]
        stage = _next_stage(state, cfg)
        if stage is None:
            break
        partial = state["partial"]
        done: dict = {}
        if single and partial is not None and partial["stage"] == stage.name:
            done = partial["scores"]
            t0 -= partial["seconds"]  # the stage's scoring before the interruption counts in wall_time
        save = _partial_saver(checkpoint, cfg, seed, state, stage, data, t0) if checkpoint and single else None
        scores = _score_stage(scorer, stage, alive, show_progress, done, save)
        state["partial"] = None
        _apply_stage(state, stage, rank_stage(stage.cands, scores, cfg, stage.kind), data.seen)
        state["wall_time"] += time.perf_counter() - t0
        if checkpoint is not None and current().rank == 0:
            _save_checkpoint(checkpoint, cfg, seed, state)

    genotype = genotype_from_alive(state["alive"], cfg.space)
    return SearchResult(genotype, cfg, seed, state["rounds"], state["wall_time"], str(device), versions,
                        data.fingerprint(state["seen"]))


def _partial_saver(checkpoint: str | os.PathLike, cfg: SearchConfig, seed: int, state: dict[str, Any],
                   stage: _Stage, data: _Data, t0: float):
    """``on_chunk`` of :func:`_score_stage`: the stage's finished candidates into the checkpoint, at most every
    :data:`PARTIAL_SAVE_EVERY_S` seconds (one process only)."""
    last = [time.perf_counter()]

    def save(scores: dict) -> None:
        now = time.perf_counter()
        if now - last[0] < PARTIAL_SAVE_EVERY_S or len(scores) == len(stage.cands):
            return  # a finished stage is saved whole right after
        last[0] = now
        state["partial"] = {"stage": stage.name, "seconds": now - t0, "seen": sorted(data.seen),
                            "scores": [[*key, row] for key, row in scores.items()]}
        _save_checkpoint(checkpoint, cfg, seed, state)

    return save


def _save_checkpoint(path: str | os.PathLike, cfg: SearchConfig, seed: int, state: dict[str, Any]) -> None:
    partial = state["partial"]
    write_json(path, {
        "version": _CHECKPOINT_VERSION, "config": cfg.to_dict(), "seed": seed,
        "alive": state["alive"].to(torch.int8).tolist(),
        "group_origin": None if state["group_origin"] is None else state["group_origin"].to(torch.int8).tolist(),
        "rounds": state["rounds"], "seen": state["seen"], "wall_time": state["wall_time"],
        "n_rounds": state["n_rounds"],
        **({"partial": partial} if partial is not None else {}),
    })


def _load_partial(d: Any, path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint's unfinished stage: ``{"stage", "seconds", "seen", "scores": {(c, e, o): row}}``, or None."""
    if d is None:
        return None
    try:
        scores = {}
        for c, e, o, row in d["scores"]:
            for k in ("cond_origin", "cond"):
                row[k] = [as_float(v) for v in row[k]]
            scores[(int(c), int(e), int(o))] = row
        return {"stage": str(d["stage"]), "seconds": float(d["seconds"]), "seen": list(d["seen"]), "scores": scores}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed unfinished stage ({type(e).__name__}: {e})") from None


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
            "rounds": d["rounds"], "seen": d["seen"], "wall_time": d["wall_time"], "n_rounds": d["n_rounds"],
            "partial": _load_partial(d.get("partial"), path)}
