"""timm registration of the zoo: ``import metantk_zoo`` makes ``timm.create_model('metantk_cell5')`` work.

Every entry builds a :class:`~metantk_zoo.network.FewShotNetwork` through timm's ``build_model_with_cfg``, so
``pretrained_cfg``, ``features_only`` (timm's getter wrapper over ``forward_intermediates``, with ``out_indices``
over the three stages), ``num_classes`` overrides, ``device``/``dtype`` and Hub loading behave as for any timm
model. Every entry takes the same keyword arguments: ``genotype`` (Genotype, DARTS/JSON text or JSON dict),
``num_cells``, ``init_channels``, ``num_classes``, ``in_chans``, ``stem_multiplier``, ``feature_scale_rate``,
``drop_rate``, ``drop_path_rate``, ``global_pool``, ``device``, ``dtype``.

Names: ``metantk_cell5`` / ``metantk_cell8`` are the first published mini-ImageNet genotypes;
``metantk_{mini,tiered}{5,8}_{a,b,c}`` are examples (1)-(3) of each MetaNTK-NAS script;
``metantk_metanas_cell{5,8}`` is MetaNAS's ``in_v2`` cell (the paper's "MetaNAS (retrained)" rows);
``metantk_cell`` builds any genotype (by default the first published mini-ImageNet one, as ``metantk_cell5``);
``metantk_nano`` is a 3-cell, 8-channel variant for tests and demos.

``pretrained=True`` loads the weights a ``hub/`` manifest names (``metantk_cell5.<tag>``) or a file given with
``pretrained_cfg_overlay=dict(file=...)``; without either it raises :class:`~metantk_zoo.errors.CheckpointError`
naming the commands that produce weights, instead of timm's silent random initialisation.
"""

from __future__ import annotations

import logging
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from ..data.constants import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD
from ..errors import CheckpointError, ConfigError
from . import _manifests as manifests
from .genotypes import NAMED, PUBLISHED
from .network import FewShotNetwork

__all__ = ["ZOO_ENTRIES", "DEFAULT_GENOTYPE", "create_network", "check_pretrained_source"]

#: the genotype ``metantk_cell`` builds when none is given: the first published mini-ImageNet one (``metantk_cell5``)
DEFAULT_GENOTYPE = "mini5_a"

METANTK_NAS = dict(
    paper_ids=("arXiv:2203.09137",),
    paper_name="Global Convergence of MAML and Theory-Inspired Neural Architecture Search for Few-Shot Learning",
    origin_url="https://github.com/YiteWang/MetaNTK-NAS",
)
METANAS = dict(
    paper_ids=("arXiv:1911.11090", "arXiv:2203.09137"),
    paper_name="Meta-Learning of Neural Architectures for Few-Shot Learning",
    origin_url="https://github.com/boschresearch/metanas",
)


# RFS / MetaOptNet mini-ImageNet statistics, used for mini and tiered alike (method-facts §7, §10).
def _cfg(**kwargs: Any) -> dict[str, Any]:
    """A zoo pretrained cfg: 84x84 inputs, mini-ImageNet statistics, MIT (the zoo's licence), the paper fields."""
    return {
        "num_classes": 64,
        "input_size": (3, 84, 84),
        "pool_size": (21, 21),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": MINI_IMAGENET_MEAN,
        "std": MINI_IMAGENET_STD,
        "first_conv": "stem.0",
        "classifier": "classifier",
        "license": "mit",
        **{**METANTK_NAS, **kwargs},
    }


def _source(key: str) -> str:
    return next(p.source for p in PUBLISHED if p.key == key)


#: architecture name -> (zoo genotype key or None, default num_cells, default init_channels, description)
ZOO_ENTRIES: dict[str, tuple[str | None, int, int, str]] = {
    "metantk_cell": (None, 5, 48, "any genotype, passed as genotype=... (default: mini5_a, as metantk_cell5)"),
    "metantk_cell5": ("mini5_a", 5, 48, _source("mini5_a")),
    "metantk_cell8": ("mini8_a", 8, 48, _source("mini8_a")),
    **{
        f"metantk_{fam}{cells}_{x}": (f"{fam}{cells}_{x}", cells, 48, _source(f"{fam}{cells}_{x}"))
        for fam in ("mini", "tiered")
        for cells in (5, 8)
        for x in "abc"
    },
    "metantk_metanas_cell5": ("metanas_in_v2", 5, 48, _source("metanas_in_v2")),
    "metantk_metanas_cell8": ("metanas_in_v2", 8, 48, _source("metanas_in_v2")),
    "metantk_nano": ("mini5_a", 3, 8, "mini5_a at 3 cells, 8 channels: for tests and demos"),
}



