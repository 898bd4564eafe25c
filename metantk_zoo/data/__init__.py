"""Few-shot data for metantk-zoo: benchmarks as Hugging Face ``datasets``, episodes, transforms.

One way in — :func:`load_fewshot` — for the embedded ``synthetic`` benchmark, Hub datasets (mini-ImageNet,
CIFAR-FS, FC100), local folders (imagefolder, parquet, ``save_to_disk``) and converted RFS / MetaOptNet files.
MetaNTK-NAS: Wang et al., CVPR 2022, https://arxiv.org/abs/2203.09137.

    from metantk_zoo.data import load_fewshot, EpisodeSampler, load_images, eval_transform
    fs = load_fewshot("synthetic")
    sampler = EpisodeSampler(fs.labels("test"), n_way=5, n_shot=5, n_query=15, seed=0)
    ep = sampler.episode(0)
    x_spt = load_images(fs.split("test"), ep.support, eval_transform(84))   # (25, 3, 84, 84)
"""

from __future__ import annotations

from .constants import CIFAR_MEAN, CIFAR_STD, MINI_IMAGENET_MEAN, MINI_IMAGENET_STD
from .episodes import (
    Episode,
    EpisodeManifest,
    EpisodeSampler,
    decode_images,
    load_images,
    read_manifest,
    with_torch_transform,
    write_manifest,
)
from .sources import SPLITS, FewShotDataset, class_splits, label_array, load_fewshot, parse_spec
from .synthetic import SyntheticConfig, build_synthetic
from .transforms import (
    augment_support,
    eval_transform,
    train_transform,
)

__all__ = [
    "SPLITS",
    "FewShotDataset",
    "load_fewshot",
    "parse_spec",
    "class_splits",
    "label_array",
    "SyntheticConfig",
    "build_synthetic",
    "Episode",
    "EpisodeSampler",
    "EpisodeManifest",
    "write_manifest",
    "read_manifest",
    "load_images",
    "decode_images",
    "with_torch_transform",
    "train_transform",
    "eval_transform",
    "augment_support",
    "MINI_IMAGENET_MEAN",
    "MINI_IMAGENET_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
]
