"""timm registration of the zoo: ``import metantk_zoo`` makes ``timm.create_model('metantk_cell5')`` work.

Every entry builds a :class:`~metantk_zoo.network.FewShotNetwork` through timm's ``build_model_with_cfg``, so
``pretrained_cfg``, ``features_only`` (hook-based, as timm's NASNet: cells take two inputs), ``num_classes``
overrides and Hub loading behave as for any timm model. Every entry takes the same keyword arguments:
``genotype`` (Genotype, DARTS/JSON text or JSON dict), ``num_cells``, ``init_channels``, ``num_classes``,
``in_chans``, ``stem_multiplier``, ``feature_scale_rate``, ``drop_rate``, ``drop_path_rate``.

Names: ``metantk_cell5`` / ``metantk_cell8`` are the first published mini-ImageNet genotypes;
``metantk_{mini,tiered}{5,8}_{a,b,c}`` are examples (1)-(3) of each MetaNTK-NAS script;
``metantk_metanas_cell{5,8}`` is MetaNAS's ``in_v2`` cell (the paper's "MetaNAS (retrained)" rows);
``metantk_cell`` builds any genotype; ``metantk_nano`` is a 3-cell, 8-channel variant for tests and demos.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..data.constants import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD
from ..errors import GenotypeError
from . import _manifests as manifests
from .genotypes import NAMED, PUBLISHED
from .network import FewShotNetwork

__all__ = ["ZOO_ENTRIES", "create_network"]

# RFS / MetaOptNet mini-ImageNet statistics, used for mini and tiered alike (method-facts §7, §10).


def _cfg(**kwargs: Any) -> dict[str, Any]:
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
        **kwargs,
    }


def _source(key: str) -> str:
    return next(p.source for p in PUBLISHED if p.key == key)


#: architecture name -> (zoo genotype key or None, default num_cells, default init_channels, description)
ZOO_ENTRIES: dict[str, tuple[str | None, int, int, str]] = {
    "metantk_cell": (None, 5, 48, "any genotype, passed as genotype=..."),
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



def _default_cfgs() -> dict[str, dict[str, Any]]:
    """Untagged cfgs of every entry, plus one ``name.tag`` with ``hf_hub_id`` per ``hub/`` manifest."""
    cfgs = {name: _cfg() for name in ZOO_ENTRIES}
    for m in manifests.load_manifests():
        if m.architecture in ZOO_ENTRIES:
            manifests.register(m)
            cfgs[m.name] = _cfg(hf_hub_id=m.hf_hub_id, hf_hub_filename="model.safetensors")
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


def create_network(variant: str, pretrained: bool = False, **kwargs: Any) -> FewShotNetwork:
    """Build a registered zoo variant through timm's builder (defaults from :data:`ZOO_ENTRIES`)."""
    key, num_cells, init_channels, _ = ZOO_ENTRIES[variant]
    if key is not None:
        kwargs.setdefault("genotype", NAMED[key].to_dict())
    elif kwargs.get("genotype") is None:
        raise GenotypeError(
            f"{variant} needs a genotype: timm.create_model('{variant}', genotype=<Genotype | DARTS text | JSON dict>)"
        )
    kwargs.setdefault("num_cells", num_cells)
    kwargs.setdefault("init_channels", init_channels)
    return build_model_with_cfg(
        FewShotNetwork,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="hook", no_rewrite=True, out_indices=(0, 1, 2)),
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