def _entry_cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    key = ZOO_ENTRIES[name][0] or DEFAULT_GENOTYPE
    paper = METANAS if key.startswith("metanas") else METANTK_NAS
    return _cfg(**{**paper, "notes": (f"genotype: {ZOO_ENTRIES[name][3]}",), **kwargs})


def _default_cfgs() -> dict[str, dict[str, Any]]:
    """Untagged cfgs of every entry, plus one ``name.tag`` with ``hf_hub_id`` per ``hub/`` manifest."""
    cfgs = {name: _entry_cfg(name) for name in ZOO_ENTRIES}
    try:
        found = manifests.load_manifests()
    except ConfigError as e:  # a malformed METANTK_HUB_MANIFESTS must not break `import metantk_zoo`
        logging.getLogger(__name__).warning("ignoring %s (%s); only the packaged manifests are used",
                                            manifests.ENV_VAR, " ".join(str(e).split())[:300])
        found = manifests.load_manifests([manifests.PACKAGED_DIR])
    for m in found:
        if m.architecture in ZOO_ENTRIES:
            manifests.register(m)
            cfgs[m.name] = _entry_cfg(m.architecture, hf_hub_id=m.hf_hub_id, hf_hub_filename="model.safetensors")
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())


def _check_manifest_hashes(state_dict: dict[str, Any], model: FewShotNetwork) -> dict[str, Any]:
    """Refuse weights of a manifest-pinned tag whose cached files do not have the manifest's sha256."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    manifest = manifests.find(cfg.get("architecture", ""), cfg.get("tag"))
    if manifest is not None:
        from ._manifests import verify_cached_files

        verify_cached_files(manifest.repo_id, manifest.revision, manifest.files, required=("model.safetensors",))
    return state_dict


def check_pretrained_source(variant: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``pretrained=True`` when timm has no weights to load (timm itself would warn and go on randomly).

    Raises:
        CheckpointError: the resolved pretrained cfg names no ``hf_hub_id``, ``url``, ``file`` or ``state_dict``.
    """
    overlay = kwargs.get("pretrained_cfg_overlay")
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=overlay)
    if cfg.source in ("hf-hub", "local-dir") or any((cfg.hf_hub_id, cfg.url, cfg.file, cfg.state_dict)):
        return
    name = f"{variant}.{cfg.tag}" if cfg.tag else variant
    raise CheckpointError(
        f"{name} has no published weights (no hub/ manifest names them); produce them with `metantk-zoo train "
        f"--model {variant} --dataset DATASET --out RUN` and load RUN (`metantk-zoo eval RUN ...`), or publish them "
        f"with `metantk-zoo push RUN --repo ORG/{variant}.TAG --manifest-dir hub/`; or build with pretrained=False"
    )


def create_network(variant: str, pretrained: bool = False, **kwargs: Any) -> FewShotNetwork:
    """Build a registered zoo variant through timm's builder (defaults from :data:`ZOO_ENTRIES`).

    ``metantk_cell`` without ``genotype=`` builds :data:`DEFAULT_GENOTYPE`; ``genotype=`` overrides every entry's.

    Raises:
        CheckpointError: ``pretrained=True`` and no weights to load (see :func:`check_pretrained_source`).
    """
    key, num_cells, init_channels, _ = ZOO_ENTRIES[variant]
    if kwargs.get("genotype") is None:
        kwargs["genotype"] = NAMED[key or DEFAULT_GENOTYPE].to_dict()
    kwargs.setdefault("num_cells", num_cells)
    kwargs.setdefault("init_channels", init_channels)
    if pretrained:
        check_pretrained_source(variant, kwargs)
    return build_model_with_cfg(
        FewShotNetwork,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2)),
        pretrained_filter_fn=_check_manifest_hashes,
        **kwargs,
    )


def _make_entrypoint(variant: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> FewShotNetwork:
        return create_network(variant, pretrained, **kwargs)

    entrypoint.__name__ = variant
    entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{variant}: {ZOO_ENTRIES[variant][3]}."
    return entrypoint


for _variant in ZOO_ENTRIES:
    globals()[_variant] = register_model(_make_entrypoint(_variant))
