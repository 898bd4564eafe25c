"""Evaluation cells and the stacked few-shot network, implementing the timm model contract.

Follows MetaNTK-NAS's evaluation network (``AugmentCNN``; ``reference/method-facts.md`` §2-3): a 3x3 stem with
BatchNorm and no stride, ``num_cells`` cells with reductions at ``floor(L/3)`` and ``floor(2L/3)``, the cell width
doubling at each reduction, every non-identity op followed by drop-path, then global average pooling (no final
BN/ReLU) into ``3 * 4 * init_channels`` = 576 features and a linear classifier. The reference's 20 unused dummy
"alpha" scalars are not reproduced, so parameter counts are 20 lower than the reference logs.

The whole of timm's model API is implemented: ``device``/``dtype`` factory kwargs, TorchScript / ``torch.fx`` /
``torch.export`` compatible forwards (the cell wiring is data held in integer lists, not genotype logic),
``forward_intermediates`` / ``prune_intermediate_layers`` (so ``features_only`` uses timm's getter wrapper),
real gradient checkpointing per cell, ``group_matcher`` and ``no_weight_decay``.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

# no `from __future__ import annotations`: torch.fx copies the forward's annotations into generated code,
# which TorchScript then has to resolve (timm's fx + script test)
from typing import Any

import torch
import torch.utils.checkpoint
from timm.layers import DropPath
from torch import nn

from ..genotype import Genotype, GenotypeLike
from .ops import OPS, Identity, cell_preprocess

__all__ = ["Cell", "FewShotNetwork", "reduction_indices"]


def reduction_indices(num_cells: int) -> tuple[int, int]:
    """0-based indices of the two reduction cells: ``floor(L/3)`` and ``floor(2L/3)``."""
    return num_cells // 3, 2 * num_cells // 3


def _take_indices(num: int, indices: int | list[int] | None) -> tuple[list[int], int]:
    """timm's rule for ``indices`` (None: all, int n: the last n, list: as given, negative from the end), scriptable.

    Returns the absolute indices and the largest one.
    """
    if indices is None:
        indices = num
    take: list[int] = []
    if isinstance(indices, int):
        if indices < 1 or indices > num:
            raise ValueError(f"indices: last-n must be in 1..{num}, found {indices}")
        take = [num - indices + i for i in range(indices)]
    else:
        for i in indices:
            idx = num + i if i < 0 else i
            if idx < 0 or idx >= num:
                raise ValueError(f"indices: {i} is out of range for {num} stages")
            take.append(idx)
    if len(take) == 0:
        raise ValueError("indices: select at least one stage")
    return take, max(take)


class Cell(nn.Module):
    """One evaluation cell of a genotype: two preprocessed inputs, 3 nodes, output = concat of nodes.

    The wiring is plain data: ``ops[2n]`` and ``ops[2n + 1]`` feed node ``n`` from states ``inputs[2n]`` and
    ``inputs[2n + 1]`` (0, 1: the preprocessed inputs; 2+: earlier nodes), and the output concatenates the states
    listed in ``concat``. Both are ``list[int]``, so the forward scripts, traces and exports as it is.

    Args:
        genotype: the cell pair; ``reduction`` picks which cell is built.
        prev_prev_chs: channels of input 0 (the cell two back).
        prev_chs: channels of input 1 (the previous cell).
        chs: the cell's internal width C; the output has ``3 * chs`` channels.
        reduction: build the reduction cell (stride 2 on edges from the inputs).
        reduction_prev: the previous cell reduced, so input 0 is twice the size and is factor-reduced.
        drop_path_rate: initial drop-path probability after each non-identity op.
        device: where parameters and buffers are created (timm's factory kwarg).
        dtype: their floating point type.
    """

    def __init__(
        self,
        genotype: Genotype,
        prev_prev_chs: int,
        prev_chs: int,
        chs: int,
        reduction: bool,
        reduction_prev: bool,
        drop_path_rate: float = 0.0,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocess(prev_prev_chs, prev_chs, chs, reduction_prev, **dd)
        nodes = genotype.reduce if reduction else genotype.normal
        self.concat: list[int] = [int(i) for i in (genotype.reduce_concat if reduction else genotype.normal_concat)]
        self.inputs: list[int] = [int(idx) for node in nodes for _, idx in node]  # 2 per node
        ops = []
        for node in nodes:
            for op_name, idx in node:
                stride = 2 if reduction and idx < 2 else 1
                op = OPS[op_name](chs, stride, True, **dd)
                if not isinstance(op, Identity):
                    op = nn.Sequential(op, DropPath(drop_path_rate))
                ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        first = states[0]
        for i, op in enumerate(self.ops):
            y = op(states[self.inputs[i]])  # (B, C, H', W')
            if i % 2 == 0:
                first = y
            else:
                states.append(first + y)  # node = its first op's output + its second op's output
        return torch.cat([states[i] for i in self.concat], dim=1)  # (B, 3C, H', W')


class FewShotNetwork(nn.Module):
    """A genotype stacked into the MetaNTK-NAS evaluation network, with timm's model interface.

    Args:
        genotype: a :class:`Genotype`, DARTS or JSON text, or a JSON dict.
        num_cells: number of cells L (5 and 8 in the paper); reductions at ``L//3`` and ``2L//3``.
        init_channels: cell width C of the first stage (48 in the paper).
        num_classes: classifier outputs (64 = mini-ImageNet base classes); 0 gives an identity head.
        in_chans: input channels.
        stem_multiplier: stem width = ``stem_multiplier * init_channels`` (1 here; MetaNAS uses 3).
        feature_scale_rate: width factor at each reduction (2 here; MetaNAS uses 1).
        drop_rate: dropout before the classifier (0 in the paper).
        drop_path_rate: drop-path probability after every non-identity op (RFS ramps it per epoch).
        global_pool: ``'avg'`` (the paper) or ``''`` for no pooling in :meth:`forward_head`.
        device: where parameters and buffers are created (timm's factory kwarg, e.g. ``'meta'`` or ``'cuda'``).
        dtype: their floating point type (e.g. ``torch.bfloat16``).

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: too few cells, too narrow, or an unknown ``global_pool``.

    Shapes: input (B, in_chans, H, W); ``forward_features`` -> (B, 576, H/4, W/4) for the defaults;
    ``forward_head(pre_logits=True)`` -> (B, 576); ``forward`` -> (B, num_classes).
    ``feature_info`` lists the three stage outputs (the cells before each reduction and the last cell) at
    reductions 1, 2 and 4: the taps of :meth:`forward_intermediates` and of ``features_only=True``.
    """

    def __init__(
        self,
        genotype: GenotypeLike,
        num_cells: int = 5,
        init_channels: int = 48,
        num_classes: int = 64,
        in_chans: int = 3,
        stem_multiplier: int = 1,
        feature_scale_rate: int = 2,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        device: Any = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) for a metantk model: {', '.join(sorted(kwargs))}")
        if num_cells < 3:
            raise ValueError(f"num_cells must be >= 3 (two reduction cells and a normal one), found {num_cells}")
        if init_channels < 2:
            raise ValueError(f"init_channels must be >= 2, found {init_channels}")
        _check_pool(global_pool)
        dd = dict(device=device, dtype=dtype)
        self.genotype = Genotype.coerce(genotype)
        self.num_cells = num_cells
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.global_pool_type = global_pool
        self.grad_checkpointing = False

        stem_chs = stem_multiplier * init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, stride=1, padding=1, bias=False, **dd),
            nn.BatchNorm2d(stem_chs, **dd),
        )
        reductions = reduction_indices(num_cells)
        prev_prev_chs, prev_chs, chs = stem_chs, stem_chs, init_channels
        cells, reduction_prev, reduction_factor = [], False, 1
        feature_info: list[dict[str, Any]] = []
        stage_ends: list[int] = []
        for i in range(num_cells):
            reduction = i in reductions
            if reduction:
                chs *= feature_scale_rate
                # the last cell before this reduction closes a stage
                if i > 0:
                    info = dict(num_chs=prev_chs, reduction=reduction_factor, module=f"cells.{i - 1}")
                    feature_info.append(info)
                    stage_ends.append(i - 1)
                reduction_factor *= 2
            cells.append(
                Cell(self.genotype, prev_prev_chs, prev_chs, chs, reduction, reduction_prev, drop_path_rate, **dd)
            )
            reduction_prev = reduction
            prev_prev_chs, prev_chs = prev_chs, len(self.genotype.normal_concat) * chs
        self.cells = nn.ModuleList(cells)
        feature_info.append(dict(num_chs=prev_chs, reduction=reduction_factor, module=f"cells.{num_cells - 1}"))
        self.feature_info = feature_info
        stage_ends.append(num_cells - 1)
        #: cell index of each ``feature_info`` entry (the taps of ``forward_intermediates``)
        self.stage_ends: list[int] = stage_ends
        self.num_features = self.head_hidden_size = prev_chs

        self.global_pool, self.flatten = _pool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Linear(prev_chs, num_classes, **dd) if num_classes > 0 else nn.Identity()

    # ------------------------------------------------------------------------------------ timm contract
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh ``num_classes``-way linear layer (0: identity, features out).

        The new layer is created on the device and dtype of the model's parameters and in its train/eval mode;
        ``global_pool=None`` keeps the current pooling.
        """
        if global_pool is not None and global_pool != self.global_pool_type:
            _check_pool(global_pool)
            self.global_pool_type = global_pool
            self.global_pool, self.flatten = _pool(global_pool)
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.classifier = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        for m in (self.global_pool, self.flatten, self.classifier):
            m.train(self.training)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay: the stem, then one group per cell (``coarse``: per stage).

        Returns:
            timm's matcher dict (``timm.models.group_parameters``); the head falls into the last group.
        """
        if not coarse:
            return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")
        starts = [0] + [e + 1 for e in self.stage_ends[:-1]]
        ends = list(self.stage_ends)
        blocks = [
            (r"^cells\.(?:" + "|".join(str(c) for c in range(a, b + 1)) + r")\.", (stage,))
            for stage, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]
        return dict(stem=r"^stem", blocks=blocks)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """No parameter is exempt by name: RFS decays every weight (timm's optimizer factory already exempts
        1-d parameters, i.e. BatchNorm affines and biases, when asked to)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each cell in the backward pass instead of storing its activations (less memory, more time).

        Uses non-reentrant ``torch.utils.checkpoint`` per cell; not active under TorchScript. In train mode the
        recomputation updates BatchNorm running statistics a second time, as for every checkpointed timm model.
        """
        self.grad_checkpointing = enable

    def set_drop_path_rate(self, rate: float) -> None:
        """Set the drop-path probability of every cell op (RFS ramps it linearly over the epochs)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop-path rate must be in [0, 1), found {rate}")
        for m in self.modules():
            if isinstance(m, DropPath):
                m.drop_prob = rate

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The forward pass with the stage outputs of ``feature_info`` taken on the way (timm >= 1.0's API).

        Args:
            x: (B, in_chans, H, W).
            indices: stages to take: ``None`` all three, an int ``n`` the last n, a list the given (negative
                from the end).
            norm: accepted for timm's API; the network has no final norm, so intermediates are returned as is.
            stop_early: stop after the last stage taken (the returned features are then that stage's output).
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list of intermediates.

        Returns:
            ``(features, [stage outputs])``, features as :meth:`forward_features` (B, num_features, H/4, W/4);
            stage ``k`` is (B, ``feature_info[k]['num_chs']``, H/r, W/r) with r = 1, 2, 4.

        Raises:
            ValueError: ``output_fmt`` other than ``'NCHW'``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW', found '" + output_fmt + "'")
        take_indices, max_index = _take_indices(len(self.stage_ends), indices)
        take_cells = [self.stage_ends[i] for i in take_indices]
        last_cell = self.stage_ends[max_index] if stop_early else len(self.cells) - 1
        intermediates: list[torch.Tensor] = []
        s0 = s1 = self.stem(x)  # (B, C_stem, H, W)
        for i, cell in enumerate(self.cells):
            if i <= last_cell:
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    s0, s1 = s1, torch.utils.checkpoint.checkpoint(cell, s0, s1, use_reentrant=False)
                else:
                    s0, s1 = s1, cell(s0, s1)
                if i in take_cells:
                    intermediates.append(s1)
        if intermediates_only:
            return intermediates
        return s1, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the cells after the last stage in ``indices`` (and, with ``prune_head``, pooling and classifier).

        Returns:
            The absolute stage indices kept, for :meth:`forward_intermediates`.
        """
        take_indices, max_index = _take_indices(len(self.stage_ends), indices)
        self.cells = self.cells[: self.stage_ends[max_index] + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> last cell output (B, num_features, H/4, W/4)."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                s0, s1 = s1, torch.utils.checkpoint.checkpoint(cell, s0, s1, use_reentrant=False)
            else:
                s0, s1 = s1, cell(s0, s1)  # (B, 3C, H', W')
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (B, C, h, w) -> (B, C); with ``pre_logits`` return the 576-d features, else the logits."""
        x = self.flatten(self.global_pool(x))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '', found {global_pool!r}")


def _pool(global_pool: str) -> tuple[nn.Module, nn.Module]:
    if global_pool == "avg":
        return nn.AdaptiveAvgPool2d(1), nn.Flatten(1)
    return nn.Identity(), nn.Identity()
