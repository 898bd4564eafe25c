"""The timm model contract over the whole registry, golden parameter counts and the ops' layer facts; the rest of
timm's model API (device/dtype, TorchScript / fx / export / ONNX, forward_intermediates, pruning, features_only,
gradient checkpointing, group_matcher, pretrained cfgs and the missing-weights error) and the zoo table."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from metantk_zoo.errors import CheckpointError, GenotypeError
from metantk_zoo.genotype import Genotype
from metantk_zoo.models import _registry
from metantk_zoo.models._registry import ZOO_ENTRIES
from metantk_zoo.models.complexity import count_macs, count_parameters, zoo_table
from metantk_zoo.models.genotypes import NAMED
from metantk_zoo.models.network import FewShotNetwork, reduction_indices
from metantk_zoo.models.ops import OPS

ALL = timm.list_models("metantk*")
# Full-size entries are exercised at reduced width so the contract test stays fast; the architecture
# (genotype, cells, reductions) is the registered one.
FAST = dict(init_channels=8)


def _create(name: str, **kwargs) -> torch.nn.Module:
    if name not in ("metantk_nano", "metantk_conv4"):
        kwargs = {**FAST, **kwargs}
    return timm.create_model(name, **kwargs)


def test_registry_lists_the_whole_zoo():
    expected = {"metantk_cell", "metantk_cell5", "metantk_cell8", "metantk_metanas_cell5", "metantk_metanas_cell8",
                "metantk_nano", "metantk_conv4"}
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


def test_generic_entry_defaults_to_the_first_published_genotype_and_accepts_every_form():
    default = timm.create_model("metantk_cell", init_channels=4)
    assert default.genotype == NAMED["mini5_a"] == timm.create_model("metantk_cell5", init_channels=4).genotype
    assert len(default.cells) == 5
    with torch.device("meta"):
        assert count_parameters(timm.create_model("metantk_cell")) == GOLDEN_64["metantk_mini5_a"]
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
        assert pre.shape == (2, model.head_hidden_size)
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

    # torch.export: test_torchscript_fx_and_export_equal_eager (entries covering every op and both cell counts;
    # every entry under -m slow and in scripts/check_exports.py)

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
    shapes = [(1, c, 32 // r, 32 // r) for c, r in zip(info.channels(), info.reduction(), strict=True)]
    assert [tuple(o.shape) for o in outs] == shapes
    # the stage outputs are the registered cells' outputs: the last one is what forward_features returns
    full = _create(name).eval()
    missing, unexpected = full.load_state_dict({k.removeprefix("model."): v for k, v in model.state_dict().items()},
                                               strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[-1], full.forward_features(x))


# ----------------------------------------------------------------------------------- the rest of timm's model API
DEVICE = os.environ.get("METANTK_TEST_DEVICE", "cpu")
# The cell before each reduction (L//3 and 2L//3) and the last cell, worked out by hand per cell count.
STAGE_ENDS = {3: [0, 1, 2], 5: [0, 2, 4], 8: [1, 4, 7]}


def _taps_by_hand(model, x, ends):
    """Stage outputs computed through the stem and the cells one by one, outside the model's own loops."""
    s0 = s1 = model.stem(x)
    taps = []
    for i, cell in enumerate(model.cells):
        s0, s1 = s1, cell(s0, s1)
        if i in ends:
            taps.append(s1)
    return taps


@pytest.mark.parametrize("name", ALL)
def test_device_and_dtype_factory_kwargs_place_every_tensor(name):
    model = timm.create_model(name, device="meta", dtype=torch.float64)  # registered size: free on meta
    tensors = [*model.named_parameters(), *model.named_buffers()]
    assert tensors and all(t.device.type == "meta" for _, t in tensors)
    assert all(t.dtype == torch.float64 for _, t in tensors if t.is_floating_point())
    assert {t.dtype for _, t in tensors if not t.is_floating_point()} <= {torch.int64}  # BN's num_batches_tracked
    model.eval()
    model.reset_classifier(3)
    head = list(model.get_classifier().parameters())
    assert all(p.device.type == "meta" and p.dtype == torch.float64 for p in head) and len(head) == 2
    assert not any(m.training for m in model.modules())


