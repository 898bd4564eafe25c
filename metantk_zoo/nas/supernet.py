"""The pruning supernet: every candidate op on every edge, ops and edges removed by masking.

One network class builds both networks of MetaNTK-NAS's search (``reference/method-facts.md`` §2.2, §3.3-3.4):

* the **kernel network** (:meth:`SuperNet.kernel_net`): stem, cells in the evaluation layout (reductions at
  ``L//3`` and ``2L//3``, widths doubling), every BatchNorm replaced by GroupNorm(min(16, C), C), then a final
  norm + ReLU + global pooling into the 576-d feature the MetaNTK uses, and a classifier (used only by the
  TE-NAS NTK baseline);
* the **thin network** (:meth:`SuperNet.thin_net`): C=1, one normal and one reduction cell, no stem (the raw
  1x3x3 patch is both cell inputs), BatchNorm; its ReLU sign patterns give the linear regions.

The architecture is a boolean buffer ``alive`` of shape (2, 9, n_ops) (cell type, edge, op), not a parameter, so
per-sample-gradient tools see a plain network. Live ops on an edge are averaged with weight ``1/k`` (the softmax
of zero alphas), dead ops are not executed, and an edge with no live op contributes nothing, exactly as the
reference's ``alpha = -1000`` masking. Op index 0 is always ``none`` and never live.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137; DARTS: https://arxiv.org/abs/1806.09055.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..genotype import Genotype
from ..models.network import reduction_indices
from ..models.ops import (
    DARTS_FEWSHOT,
    OPS,
    DilConv,
    FacConv,
    FactorizedReduce,
    Identity,
    PoolBN,
    SepConv,
    cell_preprocess,
)

__all__ = [
    "EDGES",
    "NUM_EDGES",
    "NODE_EDGES",
    "SuperNet",
    "initial_alive",
    "alive_weights",
    "candidate_weights",
    "genotype_from_weights",
    "genotype_from_alive",
    "convert_batchnorm_to_groupnorm",
    "reset_parameters",
]

#: Edges of a 3-node cell in the reference's order (sorted ``"i<-j"`` keys): (node, input state).
EDGES: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3))
NUM_EDGES = len(EDGES)
#: Edge indices entering each node.
NODE_EDGES: tuple[tuple[int, ...], ...] = ((0, 1), (2, 3, 4), (5, 6, 7, 8))
_INITS = ("default", "kaiming")


def _check_space(space: Sequence[str]) -> tuple[str, ...]:
    space = tuple(space)
    if not space or space[0] != "none" or len(space) < 2:
        raise ConfigError(f"a search space starts with 'none' and has at least one candidate op, found {space}")
    unknown = [op for op in space if op not in DARTS_FEWSHOT]
    if unknown or len(set(space)) != len(space):
        raise ConfigError(f"search-space ops must be distinct names of {DARTS_FEWSHOT[1:]}, found {space[1:]}")
    return space


class _SearchCell(nn.Module):
    def __init__(
        self, space: tuple[str, ...], prev_prev_chs: int, prev_chs: int, chs: int, reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocess(prev_prev_chs, prev_chs, chs, reduction_prev)
        self.edges = nn.ModuleList(
            nn.ModuleList(OPS[name](chs, 2 if reduction and j < 2 else 1, True) for name in space) for _, j in EDGES
        )

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, alive: list[list[bool]], share_inputs: bool = False,
        sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sample_weights`` (B, 9, n_ops): each sample's op weights (candidate batching); ``alive`` is then the
        union of the candidates' masks, the ops that run."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        shared: dict[tuple, torch.Tensor] | None = {} if share_inputs else None
        for edge_ids in NODE_EDGES:
            node = None
            for e in edge_ids:
                live = [o for o, a in enumerate(alive[e]) if a]
                if not live:
                    continue  # a removed edge contributes nothing
                src = EDGES[e][1]
                x = states[src]
                w = 1.0 / len(live)  # softmax weight of each live op
                for o in live:
                    op = self.edges[e][o]
                    y = op(x) if shared is None else _apply_shared(op, x, shared, src)
                    if sample_weights is not None:  # per sample: 1/k where live (exactly 1 alone), 0 where dead
                        y = y * sample_weights[:, e, o].view(-1, *([1] * (y.dim() - 1)))
                    elif len(live) > 1:
                        y = w * y
                    node = y if node is None else node + y
            if node is None:
                raise ConfigError("a node of the supernet has no live input edge")
            states.append(node)
        return torch.cat(states[2:], dim=1)  # (B, 3C, H', W')


def _plain_tensor(x: torch.Tensor) -> bool:
    """False inside ``torch.func`` transforms (vmap cannot clone into channels_last) or where torch cannot tell."""
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return is_wrapped is not None and not is_wrapped(x)


def _apply_shared(op: nn.Module, x: torch.Tensor, shared: dict[tuple, torch.Tensor], src: int) -> torch.Tensor:
    """``op(x)`` with the parameter-free head every op on state ``src`` starts with computed once per cell.

    Every weighted op begins with ReLU(x) and every pool op with the pool of x, so the ops on the edges leaving one
    state repeat the same work (up to 15 ReLUs and 3 pools of each kind per state). Here they are taken from
    ``shared`` (keyed by state, kind and stride) and only the op's weighted tail runs. The forward values are
    bitwise those of ``op(x)``; autograd sums the gradients of a shared tensor before its backward instead of
    after, a different float summation order (about 1e-8 relative in a float32 NTK). CPU max pools run in
    channels_last (bitwise equal, 2-2.5x faster on a 2-core CPU) except inside ``torch.func`` transforms. The
    shared ReLU runs through the first op's own ``leading_relu`` module and the other ops' ReLU modules do not run,
    so a ReLU hook records each state's pattern once instead of once per op: identical columns, which leave the
    number of distinct activation patterns (the linear-region count) unchanged.
    """
    if isinstance(op, Identity):
        return x
    if isinstance(op, PoolBN):
        pool = op.pool
        key = (src, type(pool).__name__, pool.stride)
        if key not in shared:
            if isinstance(pool, nn.MaxPool2d) and x.device.type == "cpu" and x.dim() == 4 and _plain_tensor(x):
                shared[key] = pool(x.contiguous(memory_format=torch.channels_last)).contiguous()
            else:
                shared[key] = pool(x)
        return op.bn(shared[key])
    if not isinstance(op, (DilConv, FacConv, SepConv, FactorizedReduce)):
        return op(x)
    if (src, "relu") not in shared:  # through the op's own ReLU module, so ReLU hooks see each pattern once
        shared[src, "relu"] = op.leading_relu(x)
    r = shared[src, "relu"]
    if not isinstance(op, FactorizedReduce):
        return op.forward_relu(r)
    if (src, "shifted") not in shared:
        shared[src, "shifted"] = op.shift(r).contiguous()  # one copy per state, not one per conv
    return op.forward_relu(r, shared[src, "shifted"])


class SuperNet(nn.Module):
    """DARTS few-shot supernet with all candidate ops and a boolean architecture mask.

    Args:
        channels: cell width C of the first stage (48 in the reference kernel network, 1 in the thin net).
        num_cells: number of cells when ``reductions`` is not given (reductions at ``L//3``, ``2L//3``).
        num_classes: classifier outputs (64 mini-ImageNet / 351 tiered, used by the TE-NAS baseline only).
        space: op names, ``"none"`` first (default: the 8 ops of ``DARTS_FEWSHOT``).
        norm: ``"group"`` (GroupNorm(min(16, C), C), the kernel network) or ``"batch"``.
        use_stem: 3x3 conv stem + norm; without it the input is fed as both cell inputs.
        reductions: explicit per-cell reduction flags (the thin net uses ``(False, True)``).
        in_chans: input channels.
        share_inputs: compute the ReLU and the pools that the ops on one state's edges all start with once per
            state (bitwise the same forward, faster; the search uses it). ReLU hooks then see each state's ReLU
            once instead of once per op (the same distinct activation patterns). Settable later.

    Shapes: ``forward_features`` (B, in_chans, H, W) -> (B, 12C); ``forward`` -> (B, num_classes).
    """

    def __init__(
        self,
        channels: int = 48,
        num_cells: int = 5,
        num_classes: int = 64,
        *,
        space: Sequence[str] = DARTS_FEWSHOT,
        norm: str = "group",
        use_stem: bool = True,
        reductions: Sequence[bool] | None = None,
        in_chans: int = 3,
        share_inputs: bool = False,
    ):
        super().__init__()
        self.space = _check_space(space)
        self.share_inputs = bool(share_inputs)
        if norm not in ("group", "batch"):
            raise ConfigError(f"norm must be 'group' or 'batch', found {norm!r}")
        if channels < 1:
            raise ConfigError(f"channels must be >= 1, found {channels}")
        if reductions is None:
            if num_cells < 3:
                raise ConfigError(f"num_cells must be >= 3, found {num_cells}")
            red = reduction_indices(num_cells)
            reductions = tuple(i in red for i in range(num_cells))
        self.reductions = tuple(bool(r) for r in reductions)
        self.use_stem = use_stem
        if use_stem:
            self.stem: nn.Module = nn.Sequential(nn.Conv2d(in_chans, channels, 3, padding=1, bias=False),
                                                 nn.BatchNorm2d(channels))
            prev_prev, prev = channels, channels
        else:
            self.stem = nn.Identity()
            prev_prev, prev = in_chans, in_chans
        chs, reduction_prev, cells = channels, False, []
        for reduction in self.reductions:
            if reduction:
                chs *= 2
            cells.append(_SearchCell(self.space, prev_prev, prev, chs, reduction, reduction_prev))
            prev_prev, prev, reduction_prev = prev, 3 * chs, reduction
        self.cells = nn.ModuleList(cells)
        self.num_features = prev
        self.lastact = nn.Sequential(nn.BatchNorm2d(prev), nn.ReLU(inplace=False))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)
        if norm == "group":
            convert_batchnorm_to_groupnorm(self)
        self.register_buffer("alive", initial_alive(len(self.space)))
        self._host_alive: list | None = None  # set inside fixed_structure() only

    @classmethod
    def kernel_net(cls, channels: int = 48, num_cells: int = 5, num_classes: int = 64, *,
                   space: Sequence[str] = DARTS_FEWSHOT, share_inputs: bool = False) -> SuperNet:
        """The full-size network the (Meta)NTK is computed on: stem, GroupNorm16, final norm + ReLU."""
        return cls(channels, num_cells, num_classes, space=space, norm="group", use_stem=True,
                   share_inputs=share_inputs)

    @classmethod
    def thin_net(cls, channels: int = 1, *, space: Sequence[str] = DARTS_FEWSHOT, in_chans: int = 1) -> SuperNet:
        """The linear-region proxy: C=1, a normal and a reduction cell, no stem, BatchNorm."""
        return cls(channels, num_classes=1, space=space, norm="batch", use_stem=False, reductions=(False, True),
                   in_chans=in_chans)

    # ---------------------------------------------------------------------------------------- architecture
    def set_candidates(self, alives: torch.Tensor | None) -> None:
        """Score several masks in one pass: ``alives`` (G, 2, 9, n_ops) makes the forward take a batch of G
        consecutive blocks of equal size, block ``g`` through mask ``g``; ``None`` returns to one mask.

        The ops of the union of the masks run on every sample and each sample weighs each op's output by its own
        mask's softmax weight (``1/k`` on the ``k`` live ops of an edge, 0 on dead ones), so each block's forward,
        and every per-sample gradient, is the one its mask gives alone (dead ops add exact zeros). The network
        must not couple samples (GroupNorm: the kernel network). Sets ``alive`` to the union.
        """
        if alives is None:
            self._candidate_weights = None
            return
        if alives.dim() != 4 or tuple(alives.shape[1:]) != tuple(self.alive.shape):
            raise ConfigError(f"expected masks of shape (G, {', '.join(map(str, self.alive.shape))}), found "
                              f"{tuple(alives.shape)}")
        alives = alives.to(device=self.alive.device, dtype=torch.bool)
        self.set_alive(alives.any(0))
        self._candidate_weights = candidate_weights(alives)

    @contextlib.contextmanager
    def fixed_structure(self, alive: torch.Tensor, weights: torch.Tensor) -> Iterator[None]:
        """Inside the block the forward runs the ops of ``alive`` (2, 9, n_ops), read once here so that the
        forward never reads the mask back from the device (a CUDA graph cannot), each sample weighing each op by
        ``weights`` (G, 2, 9, n_ops), the per-candidate softmax weights of :meth:`set_candidates`, used as given:
        a tensor whose values may change between calls of a recorded pass (:mod:`.recorded`). Every candidate's
        mask must lie within ``alive``."""
        if tuple(alive.shape) != tuple(self.alive.shape) or weights.dim() != 4 or \
                tuple(weights.shape[1:]) != tuple(self.alive.shape):
            raise ConfigError(f"expected a mask of shape {tuple(self.alive.shape)} and weights (G, "
                              f"{', '.join(map(str, self.alive.shape))}), found {tuple(alive.shape)} and "
                              f"{tuple(weights.shape)}")
        saved = self._host_alive, getattr(self, "_candidate_weights", None)
        self._host_alive, self._candidate_weights = alive.bool().tolist(), weights
        try:
            yield
        finally:
            self._host_alive, self._candidate_weights = saved

    def set_alive(self, alive: torch.Tensor) -> None:
        """Set the (2, 9, n_ops) live-op mask (op 0, ``none``, must stay dead)."""
        if tuple(alive.shape) != tuple(self.alive.shape):
            raise ConfigError(f"expected an alive mask of shape {tuple(self.alive.shape)}, found {tuple(alive.shape)}")
        if alive[..., 0].any():
            raise ConfigError("op 0 ('none') can never be live")
        self.alive.copy_(alive.to(torch.bool))

    def genotype(self) -> Genotype:
        """The genotype of the current mask (§2.4)."""
        return genotype_from_alive(self.alive, self.space)

    # --------------------------------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> pooled features (B, num_features) after the final norm + ReLU."""
        alive = self._host_alive if self._host_alive is not None else self.alive.tolist()
        weights = getattr(self, "_candidate_weights", None)
        if weights is not None:
            n_groups = weights.shape[0]
            if x.shape[0] % n_groups:
                raise ConfigError(f"{n_groups} candidate masks need a batch divisible by {n_groups}, "
                                  f"found {x.shape[0]}")
            weights = weights.to(x.dtype).repeat_interleave(x.shape[0] // n_groups, dim=0)  # (B, 2, 9, n_ops)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            cw = None if weights is None else weights[:, int(cell.reduction)]
            s0, s1 = s1, cell(s0, s1, alive[int(cell.reduction)], self.share_inputs, cw)
        return self.global_pool(self.lastact(s1)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


# ------------------------------------------------------------------------------------------------- helpers
def initial_alive(n_ops: int) -> torch.Tensor:
    """(2, 9, n_ops) mask with every op live except ``none``."""
    alive = torch.ones(2, NUM_EDGES, n_ops, dtype=torch.bool)
    alive[..., 0] = False
    return alive


def candidate_weights(alives: torch.Tensor) -> torch.Tensor:
    """(G, 2, 9, n_ops) masks -> float64 op weights of the same shape: ``1/k`` on the ``k`` live ops of an edge,
    0 on dead ops and on every op of a removed edge (what each sample of a batched forward weighs an op by)."""
    live = alives.to(torch.float64)
    return live / live.sum(-1, keepdim=True).clamp(min=1)


def alive_weights(alive: torch.Tensor) -> torch.Tensor:
    """Softmax weights the reference's alphas give a mask: ``1/k`` on the k live ops, ``1/n_ops`` if none live."""
    alive = alive.to(torch.float64)
    k = alive.sum(-1, keepdim=True)
    return torch.where(k > 0, alive / k.clamp(min=1), torch.full_like(alive, 1.0 / alive.shape[-1]))


def genotype_from_weights(weights: torch.Tensor, space: Sequence[str]) -> Genotype:
    """§2.4: per node keep the 2 edges with the largest non-``none`` weight (stable), each with its best op."""
    cells = []
    for c in range(2):
        nodes = []
        for edge_ids in NODE_EDGES:
            best = [(float(weights[c, e, 1:].max()), e) for e in edge_ids]
            kept = sorted(best, key=lambda t: -t[0])[:2]  # stable: ties keep ascending input order
            kept = sorted(kept, key=lambda t: t[1])
            pairs = []
            for _, e in kept:
                op = 1 + int(torch.argmax(weights[c, e, 1:]))
                pairs.append((space[op], EDGES[e][1]))
            nodes.append(pairs)
        cells.append(nodes)
    return Genotype(normal=cells[0], reduce=cells[1])


def genotype_from_alive(alive: torch.Tensor, space: Sequence[str]) -> Genotype:
    """Genotype of a mask, through the reference's softmax weights."""
    return genotype_from_weights(alive_weights(alive.cpu()), space)


def convert_batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d(C) in place by GroupNorm(min(16, C), C, affine) (opacus ``groupnorm16``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            groups = min(16, c)
            if c % groups:
                raise ConfigError(f"GroupNorm(min(16, C), C) needs C divisible by min(16, C); a layer has C={c} "
                                  f"(choose channels so every width is a multiple of 16 or at most 16)")
            setattr(module, name, nn.GroupNorm(groups, c, affine=child.affine))
        else:
            convert_batchnorm_to_groupnorm(child)
    return module


@torch.no_grad()
def reset_parameters(module: nn.Module, generator: torch.Generator, init: str = "default") -> nn.Module:
    """Re-draw every parameter from ``generator``.

    ``"default"`` is PyTorch's default init, which the reference really ran (its Kaiming call is a no-op,
    §4.6): conv/linear weights and biases ~ U(+-1/sqrt(fan_in)), norm weight 1, bias 0. ``"kaiming"`` is the
    paper's text: conv/linear weights ~ N(0, 2/fan_in), biases 0.
    """
    if init not in _INITS:
        raise ConfigError(f"init must be one of {_INITS}, found {init!r}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            w = m.weight
            if init == "default":
                bound = 1.0 / math.sqrt(fan_in)
                w.copy_((torch.rand(w.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
            else:
                w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            if m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
    return module
