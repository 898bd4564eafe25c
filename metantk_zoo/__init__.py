"""metantk-zoo: MetaNTK-NAS (Wang et al., CVPR 2022, https://arxiv.org/abs/2203.09137) as a timm model zoo.

``import metantk_zoo`` registers the zoo's architectures in timm's registry::

    import timm, metantk_zoo
    model = timm.create_model("metantk_cell5")
"""

from __future__ import annotations

from . import models  # noqa: F401  (registers the timm entrypoints: metantk_* cells and metantk_conv4)
from .errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    GenotypeError,
    HubError,
    KernelError,
    MetantkZooError,
)
from .genotype import Genotype
from .version import __version__

__all__ = [
    "__version__",
    "Genotype",
    "MetantkZooError",
    "GenotypeError",
    "DatasetError",
    "ConfigError",
    "CheckpointError",
    "KernelError",
    "HubError",
]
