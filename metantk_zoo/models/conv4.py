"""The Conv4 backbone of MAML and ANIL (``metantk_conv4``), registered in timm with the zoo's contract.

Four blocks of conv3x3 (padding 1) -> BatchNorm -> ReLU -> 2x2 max-pool, ``width`` filters each (32 on
mini-ImageNet, Finn et al. 2017, https://arxiv.org/abs/1703.03400, §5.2; the baseline rows of MetaNTK-NAS's
Table 1, https://arxiv.org/abs/2203.09137), then the feature map flattened into a linear head. At 84x84 the map
is 5x5, so the head sees ``25 * width`` = 800 features, as in MAML. Other input sizes are adaptively average-pooled
to the map size of ``img_size`` first, so any size works with the same head; ``global_pool='avg'`` gives a
``width``-d globally pooled head instead.

BatchNorm: the module is ordinary; the meta-learning algorithms (:mod:`metantk_zoo.meta`) run it in train mode
(batch statistics) in the inner loop, the outer loop and at test time, the MAML convention.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ._registry import _cfg

__all__ = ["Conv4"]


def _block(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 3, padding=1),
        nn.BatchNorm2d(out_chs),
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
        global_pool: ``'flatten'`` (MAML) or ``'avg'``.
        drop_rate: dropout before the classifier.

    Shapes: input (B, in_chans, H, W); ``forward_features`` -> (B, width, H/16, W/16);
    ``forward_head(pre_logits=True)`` -> (B, num_features); ``forward`` -> (B, num_classes).
    """

    def __init__(
        self,
        width: int = 32,
        num_classes: int = 64,
        in_chans: int = 3,
        img_size: int = 84,
        global_pool: str = "flatten",
        drop_rate: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) for metantk_conv4: {', '.join(sorted(kwargs))}")
        if width < 1:
            raise ValueError(f"width must be >= 1, found {width}")
        if global_pool not in ("flatten", "avg"):
            raise ValueError(f"global_pool must be 'flatten' or 'avg', found {global_pool!r}")
        if img_size < 16:
            raise ValueError(f"img_size must be >= 16 (four 2x2 poolings), found {img_size}")
        self.width, self.num_classes, self.drop_rate = width, num_classes, drop_rate
        self.map_size = img_size // 16  # 84 -> 42 -> 21 -> 10 -> 5
        self.stages = nn.Sequential(*[_block(in_chans if i == 0 else width, width) for i in range(4)])
        self.feature_info = [dict(num_chs=width, reduction=2 ** (i + 1), module=f"stages.{i}") for i in range(4)]
        self._set_pool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _set_pool(self, global_pool: str) -> None:
        self.global_pool_type = global_pool
        size = self.map_size if global_pool == "flatten" else 1
        self.global_pool = nn.AdaptiveAvgPool2d(size)
        self.flatten = nn.Flatten(1)
        self.num_features = self.head_hidden_size = self.width * size * size

    # ------------------------------------------------------------------------------------ timm contract
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh ``num_classes``-way linear layer (0: identity, features out)."""
        if global_pool is not None and global_pool != self.global_pool_type:
            if global_pool not in ("flatten", "avg"):
                raise ValueError(f"global_pool must be 'flatten' or 'avg', found {global_pool!r}")
            self._set_pool(global_pool)
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.classifier = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stages\.0", blocks=r"^stages\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError("gradient checkpointing is not supported by metantk_conv4")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, width, H/16, W/16)."""
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.global_pool(x))  # (B, num_features)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({"metantk_conv4": _cfg(pool_size=(5, 5), first_conv="stages.0.0")})


@register_model
def metantk_conv4(pretrained: bool = False, **kwargs: Any) -> Conv4:
    """metantk_conv4: MAML/ANIL's Conv4 (4 x conv3x3-BN-ReLU-maxpool, 32 filters, flattened 5x5 map at 84px)."""
    return build_model_with_cfg(
        Conv4, "metantk_conv4", pretrained, feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )
