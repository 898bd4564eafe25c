# ruff: noqa: E501  (the published genotype strings are kept verbatim, one per line)
"""The published genotypes of MetaNTK-NAS and MetaNAS, as data.

Strings are copied verbatim from the comment headers of the four MetaNTK-NAS search scripts
(``scripts/script_{mini,tiered}_{5,8}cell.sh``, examples (1)-(3) -> suffixes A-C) and from MetaNAS's
``utils/genotypes.py``; see ``reference/method-facts.md`` §9. MetaNTK-NAS: https://arxiv.org/abs/2203.09137,
MetaNAS: https://arxiv.org/abs/1911.11090.

``metanas_in_v2`` is the cell of the paper's "MetaNAS (retrained)" rows (Table 1, footnote 9). MetaNAS writes
pool + BN as ``max_pool_3x3`` / ``avg_pool_3x3``; those strings are parsed with ``naming="metanas"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..genotype import Genotype

__all__ = ["PublishedGenotype", "PUBLISHED", "NAMED"]


@dataclass(frozen=True)
class PublishedGenotype:
    """A genotype as published, with where it came from.

    Attributes:
        key: short zoo key, e.g. ``mini5_a``.
        text: the published string, verbatim.
        naming: op naming of ``text`` (``mnn`` or ``metanas``).
        source: human-readable provenance.
        dataset: the search dataset (``miniImageNet``/``tieredImageNet``).
        num_cells: the cell count the search and evaluation used.
        kernel: the MetaNTK the search used (``MAML``/``ANIL``) with its settings, or ``None``.
    """

    key: str
    text: str
    naming: str
    source: str
    dataset: str
    num_cells: int | None
    kernel: str | None

    @property
    def genotype(self) -> Genotype:
        return Genotype.parse(self.text, naming=self.naming)


def _mnn(key: str, script: str, example: int, dataset: str, cells: int, kernel: str, text: str) -> PublishedGenotype:
    src = f"MetaNTK-NAS scripts/{script}, example ({example})"
    return PublishedGenotype(key, text, "mnn", src, dataset, cells, kernel)


_M5 = "script_mini_5cell.sh"
_M8 = "script_mini_8cell.sh"
_T5 = "script_tiered_5cell.sh"
_T8 = "script_tiered_8cell.sh"
_MAML = "MAML, tau=inf, lambda=1e-3"

PUBLISHED: tuple[PublishedGenotype, ...] = (
    _mnn(
        "mini5_a", _M5, 1, "miniImageNet", 5, _MAML,
        "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], [('conv_3x3', 0), ('sep_conv_3x3', 2)]], normal_concat=[2, 3, 4], reduce=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 1), ('dil_conv_3x3', 2)], [('dil_conv_3x3', 2), ('dil_conv_3x3', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "mini5_b", _M5, 2, "miniImageNet", 5, _MAML,
        "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], [('conv_3x3', 2), ('sep_conv_3x3', 3)]], normal_concat=[2, 3, 4], reduce=[[('sep_conv_3x3', 0), ('dil_conv_3x3', 1)], [('conv_1x5_5x1', 1), ('sep_conv_3x3', 2)], [('sep_conv_3x3', 1), ('conv_1x5_5x1', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "mini5_c", _M5, 3, "miniImageNet", 5, _MAML,
        "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('max_pool_3x3BN', 2)], [('dil_conv_3x3', 2), ('sep_conv_3x3', 3)]], normal_concat=[2, 3, 4], reduce=[[('dil_conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_3x3', 1), ('sep_conv_3x3', 2)], [('sep_conv_3x3', 2), ('sep_conv_3x3', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "mini8_a", _M8, 1, "miniImageNet", 8, "ANIL, tau=1, lambda=1e-5",
        "Genotype(normal=[[('sep_conv_3x3', 0), ('max_pool_3x3BN', 1)], [('conv_1x5_5x1', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 2), ('conv_3x3', 3)]], normal_concat=[2, 3, 4], reduce=[[('skip_connect', 0), ('sep_conv_3x3', 1)], [('conv_3x3', 1), ('sep_conv_3x3', 2)], [('dil_conv_3x3', 0), ('conv_1x5_5x1', 1)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "mini8_b", _M8, 2, "miniImageNet", 8, "ANIL, tau=1, lambda=1e-5",
        "Genotype(normal=[[('conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 0), ('conv_3x3', 1)], [('sep_conv_3x3', 0), ('dil_conv_3x3', 2)]], normal_concat=[2, 3, 4], reduce=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 2)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "mini8_c", _M8, 3, "miniImageNet", 8, "ANIL, tau=1, lambda=1e-5",
        "Genotype(normal=[[('sep_conv_3x3', 0), ('conv_1x5_5x1', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_3x3', 0), ('sep_conv_3x3', 1)]], normal_concat=[2, 3, 4], reduce=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 1), ('sep_conv_3x3', 2)], [('conv_3x3', 0), ('sep_conv_3x3', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "tiered5_a", _T5, 1, "tieredImageNet", 5, _MAML,
        "Genotype(normal=[[('conv_3x3', 0), ('dil_conv_3x3', 1)], [('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 3)]], normal_concat=[2, 3, 4], reduce=[[('skip_connect', 0), ('dil_conv_3x3', 1)], [('sep_conv_3x3', 0), ('conv_1x5_5x1', 2)], [('max_pool_3x3BN', 2), ('conv_1x5_5x1', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "tiered5_b", _T5, 2, "tieredImageNet", 5, _MAML,
        "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), ('max_pool_3x3BN', 2)], [('conv_3x3', 2), ('conv_3x3', 3)]], normal_concat=[2, 3, 4], reduce=[[('dil_conv_3x3', 0), ('conv_1x5_5x1', 1)], [('conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 2), ('sep_conv_3x3', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "tiered5_c", _T5, 3, "tieredImageNet", 5, _MAML,
        "Genotype(normal=[[('sep_conv_3x3', 0), ('conv_1x5_5x1', 1)], [('dil_conv_3x3', 0), ('sep_conv_3x3', 2)], [('sep_conv_3x3', 0), ('max_pool_3x3BN', 3)]], normal_concat=[2, 3, 4], reduce=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 0), ('conv_1x5_5x1', 2)], [('dil_conv_3x3', 1), ('sep_conv_3x3', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "tiered8_a", _T8, 1, "tieredImageNet", 8, "ANIL, tau=inf, lambda=1e-3",
        "Genotype(normal=[[('conv_1x5_5x1', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 0), ('conv_1x5_5x1', 1)], [('sep_conv_3x3', 0), ('conv_1x5_5x1', 2)]], normal_concat=[2, 3, 4], reduce=[[('skip_connect', 0), ('conv_3x3', 1)], [('conv_3x3', 0), ('conv_1x5_5x1', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 3)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "tiered8_b", _T8, 2, "tieredImageNet", 8, "ANIL, tau=inf, lambda=1e-3",
        "Genotype(normal=[[('conv_1x5_5x1', 0), ('dil_conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('conv_3x3', 2)]], normal_concat=[2, 3, 4], reduce=[[('conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], [('conv_3x3', 0), ('sep_conv_3x3', 1)]], reduce_concat=[2, 3, 4])",
    ),
    _mnn(
        "tiered8_c", _T8, 3, "tieredImageNet", 8, "ANIL, tau=inf, lambda=1e-3",
        "Genotype(normal=[[('conv_1x5_5x1', 0), ('conv_1x5_5x1', 1)], [('sep_conv_3x3', 0), ('conv_1x5_5x1', 2)], [('sep_conv_3x3', 2), ('sep_conv_3x3', 3)]], normal_concat=[2, 3, 4], reduce=[[('conv_3x3', 0), ('conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), ('conv_1x5_5x1', 3)]], reduce_concat=[2, 3, 4])",
    ),
    PublishedGenotype(
        "metanas_in_v2", "Genotype(normal=[[('conv_1x5_5x1', 0), ('conv_3x3', 1)], [('conv_3x3', 0), ('sep_conv_3x3', 2)], [('dil_conv_3x3', 1), ('conv_1x5_5x1', 3)]], normal_concat=range(2, 5), reduce=[[('sep_conv_3x3', 0), ('conv_3x3', 1)], [('conv_3x3', 0), ('sep_conv_3x3', 2)], [('conv_3x3', 0), ('dil_conv_3x3', 1)]], reduce_concat=range(2, 5))",
        "metanas", "MetaNAS utils/genotypes.py, genotype_metanas_in_v2 (the paper's 'MetaNAS (retrained)' cell)",
        "miniImageNet", None, None,
    ),
    PublishedGenotype(
        "metanas_v1",
        "Genotype(normal=[[('conv_3x3', 0), ('conv_3x3', 1)], [('conv_1x5_5x1', 0), ('dil_conv_3x3', 2)], [('conv_1x5_5x1', 0), ('max_pool_3x3', 3)]], normal_concat=range(2, 5), reduce=[[('dil_conv_3x3', 0), ('sep_conv_3x3', 1)], [('conv_3x3', 0), ('max_pool_3x3', 1)], [('dil_conv_3x3', 2), ('conv_1x5_5x1', 3)]], reduce_concat=range(2, 5))",
        "metanas", "MetaNAS utils/genotypes.py, genotype_metanas_v1", "miniImageNet", None, None,
    ),
    PublishedGenotype(
        "metanas_og_v2",
        "Genotype(normal=[[('dil_conv_3x3', 0), ('sep_conv_3x3', 1)], [('avg_pool_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 0), ('conv_3x3', 2)]], normal_concat=range(2, 5), reduce=[[('skip_connect', 0), ('sep_conv_3x3', 1)], [('conv_3x3', 0), ('dil_conv_3x3', 1)], [('dil_conv_3x3', 0), ('conv_1x5_5x1', 2)]], reduce_concat=range(2, 5))",
        "metanas", "MetaNAS utils/genotypes.py, genotype_metanas_og_v2 (Omniglot)", "Omniglot", None, None,
    ),
)

#: zoo key -> Genotype, parsed (and so validated) at import.
NAMED: dict[str, Genotype] = {p.key: p.genotype for p in PUBLISHED}