def test_device_and_dtype_are_honoured_by_a_real_forward():
    torch.manual_seed(0)
    model = timm.create_model("metantk_nano", device=DEVICE, dtype=torch.bfloat16).eval()
    assert {p.device.type for p in model.parameters()} == {torch.device(DEVICE).type}
    ref = timm.create_model("metantk_nano").eval()
    ref.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x.to(DEVICE, torch.bfloat16))
        expected = ref(x)
    assert out.dtype == torch.bfloat16 and out.device.type == torch.device(DEVICE).type
    # the same weights in float32 give the same logits up to bfloat16 rounding (8 bits of mantissa)
    torch.testing.assert_close(out.float().cpu(), expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))


def _check_round_trips(name):
    model = _create(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(torch.jit.script(model)(x), ref)
        assert torch.equal(torch.fx.symbolic_trace(model)(x), ref)
        exported = torch.export.export(model, (x,)).module()
        torch.testing.assert_close(exported(x), ref, rtol=0, atol=1e-6)


#: tiered8_a and mini5_c hold between them every op of the registered genotypes, at 8 and 5 cells
EXPORT_ENTRIES = ["metantk_nano", "metantk_conv4", "metantk_tiered8_a", "metantk_mini5_c"]


@pytest.mark.parametrize("name", EXPORT_ENTRIES)
def test_torchscript_fx_and_export_equal_eager(name):
    _check_round_trips(name)


def test_export_entries_hold_every_op_of_the_zoo():
    def ops(name):
        return set(Genotype.coerce(timm.create_model(name, init_channels=4).genotype).ops)

    cell_entries = [n for n in ALL if n not in ("metantk_nano", "metantk_conv4")]
    assert set().union(*map(ops, cell_entries)) <= set().union(*(ops(n) for n in EXPORT_ENTRIES[2:]))
    assert {len(timm.create_model(n, init_channels=4).cells) for n in EXPORT_ENTRIES[2:]} == {5, 8}


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_torchscript_fx_and_export_equal_eager_every_entry(name):
    _check_round_trips(name)


@pytest.mark.parametrize("name", ["metantk_nano", "metantk_conv4"])
def test_onnx_export_equals_eager(name, tmp_path):
    _check_onnx(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_onnx_export_equals_eager_every_entry(name, tmp_path):
    _check_onnx(name, tmp_path)


def _check_onnx(name, tmp_path):
    # onnx, onnxscript and onnxruntime are declared test extras: a missing one is a failure here, not a skip
    import onnxruntime

    model = _create(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    program.save(str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,cells", [("metantk_nano", 3), ("metantk_cell5", 5), ("metantk_cell8", 8)])
def test_forward_intermediates_are_the_stage_outputs_computed_by_hand(name, cells):
    torch.manual_seed(0)
    model = _create(name).eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        taps = _taps_by_hand(model, x, STAGE_ENDS[cells])
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and len(inter) == 3
        assert all(torch.equal(a, b) for a, b in zip(inter, taps, strict=True))
        assert [t.shape[1] for t in inter] == [i["num_chs"] for i in model.feature_info]
        assert [24 // t.shape[-1] for t in inter] == [i["reduction"] for i in model.feature_info] == [1, 2, 4]
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert len(picked) == 2 and torch.equal(picked[0], taps[0]) and torch.equal(picked[1], taps[2])
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert torch.equal(last_two[0], taps[1]) and torch.equal(last_two[1], taps[2])
        early, sel = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, taps[1]) and len(sel) == 1 and torch.equal(sel[0], taps[1])
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)  # no final norm to apply
        assert all(torch.equal(a, b) for a, b in zip(normed, taps, strict=True))
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[3])


def test_conv4_forward_intermediates_are_the_block_outputs():
    model = timm.create_model("metantk_conv4", width=8).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        taps, h = [], x
        for block in model.stages:
            h = block(h)
            taps.append(h)
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, taps[-1]) and all(torch.equal(a, b) for a, b in zip(inter, taps, strict=True))
        assert [t.shape[-1] for t in inter] == [16, 8, 4, 2]
        early = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early[0], taps[1])


