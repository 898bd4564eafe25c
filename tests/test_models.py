"""The timm model contract over the whole registry, golden parameter counts and the ops' layer facts."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from metantk_zoo.errors import GenotypeError
from metantk_zoo.genotype import Genotype
from metantk_zoo.models._registry import ZOO_ENTRIES
from metantk_zoo.models.complexity import count_parameters
from metantk_zoo.models.genotypes import NAMED
from metantk_zoo.models.network import FewShotNetwork, reduction_indices
from metantk_zoo.models.ops import OPS

ALL = timm.list_models("metantk*")
# Full-size entries are exercised at reduced width so the contract test stays fast; the architecture
# (genotype, cells, reductions) is the registered one.
FAST = dict(init_channels=8)


def _create(name: str, **kwargs) -> torch.nn.Module:
    if name == "metantk_cell":
        kwargs.setdefault("genotype", NAMED["tiered8_b"])
    if name not in ("metantk_nano", "metantk_conv4"):
        kwargs = {**FAST, **kwargs}
    return timm.create_model(name, **kwargs)


def test_registry_lists_the_whole_zoo():
    expected = {"metantk_cell", "metantk_cell5", "metantk_cell8", "metantk_metanas_cell5", "metantk_metanas_cell8"}
    expected |= {f"metantk_{f}{c}_{x}" for f in ("mini", "tiered") for c in (5, 8) for x in "abc"}
    assert expected <= set(ALL)


# Golden counts at C=48 with our clean network (the reference logs 20 more: its unused dummy alphas).
REFERENCE_DUMMY = 20
GOLDEN_64 = {
    "metantk_mini5_a": 1760800, "metantk_mini5_b": 2222176, "metantk_mini5_c": 1343680,
    "metantk_mini8_a": 3181072, "metantk_mini8_b": 2967184, "metantk_mini8_c": 3489136,
    "metantk_metanas_cell5": 2005216, "metantk_metanas_cell8": 3530896,
}
GOLDEN_351 = {
    "metantk_tiered5_a": 2185935, "metantk_tiered5_b": 1820079, "metantk_tiered5_c": 2664639,
    "metantk_tiered8_a": 5939919, "metantk_tiered8_b": 3138447, "metantk_tiered8_c": 5231055,
    "metantk_metanas_cell5": 2170815, "metantk_metanas_cell8": 3696495,
}


def _params(name: str, num_classes: int) -> int:
    with torch.device("meta"):
        return count_parameters(timm.create_model(name, num_classes=num_classes))


@pytest.mark.parametrize("name", sorted(GOLDEN_64))
def test_golden_parameter_counts_64_way(name):
    assert _params(name, 64) == GOLDEN_64[name]


@pytest.mark.parametrize("name", sorted(GOLDEN_351))
def test_golden_parameter_counts_351_way(name):
    assert _params(name, 351) == GOLDEN_351[name]


def test_table1_parameter_counts():
    """Table 1 of the paper, as method-facts §12.3 maps it (counts include the reference's 20 dummies)."""
    def m(n):  # millions, reference convention
        return n / 1e6

    metanas = [GOLDEN_64["metantk_metanas_cell5"], GOLDEN_351["metantk_metanas_cell5"],
               GOLDEN_64["metantk_metanas_cell8"], GOLDEN_351["metantk_metanas_cell8"]]
    assert [round(m(n + REFERENCE_DUMMY), 2) for n in metanas] == [2.01, 2.17, 3.53, 3.70]
    means = {
        fam: sum(_params(f"metantk_{fam}_{x}", nc) + REFERENCE_DUMMY for x in "abc") / 3
        for fam, nc in (("mini5", 64), ("mini8", 64), ("tiered5", 351), ("tiered8", 351))
    }
    assert means == {"mini5": 1775572, "mini8": 3212484, "tiered5": 2223571, "tiered8": 4769827}
    assert round(m(means["mini8"]), 2) == 3.21 and round(m(means["tiered5"]), 2) == 2.22
    # The table prints 1.77M and 4.78M: 0.01M off the three published examples, as §12.3 explains.
    assert round(m(means["mini5"]), 2) == 1.78 and round(m(means["tiered8"]), 2) == 4.77


def test_metanas_original_upscaled_setting():
    """MetaNAS's own large-scale model: in_v2, C=96, stem x3, constant width, 5-way = 1,160,761 (ref)."""
    with torch.device("meta"):
        m = timm.create_model("metantk_metanas_cell5", init_channels=96, stem_multiplier=3, feature_scale_rate=1,
                              num_classes=5)
    assert count_parameters(m) + REFERENCE_DUMMY == 1160761


def test_op_parameter_formulas():
    c = 48
    expected = {"sep_conv_3x3": 2 * (c * c + 11 * c), "conv_3x3": c * c + 11 * c, "dil_conv_3x3": c * c + 11 * c,
                "conv_1x5_5x1": 10 * c * c + 2 * c, "avg_pool_3x3BN": 2 * c, "max_pool_3x3BN": 2 * c}
    for op, n in expected.items():
        for stride in (1, 2):
            assert count_parameters(OPS[op](c, stride, True)) == n, (op, stride)
    assert count_parameters(OPS["skip_connect"](c, 1, True)) == 0
    assert count_parameters(OPS["skip_connect"](c, 2, True)) == c * c + 2 * c


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("size", [84, 42, 21])
def test_op_output_sizes(op, size):
    x = torch.randn(2, 6, size, size)
    for stride in (1, 2):
        y = OPS[op](6, stride, True)(x)
        out = size if stride == 1 else (size + 1) // 2 if op != "none" else size // 2
        assert y.shape == (2, 6, out, out), (op, stride)


def test_layer_orders_follow_the_reference():
    fac = OPS["conv_1x5_5x1"](4, 2, True).op
    assert [type(m).__name__ for m in fac] == ["ReLU", "Conv2d", "Conv2d", "BatchNorm2d"]
    assert fac[1].kernel_size == (1, 5) and fac[1].stride == (2, 2) and fac[2].kernel_size == (5, 1)
    conv = OPS["conv_3x3"](4, 1, True).op
    assert conv[1].groups == 4 and conv[1].kernel_size == (3, 3) and conv[2].kernel_size == (1, 1)
    dil = OPS["dil_conv_3x3"](4, 1, True).op
    assert dil[1].dilation == (2, 2) and dil[1].padding == (2, 2)
    sep = OPS["sep_conv_3x3"](4, 2, True)
    assert sep.op_a.op[1].stride == (2, 2) and sep.op_b.op[1].stride == (1, 1)
    pool = OPS["avg_pool_3x3BN"](4, 1, True)
    assert pool.pool.count_include_pad is False
    assert all(not getattr(m, "inplace", False) for m in FewShotNetwork(NAMED["mini5_a"], 3, 4).modules())


def test_factorized_reduce_shift():
    fr = OPS["skip_connect"](2, 2, True).eval()
    with torch.no_grad():
        fr.conv_1.weight.copy_(torch.tensor([[[[1.0]], [[0.0]]]]))
        fr.conv_2.weight.copy_(torch.tensor([[[[1.0]], [[0.0]]]]))
    x = torch.arange(25.0).reshape(1, 1, 5, 5).repeat(1, 2, 1, 1)
    z = torch.cat([fr.conv_1(x), fr.conv_2(torch.nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:])], 1)
    assert z[0, 0].tolist() == [[0, 2, 4], [10, 12, 14], [20, 22, 24]]
    assert z[0, 1].tolist() == [[6, 8, 0], [16, 18, 0], [0, 0, 0]]  # shifted by one, zero-padded at the end


