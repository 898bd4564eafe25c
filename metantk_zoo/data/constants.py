"""Every image statistic the package uses: one definition of each mean and standard deviation (RGB, in [0, 1]).

A leaf module of plain numbers (no imports), so that the models' pretrained cfgs, the data transforms and the
search inputs all read the same values (timm's ``timm.data.constants`` pattern).
"""

from __future__ import annotations

__all__ = ["MINI_IMAGENET_MEAN", "MINI_IMAGENET_STD", "CIFAR_MEAN", "CIFAR_STD"]

# RFS / MetaOptNet mini-ImageNet statistics, used for mini and tiered alike (method-facts §7, §10), and for the
# search's linear-region patches (§5).
MINI_IMAGENET_MEAN = (120.39586422 / 255.0, 115.59361427 / 255.0, 104.54012653 / 255.0)
MINI_IMAGENET_STD = (70.68188272 / 255.0, 68.27635443 / 255.0, 72.54505529 / 255.0)
# CIFAR statistics of the TE-NAS search transform: the kernel inputs (method-facts §4.2).
CIFAR_MEAN = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
CIFAR_STD = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