@pytest.mark.parametrize("name", ["metantk_nano", "metantk_cell5", "metantk_conv4"])
def test_prune_intermediate_layers_contract(name):
    """timm's own contract test for pruning (run by timm only for its modules), transcribed for the zoo."""
    model = _create(name).eval()
    x = torch.randn(2, 3, 32, 32)
    last = len(model.feature_info) - 1
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
        pruned = copy.deepcopy(model)
        pruned.prune_intermediate_layers([last], prune_head=False)
        assert torch.equal(pruned(x), expected)
    for i in range(last + 1):
        pruned = copy.deepcopy(model)
        take = pruned.prune_intermediate_layers([i])
        assert take == [i]
        if name == "metantk_cell5":
            assert len(pruned.cells) == STAGE_ENDS[5][i] + 1
        with torch.no_grad():
            assert torch.equal(pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0], taps[i])
            assert torch.equal(pruned.forward_features(x), taps[i])
            assert torch.equal(pruned(x), taps[i])  # head pruned: no pooling, no classifier
        pruned.train()
        feats = pruned.forward_intermediates(x, indices=take, intermediates_only=True) + [pruned.forward_features(x)]
        sum(f.sum() for f in feats).backward()
        assert [n for n, p in pruned.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name,out_indices", [("metantk_cell5", (1, 2)), ("metantk_cell8", (0,)),
                                              ("metantk_conv4", (0, 3))])