@pytest.mark.parametrize("cells,expected", [(5, (1, 3)), (8, (2, 5)), (3, (1, 2))])
def test_reduction_layout(cells, expected):
    assert reduction_indices(cells) == expected
    with torch.device("meta"):
        m = FewShotNetwork(NAMED["mini5_a"], num_cells=cells)
    assert [c.reduction for c in m.cells] == [i in expected for i in range(cells)]
    assert m.num_features == 576


def test_evaluation_network_shapes_at_84():
    m = timm.create_model("metantk_cell5").eval()
    assert m.pretrained_cfg["input_size"] == (3, 84, 84)
    with torch.no_grad():
        f = m.forward_features(torch.randn(1, 3, 84, 84))
    assert f.shape == (1, 576, 21, 21)


def test_drop_path_follows_every_non_identity_op():
    m = FewShotNetwork(NAMED["tiered5_a"], num_cells=5, init_channels=4, drop_path_rate=0.3)
    for cell in m.cells:
        for op in cell.ops:
            if isinstance(op, torch.nn.Sequential):
                assert type(op[1]).__name__ == "DropPath" and op[1].drop_prob == 0.3
            else:
                assert type(op).__name__ == "Identity"
    m.set_drop_path_rate(0.1)
    assert {mod.drop_prob for mod in m.modules() if type(mod).__name__ == "DropPath"} == {0.1}
    m.train()
    x = torch.randn(8, 3, 16, 16)
    assert not torch.equal(m(x), m(x))  # stochastic in training
    m.eval()
    assert torch.equal(m(x), m(x))


