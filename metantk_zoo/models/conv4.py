"""The Conv4 backbone of MAML and ANIL (``metantk_conv4``), registered in timm with the zoo's contract.

Four blocks of conv3x3 (padding 1) -> BatchNorm -> ReLU -> 2x2 max-pool, ``width`` filters each (32 on
mini-ImageNet, Finn et al. 2017, https://arxiv.org/abs/1703.03400, §5.2; the baseline rows of MetaNTK-NAS's
Table 1, https://arxiv.org/abs/2203.09137), then the feature map flattened into a linear head. At 84x84 the map
is 5x5, so the head sees ``25 * width`` = 800 features, as in MAML. Other input sizes are adaptively average-pooled
to the map size of ``img_size`` first, so any size works with the same head; ``global_pool='avg'`` gives a
``width``-d globally pooled head instead, ``''`` no pooling at all (the head then sees the 4-d map).

timm's naming: ``num_features`` is the channel count of :meth:`Conv4.forward_features` (``width``),
``head_hidden_size`` the size of the pooled, flattened pre-logits (800 for the MAML head).

BatchNorm: the module is ordinary; the meta-learning algorithms (:mod:`metantk_zoo.meta`) run it in train mode
(batch statistics) in the inner loop, the outer loop and at test time, the MAML convention.
"""

# no `from __future__ import annotations`: torch.fx copies the forward's annotations into generated code,
# which TorchScript then has to resolve (timm's fx + script test)
from typing import Any

import torch
import torch.utils.checkpoint
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ._registry import _cfg, check_pretrained_source
from .network import _take_indices

__all__ = ["Conv4", "CONV4_WIDTH", "CONV4_DESCRIPTION"]

#: MAML's filter count on mini-ImageNet
CONV4_WIDTH = 32
CONV4_DESCRIPTION = "MAML / ANIL Conv4 (Finn et al. 2017): 4 x conv3x3-BN-ReLU-maxpool, flattened 5x5 map at 84px"
_POOLS = ("flatten", "avg", "")


def _block(in_chs: int, out_chs: int, device: Any = None, dtype: torch.dtype | None = None) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 3, padding=1, device=device, dtype=dtype),
        nn.BatchNorm2d(out_chs, device=device, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """MAML's four-block ConvNet with timm's model interface.

    Args:
        width: filters per block (MAML: 32 on mini-ImageNet, 64 on Omniglot).
        num_classes: classifier outputs; 0 gives an identity head (features out).
        in_chans: input channels.
        img_size: input size the flattened head is laid out for (84: a 5x5 map).
        global_pool: ``'flatten'`` (MAML), ``'avg'`` or ``''`` (no pooling, no flattening).
        drop_rate: dropout before the classifier.
        device: where parameters and buffers are created (timm's factory kwarg).
        dtype: their floating point type.

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: a width below 1, an unknown ``global_pool`` or an ``img_size`` below 16.

    Shapes: input (B, in_chans, H, W); ``forward_features`` -> (B, width, H/16, W/16);
    ``forward_head(pre_logits=True)`` -> (B, head_hidden_size); ``forward`` -> (B, num_classes).
    """

    def __init__(
        self,
        width: int = CONV4_WIDTH,
        num_classes: int = 64,
        in_chans: int = 3,
        img_size: int = 84,
        global_pool: str = "flatten",
        drop_rate: float = 0.0,
        device: Any = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) for metantk_conv4: {', '.join(sorted(kwargs))}")
        if width < 1:
            raise ValueError(f"width must be >= 1, found {width}")
        _check_pool(global_pool)
        if img_size < 16:
            raise ValueError(f"img_size must be >= 16 (four 2x2 poolings), found {img_size}")
        dd = dict(device=device, dtype=dtype)
        self.width, self.num_classes, self.in_chans, self.drop_rate = width, num_classes, in_chans, drop_rate
        self.num_features = width
        self.grad_checkpointing = False
        self.map_size = img_size // 16  # 84 -> 42 -> 21 -> 10 -> 5
        self.stages = nn.Sequential(*[_block(in_chans if i == 0 else width, width, **dd) for i in range(4)])
        self.feature_info = [dict(num_chs=width, reduction=2 ** (i + 1), module=f"stages.{i}") for i in range(4)]
        self._set_pool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier: nn.Module = (
            nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        )

    def _set_pool(self, global_pool: str) -> None:
        self.global_pool_type = global_pool
        if global_pool == "":
            self.global_pool, self.flatten = nn.Identity(), nn.Identity()
            self.head_hidden_size = self.width
            return
        size = self.map_size if global_pool == "flatten" else 1
        self.global_pool, self.flatten = nn.AdaptiveAvgPool2d(size), nn.Flatten(1)
        self.head_hidden_size = self.width * size * size

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
            self._set_pool(global_pool)
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        for m in (self.global_pool, self.flatten, self.classifier):
            m.train(self.training)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay: block 0 as the stem, then one group per block."""
        return dict(stem=r"^stages\.0\.", blocks=r"^stages\.(\d+)")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """No parameter is exempt by name (timm's optimizer factory exempts 1-d parameters when asked to)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (not under TorchScript)."""
        self.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The forward pass with the block outputs taken on the way (timm >= 1.0's API).

        Args:
            x: (B, in_chans, H, W).
            indices: blocks to take: ``None`` all four, an int ``n`` the last n, a list the given (negative from
                the end).
            norm: accepted for timm's API; there is no final norm.
            stop_early: stop after the last block taken.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list of intermediates.

        Returns:
            ``(features, [block outputs])``; block ``k`` is (B, width, H/2^(k+1), W/2^(k+1)).

        Raises:
            ValueError: ``output_fmt`` other than ``'NCHW'``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW', found '" + output_fmt + "'")
        take_indices, max_index = _take_indices(4, indices)
        last = max_index if stop_early else len(self.stages) - 1
        intermediates: list[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            if i <= last:
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
                else:
                    x = stage(x)  # (B, width, H/2^(i+1), W/2^(i+1))
                if i in take_indices:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last one in ``indices`` (and, with ``prune_head``, pooling and classifier).

        Returns:
            The absolute block indices kept, for :meth:`forward_intermediates`.
        """
        take_indices, max_index = _take_indices(4, indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, width, H/16, W/16)."""
        for stage in self.stages:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.global_pool(x))  # (B, head_hidden_size)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_pool(global_pool: str) -> None:
    if global_pool not in _POOLS:
        raise ValueError(f"global_pool must be one of {_POOLS}, found {global_pool!r}")


default_cfgs = generate_default_cfgs(
    {
        "metantk_conv4": _cfg(
            pool_size=(5, 5),
            first_conv="stages.0.0",
            paper_ids=("arXiv:1703.03400", "arXiv:2203.09137"),
            paper_name="Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
            origin_url="https://github.com/cbfinn/maml",
            notes=(CONV4_DESCRIPTION,),
        )
    }
)


@register_model
def metantk_conv4(pretrained: bool = False, **kwargs: Any) -> Conv4:
    """metantk_conv4: MAML/ANIL's Conv4 (4 x conv3x3-BN-ReLU-maxpool, 32 filters, flattened 5x5 map at 84px)."""
    if pretrained:
        check_pretrained_source("metantk_conv4", kwargs)
    return build_model_with_cfg(
        Conv4, "metantk_conv4", pretrained, feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **kwargs
    )