def test_features_only_out_indices_are_the_hand_computed_stages(name, out_indices):
    torch.manual_seed(0)
    feats = _create(name, features_only=True, out_indices=out_indices).eval()
    full = _create(name).eval()
    full.load_state_dict({k.removeprefix("model."): v for k, v in feats.state_dict().items()}, strict=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        if name == "metantk_conv4":
            taps, h = [], x
            for block in full.stages:
                h = block(h)
                taps.append(h)
        else:
            taps = _taps_by_hand(full, x, STAGE_ENDS[len(full.cells)])
        outs = feats(x)
    assert len(outs) == len(out_indices)
    assert all(torch.equal(o, taps[i]) for o, i in zip(outs, out_indices, strict=True))
    assert feats.feature_info.channels() == [taps[i].shape[1] for i in out_indices]
    assert torch.jit.script(feats)(x)[0].shape == outs[0].shape  # the getter wrapper scripts too


@pytest.mark.parametrize("name", ["metantk_nano", "metantk_conv4"])
def test_grad_checkpointing_stores_fewer_activations_and_keeps_gradients(name):
    torch.manual_seed(0)
    model = _create(name).train()
    ref = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)

    def forward_counting_saved(m):
        saved = [0]

        def pack(t):
            saved[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = m(x)
        return out, saved[0]

    expected, saved_plain = forward_counting_saved(ref)
    expected.sum().backward()
    model.set_grad_checkpointing(True)
    out, saved_ckpt = forward_counting_saved(model)
    out.sum().backward()
    # checkpointed blocks keep only their inputs for backward (measured: about 5x to 10x fewer saved elements)
    assert saved_ckpt < saved_plain / 3, (saved_ckpt, saved_plain)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    model.set_grad_checkpointing(False)
    assert forward_counting_saved(model)[1] == saved_plain


def test_group_matcher_groups_stem_cells_and_stages():
    from timm.models import group_parameters

    model = _create("metantk_cell5")
    fine = group_parameters(model, model.group_matcher(), reverse=True)
    coarse = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    # fine: stem 0, cell i -> i + 1, head last; coarse: stem 0, the three stages {0}, {1, 2}, {3, 4}, head last
    stage = {0: 1, 1: 2, 2: 2, 3: 3, 4: 3}
    for n in fine:
        parts = n.split(".")
        if parts[0] == "stem":
            assert fine[n] == coarse[n] == 0, n
        elif parts[0] == "cells":
            assert fine[n] == int(parts[1]) + 1 and coarse[n] == stage[int(parts[1])], n
        else:
            assert parts[0] == "classifier" and fine[n] == 6 and coarse[n] == 4, n
    assert model.no_weight_decay() == set()
    conv4 = timm.create_model("metantk_conv4")
    groups = group_parameters(conv4, conv4.group_matcher(), reverse=True)
    # block 0 is the stem (group 0), blocks 1-3 are groups 1-3, the head comes last
    assert groups["stages.0.0.weight"] == 0 and groups["stages.3.1.bias"] == 3 and groups["classifier.weight"] == 4


def test_pretrained_cfg_fields():
    for name in ALL:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.license == "mit" and cfg.origin_url.startswith("https://github.com/") and cfg.paper_ids, name
    assert timm.models.get_pretrained_cfg("metantk_cell5").paper_ids == ("arXiv:2203.09137",)
    assert timm.models.get_pretrained_cfg("metantk_metanas_cell5").paper_ids[0] == "arXiv:1911.11090"
    assert timm.models.get_pretrained_cfg("metantk_conv4").paper_ids[0] == "arXiv:1703.03400"


def test_a_manifest_gives_its_tag_an_hf_hub_id(tmp_path, monkeypatch):
    rev, digest = "a" * 40, "b" * 64
    (tmp_path / "m.json").write_text(
        '{"architecture": "metantk_cell5", "tag": "rfs_test", "repo_id": "org/metantk_cell5.rfs_test", '
        f'"revision": "{rev}", "files": {{"model.safetensors": "{digest}"}}}}'
    )
    monkeypatch.setenv("METANTK_HUB_MANIFESTS", str(tmp_path))
    cfgs = _registry._default_cfgs()
    tagged = cfgs["metantk_cell5.rfs_test"]
    assert tagged["hf_hub_id"] == f"org/metantk_cell5.rfs_test@{rev}"
    assert tagged["license"] == "mit" and tagged["paper_ids"] == ("arXiv:2203.09137",)
    assert "hf_hub_id" not in cfgs["metantk_cell5"]


@pytest.mark.parametrize("name", ["metantk_cell5", "metantk_cell", "metantk_conv4"])
def test_pretrained_without_published_weights_is_a_one_line_error(name):
    with pytest.raises(CheckpointError) as info:
        timm.create_model(name, pretrained=True)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400
    assert msg.startswith(f"{name} has no published weights") and f"metantk-zoo train --model {name} " in msg


def test_pretrained_with_a_weights_file_loads_it(tmp_path):
    src = timm.create_model("metantk_nano")
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    model = timm.create_model("metantk_nano", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors")))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values(), strict=True))


def test_cli_prints_the_missing_weights_error_as_one_line(capsys):
    from metantk_zoo.cli import main

    with pytest.raises(SystemExit) as info:
        main(["eval", "metantk_nano", "--pretrained", "--dataset", "synthetic"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("Error: metantk_nano has no published weights")
    assert "metantk-zoo train --model metantk_nano" in err


# ----------------------------------------------------------------------------------------------- the zoo table
CONV4_MACS_BY_HAND = (
    84 * 84 * 32 * 3 * 9 + 42 * 42 * 32 * 32 * 9 + 21 * 21 * 32 * 32 * 9 + 10 * 10 * 32 * 32 * 9 + 800 * 64
)  # four conv3x3 at 84, 42, 21, 10 (after each 2x2 pool) and the 800 -> 64 head


def test_zoo_table_lists_every_registered_entry_from_one_counter():
    rows = {r["name"]: r for r in zoo_table()}
    assert set(rows) == set(timm.list_models("metantk_*"))
    assert rows["metantk_conv4"]["params"] == 28896 + 800 * 64 + 64 and rows["metantk_conv4"]["macs"] == 27_390_464
    assert CONV4_MACS_BY_HAND == 27_390_464
    for name, golden in GOLDEN_64.items():
        assert rows[name]["params"] == golden
    assert rows["metantk_cell"]["params"] == rows["metantk_cell5"]["params"] == GOLDEN_64["metantk_mini5_a"]
    for name in ("metantk_nano", "metantk_cell8"):
        model = timm.create_model(name, device="meta")
        assert rows[name]["macs"] == count_macs(model) and rows[name]["params"] == count_parameters(model)
    assert rows["metantk_nano"]["macs"] < rows["metantk_cell5"]["macs"] < rows["metantk_cell8"]["macs"]


def test_readme_zoo_table_matches_the_counter():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for r in zoo_table():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{r['name']}` |")), None)
        assert row is not None, f"README zoo table has no row for {r['name']}"
        assert f"{r['params']:,}" in row and f"{r['macs'] / 1e9:.2f}G" in row, row


def test_models_command_lists_every_entry_with_params_and_macs():
    from typer.testing import CliRunner

    from metantk_zoo.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:] if line.strip()}
    for r in zoo_table():
        assert f"{r['params']:,}" in lines[r["name"]] and f"{r['macs'] / 1e9:.2f}G" in lines[r["name"]]