def test_generic_entry_needs_a_genotype_and_accepts_every_form():
    with pytest.raises(GenotypeError, match="metantk_cell needs a genotype"):
        timm.create_model("metantk_cell")
    g = NAMED["mini8_c"]
    for form in (g, g.to_darts(), g.to_json(), g.to_dict()):
        m = timm.create_model("metantk_cell", genotype=form, num_cells=8, init_channels=4)
        assert m.genotype == g
    with pytest.raises(GenotypeError, match="unknown op"):
        timm.create_model("metantk_cell", genotype=g.to_darts().replace("sep_conv_3x3", "conv_9x9"))


def test_named_entries_take_the_same_kwargs():
    m = timm.create_model("metantk_cell5", genotype=NAMED["mini5_c"], num_cells=8, init_channels=4, num_classes=7,
                          drop_path_rate=0.2)
    assert m.genotype == NAMED["mini5_c"] and len(m.cells) == 8 and m.num_classes == 7
    assert all(isinstance(Genotype.coerce(timm.create_model(n, init_channels=4).genotype), Genotype)
               for n in ZOO_ENTRIES if n != "metantk_cell")


# ----------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", ALL)
def test_timm_contract(name, tmp_path):
    torch.manual_seed(0)
    model = _create(name)
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "first_conv", "classifier", "num_classes"):
        assert key in cfg, key
    assert model.get_submodule(cfg["first_conv"]).in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert model.num_classes == cfg["num_classes"] == 64

    x = torch.randn(2, 3, 32, 32)
    # forward + backward
    model.train()
    out = model(x)
    assert out.shape == (2, 64)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        assert pre.shape == (2, model.num_features)
        assert torch.allclose(logits, model.get_classifier()(pre))
        assert torch.equal(model(x), model(x))  # eval-mode determinism
    if name not in ("metantk_nano", "metantk_conv4"):
        assert _create(name, init_channels=48).num_features == 576

    # data config -> working transform
    data_cfg = timm.data.resolve_model_data_config(model)
    assert data_cfg["input_size"][1:] == (84, 84) if name != "metantk_conv4" else True
    transform = timm.data.create_transform(**data_cfg)
    from PIL import Image

    img = Image.new("RGB", (100, 90), (200, 30, 30))
    t = transform(img)
    assert t.shape == data_cfg["input_size"]
    assert torch.allclose(t[0, 0, 0], torch.tensor((200 / 255 - data_cfg["mean"][0]) / data_cfg["std"][0]), atol=1e-5)

    # safetensors round trip, bit-exact
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    clone = _create(name)
    clone.load_state_dict(load_file(str(path)))
    clone.eval()
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))

    # export
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-6)

    # heads
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.allclose(model(x), pre, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ALL if n != "metantk_conv4"])
def test_features_only(name):
    model = _create(name, features_only=True).eval()
    info = model.feature_info
    assert info.reduction() == [1, 2, 4]
    assert info.channels() == [3 * 8, 6 * 8, 12 * 8]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert len(outs) == 3
    assert [tuple(o.shape) for o in outs] == [(1, c, 32 // r, 32 // r) for c, r in zip(info.channels(), info.reduction())]
    # the stage outputs are the registered cells' outputs: the last one is what forward_features returns
    full = _create(name).eval()
    missing, unexpected = full.load_state_dict(model.body.state_dict(), strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[-1], full.forward_features(x))
