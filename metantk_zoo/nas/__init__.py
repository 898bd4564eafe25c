"""Training-free architecture search (MetaNTK-NAS, https://arxiv.org/abs/2203.09137): the pruning supernet, the
empirical NTK / MetaNTK kernels, linear regions, search inputs, candidate ranking, configs and the search loop.
"""

from __future__ import annotations

from .config import METHODS, PRESETS, SearchConfig
from .inputs import (
    kernel_inputs,
    normalize_uint8,
    region_patches,
    resize_uint8,
    tenas_augment,
)
from .kernels import (
    NAN_CONDITION,
    NTK_BACKENDS,
    condition_number,
    empirical_ntk,
    ieee_fp32,
    kernel_parameters,
    meta_ntk,
)
from .loop import SearchResult, SearchSource, TensorSource, search
from .ranking import rank_candidates, round_sig
from .regions import (
    activation_patterns,
    count_distinct_rows,
    count_linear_regions,
)
from .supernet import (
    EDGES,
    NODE_EDGES,
    NUM_EDGES,
    SuperNet,
    alive_weights,
    convert_batchnorm_to_groupnorm,
    genotype_from_alive,
    genotype_from_weights,
    initial_alive,
    reset_parameters,
)

__all__ = [
    "resize_uint8",
    "normalize_uint8",
    "tenas_augment",
    "kernel_inputs",
    "region_patches",
    "NTK_BACKENDS",
    "NAN_CONDITION",
    "empirical_ntk",
    "meta_ntk",
    "condition_number",
    "ieee_fp32",
    "kernel_parameters",
    "activation_patterns",
    "count_distinct_rows",
    "count_linear_regions",
    "EDGES",
    "NUM_EDGES",
    "NODE_EDGES",
    "SuperNet",
    "initial_alive",
    "alive_weights",
    "genotype_from_weights",
    "genotype_from_alive",
    "convert_batchnorm_to_groupnorm",
    "reset_parameters",
    "METHODS",
    "PRESETS",
    "SearchConfig",
    "SearchSource",
    "TensorSource",
    "SearchResult",
    "search",
    "rank_candidates",
    "round_sig",
]
