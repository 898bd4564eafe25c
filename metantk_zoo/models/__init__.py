"""The zoo's networks: DARTS ops, cells and :class:`FewShotNetwork`, Conv4, the published genotypes, timm
registration with pretrained cfgs and Hub manifests, and the one parameter/MAC counter.

``import metantk_zoo.models`` registers every ``metantk_*`` architecture in timm.
"""

from __future__ import annotations

from ._manifests import (
    ENV_VAR,
    PACKAGED_DIR,
    Manifest,
    find,
    load_manifests,
    manifest_dirs,
    read_manifest,
    verify_cached_files,
)
from ._registry import (
    ZOO_ENTRIES,
    create_network,
)
from .complexity import (
    count_parameters,
    zoo_table,
)
from .conv4 import (
    Conv4,
)
from .genotypes import (
    NAMED,
    PUBLISHED,
    PublishedGenotype,
)
from .network import (
    Cell,
    FewShotNetwork,
    reduction_indices,
)
from .ops import (
    DARTS_FEWSHOT,
    OPS,
    SEARCH_SPACES,
    DilConv,
    FacConv,
    FactorizedReduce,
    Identity,
    PoolBN,
    ReLUConvBN,
    SepConv,
    Zero,
    cell_preprocess,
)

__all__ = [
    "PublishedGenotype",
    "PUBLISHED",
    "NAMED",
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
    "Cell",
    "FewShotNetwork",
    "reduction_indices",
    "Manifest",
    "PACKAGED_DIR",
    "ENV_VAR",
    "manifest_dirs",
    "load_manifests",
    "read_manifest",
    "find",
    "verify_cached_files",
    "ZOO_ENTRIES",
    "create_network",
    "Conv4",
    "zoo_table",
    "count_parameters",
]
