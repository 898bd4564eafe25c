"""The candidate operations of the few-shot DARTS space, exactly as MetaNTK-NAS defines them.

Layer orders follow ``reference/method-facts.md`` §1 (MNN ``lib/models/cell_operations.py``, identical to its
evaluation ops): every conv has ``bias=False``, every norm is an affine ``BatchNorm2d``, ``conv_3x3`` is a
depthwise-separable unit (not a dense conv), ``conv_1x5_5x1`` runs 1x5 first (carrying the stride), pools are
followed by BatchNorm, and a stride-2 ``skip_connect`` is :class:`FactorizedReduce`. ReLUs are out-of-place so
that per-sample-gradient hooks (opacus, the hook Gram) see clean autograd graphs.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137; DARTS ops: https://arxiv.org/abs/1806.09055.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OPS",
    "SEARCH_SPACES",
    "DARTS_FEWSHOT",
    "ReLUConvBN",
    "DilConv",
    "SepConv",
    "FacConv",
    "PoolBN",
    "Identity",
    "Zero",
    "FactorizedReduce",
    "cell_preprocess",
]


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k, stride, pad) -> BN; the cell input preprocessing uses the 1x1 form."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_chs, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> depthwise Conv(k, stride, pad, dilation) -> pointwise Conv 1x1 -> BN (one SepConv unit)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, in_chs, kernel_size, stride, padding, dilation=dilation, groups=in_chs, bias=False),
            nn.Conv2d(in_chs, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs, affine=affine),
        )

    @property
    def leading_relu(self) -> nn.Module:
        """The ``nn.ReLU`` the op starts with."""
        return self.op[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def forward_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on an input that already went through :attr:`leading_relu` (``forward(x)`` is this of ReLU(x))."""
        return self.op[1:](r)


class SepConv(nn.Module):
    """``sep_conv_3x3`` ("DualSepConv"): two stacked :class:`DilConv` units, the first carrying the stride."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__()
        self.op_a = DilConv(in_chs, in_chs, kernel_size, stride, padding, dilation, affine)
        self.op_b = DilConv(in_chs, out_chs, kernel_size, 1, padding, dilation, affine)

    @property
    def leading_relu(self) -> nn.Module:
        """The ``nn.ReLU`` the op starts with."""
        return self.op_a.leading_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op_b(self.op_a(x))

    def forward_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on an input that already went through :attr:`leading_relu`."""
        return self.op_b(self.op_a.forward_relu(r))


class FacConv(nn.Module):
    """``conv_1x5_5x1``: ReLU -> Conv(1, k) with the stride -> Conv(k, 1) -> BN (dense convs)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_length: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, in_chs, (1, kernel_length), stride, (0, padding), bias=False),
            nn.Conv2d(in_chs, out_chs, (kernel_length, 1), 1, (padding, 0), bias=False),
            nn.BatchNorm2d(out_chs, affine=affine),
        )

    @property
    def leading_relu(self) -> nn.Module:
        """The ``nn.ReLU`` the op starts with."""
        return self.op[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def forward_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on an input that already went through :attr:`leading_relu`."""
        return self.op[1:](r)


class PoolBN(nn.Module):
    """``avg_pool_3x3BN`` / ``max_pool_3x3BN``: 3x3 pool (avg excludes padding) -> BN."""

    def __init__(self, pool_type: str, chs: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        if pool_type == "avg":
            self.pool: nn.Module = nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)
        elif pool_type == "max":
            self.pool = nn.MaxPool2d(kernel_size, stride, padding)
        else:
            raise ValueError(f"pool_type must be 'avg' or 'max', found {pool_type!r}")
        self.bn = nn.BatchNorm2d(chs, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))


class Identity(nn.Module):
    """``skip_connect`` with stride 1 (no parameters, never followed by drop-path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """``none``: zeros of the op's output shape (stride 2 halves the spatial size, rounding down)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x * 0.0
        n, c, h, w = x.shape
        return x.new_zeros(n, c, h // self.stride, w // self.stride)


class FactorizedReduce(nn.Module):
    """Stride-2 ``skip_connect`` and reduction preprocessing.

    ReLU -> two 1x1 stride-2 convs, the first (``out_chs // 2`` channels) on ``x``, the second on ``x`` shifted
    by one pixel (zero-pad right and bottom, drop the first row and column; works for odd sizes) -> concat -> BN.
    """

    def __init__(self, in_chs: int, out_chs: int, affine: bool = True):
        super().__init__()
        half = out_chs // 2
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_chs, half, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(in_chs, out_chs - half, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, affine=affine)

    @property
    def leading_relu(self) -> nn.Module:
        """The ``nn.ReLU`` the op starts with."""
        return self.relu

    @staticmethod
    def shift(x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the same shape moved up-left by one pixel (zero-padded right and bottom), a strided view."""
        return F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_relu(self.relu(x))

    def forward_relu(self, r: torch.Tensor, shifted: torch.Tensor | None = None) -> torch.Tensor:
        """The op on an input that already went through :attr:`leading_relu`; ``shifted``: ``shift(r)`` if
        already computed."""
        shifted = self.shift(r) if shifted is None else shifted
        return self.bn(torch.cat([self.conv_1(r), self.conv_2(shifted)], dim=1))


def cell_preprocess(prev_prev_chs: int, prev_chs: int, chs: int, reduction_prev: bool) -> tuple[nn.Module, nn.Module]:
    """A cell's input preprocessing (``preprocess0``, ``preprocess1``), the same in search and evaluation cells.

    Input 0 (the cell two back) is factor-reduced when the previous cell reduced, else ReLU-Conv1x1-BN; input 1
    is always ReLU-Conv1x1-BN. Both map to the cell width ``chs``.
    """
    pre0 = FactorizedReduce(prev_prev_chs, chs) if reduction_prev else ReLUConvBN(prev_prev_chs, chs, 1, 1, 0)
    return pre0, ReLUConvBN(prev_chs, chs, 1, 1, 0)


OpFn = Callable[[int, int, bool], nn.Module]

#: op name -> ``fn(chs, stride, affine) -> nn.Module``; inside a cell every op maps ``chs`` to ``chs`` channels.
OPS: dict[str, OpFn] = {
    "none": lambda c, stride, affine: Zero(stride),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, 1, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "avg_pool_3x3BN": lambda c, stride, affine: PoolBN("avg", c, 3, stride, 1, affine),
    "max_pool_3x3BN": lambda c, stride, affine: PoolBN("max", c, 3, stride, 1, affine),
    "conv_1x5_5x1": lambda c, stride, affine: FacConv(c, c, 5, stride, 2, affine),
    "conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 1, 1, affine),
}

#: The few-shot DARTS search space in MNN's op-index order (index 0, ``none``, is never a candidate).
DARTS_FEWSHOT: tuple[str, ...] = (
    "none",
    "skip_connect",
    "sep_conv_3x3",
    "dil_conv_3x3",
    "avg_pool_3x3BN",
    "max_pool_3x3BN",
    "conv_1x5_5x1",
    "conv_3x3",
)

SEARCH_SPACES: dict[str, tuple[str, ...]] = {"darts_fewshot": DARTS_FEWSHOT}
