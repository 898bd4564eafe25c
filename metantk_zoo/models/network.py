"""Evaluation cells and the stacked few-shot network, implementing the timm model contract.

Follows MetaNTK-NAS's evaluation network (``AugmentCNN``; ``reference/method-facts.md`` §2-3): a 3x3 stem with
BatchNorm and no stride, ``num_cells`` cells with reductions at ``floor(L/3)`` and ``floor(2L/3)``, the cell width
doubling at each reduction, every non-identity op followed by drop-path, then global average pooling (no final
BN/ReLU) into ``3 * 4 * init_channels`` = 576 features and a linear classifier. The reference's 20 unused dummy
"alpha" scalars are not reproduced, so parameter counts are 20 lower than the reference logs.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath
from torch import nn

from ..genotype import Genotype, GenotypeLike
from .ops import OPS, Identity, cell_preprocess

__all__ = ["Cell", "FewShotNetwork", "reduction_indices"]


def reduction_indices(num_cells: int) -> tuple[int, int]:
    """0-based indices of the two reduction cells: ``floor(L/3)`` and ``floor(2L/3)``."""
    return num_cells // 3, 2 * num_cells // 3


class Cell(nn.Module):
    """One evaluation cell of a genotype: two preprocessed inputs, 3 nodes, output = concat of nodes.

    Args:
        genotype: the cell pair; ``reduction`` picks which cell is built.
        prev_prev_chs: channels of input 0 (the cell two back).
        prev_chs: channels of input 1 (the previous cell).
        chs: the cell's internal width C; the output has ``3 * chs`` channels.
        reduction: build the reduction cell (stride 2 on edges from the inputs).
        reduction_prev: the previous cell reduced, so input 0 is twice the size and is factor-reduced.
        drop_path_rate: initial drop-path probability after each non-identity op.
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
    ):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocess(prev_prev_chs, prev_chs, chs, reduction_prev)
        nodes = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.inputs = tuple(idx for node in nodes for _, idx in node)  # 2 per node
        ops = []
        for node in nodes:
            for op_name, idx in node:
                stride = 2 if reduction and idx < 2 else 1
                op = OPS[op_name](chs, stride, True)
                if not isinstance(op, Identity):
                    op = nn.Sequential(op, DropPath(drop_path_rate))
                ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        for n in range(len(self.ops) // 2):
            a, b = 2 * n, 2 * n + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
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

    Shapes: input (B, in_chans, H, W); ``forward_features`` -> (B, 576, H/4, W/4) for the defaults;
    ``forward_head(pre_logits=True)`` -> (B, 576); ``forward`` -> (B, num_classes).
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
        **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) for a metantk model: {', '.join(sorted(kwargs))}")
        if num_cells < 3:
            raise ValueError(f"num_cells must be >= 3 (two reduction cells and a normal one), found {num_cells}")
        if init_channels < 2:
            raise ValueError(f"init_channels must be >= 2, found {init_channels}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', found {global_pool!r}")
        self.genotype = Genotype.coerce(genotype)
        self.num_cells = num_cells
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool_type = global_pool

        stem_chs = stem_multiplier * init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_chs),
        )
        reductions = reduction_indices(num_cells)
        prev_prev_chs, prev_chs, chs = stem_chs, stem_chs, init_channels
        cells, reduction_prev, reduction_factor = [], False, 1
        self.feature_info: list[dict[str, Any]] = []
        for i in range(num_cells):
            reduction = i in reductions
            if reduction:
                chs *= feature_scale_rate
                # the last cell before this reduction closes a stage
                if i > 0:
                    self.feature_info.append(dict(num_chs=prev_chs, reduction=reduction_factor, module=f"cells.{i - 1}"))
                reduction_factor *= 2
            cells.append(Cell(self.genotype, prev_prev_chs, prev_chs, chs, reduction, reduction_prev, drop_path_rate))
            reduction_prev = reduction
            prev_prev_chs, prev_chs = prev_chs, len(self.genotype.normal_concat) * chs
        self.cells = nn.ModuleList(cells)
        self.feature_info.append(dict(num_chs=prev_chs, reduction=reduction_factor, module=f"cells.{num_cells - 1}"))
        self.num_features = self.head_hidden_size = prev_chs

        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
        self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Linear(prev_chs, num_classes) if num_classes > 0 else nn.Identity()

    # ------------------------------------------------------------------------------------ timm contract
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh ``num_classes``-way linear layer (0: identity, features out)."""
        if global_pool is not None and global_pool != self.global_pool_type:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', found {global_pool!r}")
            self.global_pool_type = global_pool
            self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
            self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.classifier = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError("gradient checkpointing is not supported by metantk models")

    def set_drop_path_rate(self, rate: float) -> None:
        """Set the drop-path probability of every cell op (RFS ramps it linearly over the epochs)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop-path rate must be in [0, 1), found {rate}")
        for m in self.modules():
            if isinstance(m, DropPath):
                m.drop_prob = rate

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> last cell output (B, num_features, H/4, W/4)."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (B, C, h, w) -> (B, C); with ``pre_logits`` return the 576-d features, else the logits."""
        x = self.flatten(self.global_pool(x))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
