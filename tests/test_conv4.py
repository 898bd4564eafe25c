"""metantk_conv4: MAML's Conv4 layout, parameter counts, features_only, widths and input sizes."""

from __future__ import annotations

import pytest
import timm
import torch

from metantk_zoo.models.complexity import count_parameters
from metantk_zoo.models.conv4 import Conv4


def test_registered_and_maml_layout():
    assert "metantk_conv4" in timm.list_models("metantk*")
    m = timm.create_model("metantk_conv4", num_classes=5)
    assert [type(x).__name__ for x in m.stages[0]] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert len(m.stages) == 4 and all(b[0].kernel_size == (3, 3) and b[0].padding == (1, 1) for b in m.stages)
    assert m.head_hidden_size == 32 * 5 * 5  # MAML: flattened 5x5 map at 84px
    assert m.num_features == 32  # timm: channels of forward_features


@pytest.mark.parametrize("width,num_classes,expected", [
    (32, 5, 32901),  # MAML mini-ImageNet 5-way: 4 convs + 4 BNs = 28,896 + head 800*5+5
    (64, 5, 4 * 128 + 3 * 64 * 9 + 64 + 3 * (64 * 64 * 9 + 64) + 64 * 25 * 5 + 5),
    (32, 64, 28896 + 800 * 64 + 64),
])
def test_golden_parameter_counts(width, num_classes, expected):
    with torch.device("meta"):
        m = timm.create_model("metantk_conv4", width=width, num_classes=num_classes)
    assert count_parameters(m) == expected


def test_flatten_head_matches_the_map_at_84_and_pools_other_sizes():
    m = timm.create_model("metantk_conv4", num_classes=5).eval()
    x = torch.randn(2, 3, 84, 84)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, 32, 5, 5)
        torch.testing.assert_close(m.forward_head(f, pre_logits=True), f.flatten(1))  # identity pooling at 84
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    avg = timm.create_model("metantk_conv4", num_classes=5, global_pool="avg", width=16)
    assert avg.head_hidden_size == 16 and avg(torch.randn(1, 3, 40, 40)).shape == (1, 5)
    m.reset_classifier(3, global_pool="avg")
    assert m.head_hidden_size == 32 and m(x).shape == (2, 3)
    m.reset_classifier(0, global_pool="")  # timm: no pooling, no classifier -> the 4-d map
    with torch.no_grad():
        assert torch.equal(m(x), m.forward_features(x))


def test_features_only():
    model = timm.create_model("metantk_conv4", features_only=True, width=8).eval()
    assert model.feature_info.reduction() == [2, 4, 8, 16] and model.feature_info.channels() == [8] * 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        outs = model(x)
        full = timm.create_model("metantk_conv4", width=8).eval()
        missing, unexpected = full.load_state_dict(
            {k.removeprefix("model."): v for k, v in model.state_dict().items()}, strict=False)
        assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected
        assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 16), (1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
        assert torch.equal(outs[-1], full.forward_features(x))


@pytest.mark.parametrize("bad,match", [(dict(width=0), "width"), (dict(global_pool="max"), "global_pool"),
                                       (dict(img_size=8), "img_size"), (dict(genotype="x"), "unexpected")])
def test_bad_arguments(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Conv4(**bad)
