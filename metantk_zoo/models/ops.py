"""The candidate operations of the few-shot DARTS space, exactly as MetaNTK-NAS defines them.

Layer orders follow ``reference/method-facts.md`` §1 (MNN ``lib/models/cell_operations.py``, identical to its
evaluation ops): every conv has ``bias=False``, every norm is an affine ``BatchNorm2d``, ``conv_3x3`` is a
depthwise-separable unit (not a dense conv), ``conv_1x5_5x1`` runs 1x5 first (carrying the stride), pools are
followed by BatchNorm, and a stride-2 ``skip_connect`` is :class:`FactorizedReduce`. ReLUs are out-of-place so
that per-sample-gradient hooks (opacus, the hook Gram) see clean autograd graphs.

Every op takes timm's factory kwargs ``device`` and ``dtype`` (parameters and buffers are created there), and
every ``forward`` is TorchScript- and ``torch.fx``-compatible (no tuple unpacking of shapes, no slicing of
``nn.Sequential`` on the forward path; the ``leading_relu`` properties, used only by the search supernet, are
kept out of TorchScript with ``__jit_unused_properties__``).

MetaNTK-NAS: https://arxiv.org/abs/2203.09137; DARTS ops: https://arxiv.org/abs/1806.09055.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False, **dd),
            nn.BatchNorm2d(out_chs, affine=affine, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> depthwise Conv(k, stride, pad, dilation) -> pointwise Conv 1x1 -> BN (one SepConv unit)."""

    __jit_unused_properties__ = ["leading_relu"]

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, dilation: int,
        affine: bool = True, device: Any = None, dtype: torch.dtype | None = None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, in_chs, kernel_size, stride, padding, dilation=dilation, groups=in_chs, bias=False, **dd),
            nn.Conv2d(in_chs, out_chs, 1, bias=False, **dd),
            nn.BatchNorm2d(out_chs, affine=affine, **dd),
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

    __jit_unused_properties__ = ["leading_relu"]

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, dilation: int,
        affine: bool = True, device: Any = None, dtype: torch.dtype | None = None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op_a = DilConv(in_chs, in_chs, kernel_size, stride, padding, dilation, affine, **dd)
        self.op_b = DilConv(in_chs, out_chs, kernel_size, 1, padding, dilation, affine, **dd)

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

    __jit_unused_properties__ = ["leading_relu"]

    def __init__(self, in_chs: int, out_chs: int, kernel_length: int, stride: int, padding: int, affine: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, in_chs, (1, kernel_length), stride, (0, padding), bias=False, **dd),
            nn.Conv2d(in_chs, out_chs, (kernel_length, 1), 1, (padding, 0), bias=False, **dd),
            nn.BatchNorm2d(out_chs, affine=affine, **dd),
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

    def __init__(self, pool_type: str, chs: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None):
        super().__init__()
        if pool_type == "avg":
            self.pool: nn.Module = nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)
        elif pool_type == "max":
            self.pool = nn.MaxPool2d(kernel_size, stride, padding)
        else:
            raise ValueError(f"pool_type must be 'avg' or 'max', found {pool_type!r}")
        self.bn = nn.BatchNorm2d(chs, affine=affine, device=device, dtype=dtype)

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
        # indexed, not unpacked: torch.fx cannot iterate a traced shape
        return x.new_zeros(x.shape[0], x.shape[1], x.shape[2] // self.stride, x.shape[3] // self.stride)


class FactorizedReduce(nn.Module):
    """Stride-2 ``skip_connect`` and reduction preprocessing.

    ReLU -> two 1x1 stride-2 convs, the first (``out_chs // 2`` channels) on ``x``, the second on ``x`` shifted
    by one pixel (zero-pad right and bottom, drop the first row and column; works for odd sizes) -> concat -> BN.
    """

    __jit_unused_properties__ = ["leading_relu"]

    def __init__(self, in_chs: int, out_chs: int, affine: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        half = out_chs // 2
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_chs, half, 1, stride=2, bias=False, **dd)
        self.conv_2 = nn.Conv2d(in_chs, out_chs - half, 1, stride=2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, affine=affine, **dd)

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


def cell_preprocess(
    prev_prev_chs: int, prev_chs: int, chs: int, reduction_prev: bool, device: Any = None,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Module, nn.Module]:
    """A cell's input preprocessing (``preprocess0``, ``preprocess1``), the same in search and evaluation cells.

    Input 0 (the cell two back) is factor-reduced when the previous cell reduced, else ReLU-Conv1x1-BN; input 1
    is always ReLU-Conv1x1-BN. Both map to the cell width ``chs``.
    """
    dd = dict(device=device, dtype=dtype)
    if reduction_prev:
        pre0: nn.Module = FactorizedReduce(prev_prev_chs, chs, **dd)
    else:
        pre0 = ReLUConvBN(prev_prev_chs, chs, 1, 1, 0, **dd)
    return pre0, ReLUConvBN(prev_chs, chs, 1, 1, 0, **dd)


OpFn = Callable[..., nn.Module]

#: op name -> ``fn(chs, stride, affine, device=None, dtype=None) -> nn.Module``; inside a cell every op maps
#: ``chs`` to ``chs`` channels.
OPS: dict[str, OpFn] = {
    "none": lambda c, stride, affine, **dd: Zero(stride),
    "skip_connect": lambda c, stride, affine, **dd: Identity() if stride == 1 else FactorizedReduce(c, c, affine, **dd),
    "sep_conv_3x3": lambda c, stride, affine, **dd: SepConv(c, c, 3, stride, 1, 1, affine, **dd),
    "dil_conv_3x3": lambda c, stride, affine, **dd: DilConv(c, c, 3, stride, 2, 2, affine, **dd),
    "avg_pool_3x3BN": lambda c, stride, affine, **dd: PoolBN("avg", c, 3, stride, 1, affine, **dd),
    "max_pool_3x3BN": lambda c, stride, affine, **dd: PoolBN("max", c, 3, stride, 1, affine, **dd),
    "conv_1x5_5x1": lambda c, stride, affine, **dd: FacConv(c, c, 5, stride, 2, affine, **dd),
    "conv_3x3": lambda c, stride, affine, **dd: DilConv(c, c, 3, stride, 1, 1, affine, **dd),
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
