"""whole_network_config: one recipe that compresses every layer of any nn.Module, saying why any
layer stays dense."""
import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import tvm_patterns as tp
from tvm_patterns.compress import layer_type, oneshot_prune, whole_network_config


class InvertedResidual(nn.Module):
    """torchvision's MobileNet-V2 block, in its layout (conv/bn/relu6 inside one nn.Sequential)."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def mobilenet_like():
    torch.manual_seed(0)
    features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()),
                             InvertedResidual(32, 40, 1, 6), InvertedResidual(40, 40, 1, 6),
                             InvertedResidual(40, 72, 2, 6))
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Sequential(nn.Dropout(0.2), nn.Linear(72, 100))).eval()


def resnext_like():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1, groups=4),
                         nn.ReLU(), nn.Conv2d(64, 128, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, 10)).eval()


def test_each_layer_type_gets_its_structure():
    config = {e["module"]: e for e in whole_network_config(mobilenet_like())}
    assert config["0.1.conv.0"]["kind"] == "block"                 # 1x1 expand
    assert config["0.1.conv.3"] == {"module": "0.1.conv.3", "kind": "pattern", "patterns": 8,
                                           "taps": 4, "connectivity": 1.0}   # depthwise: patterns only
    assert config["0.3.conv.6"]["kind"] == "block"                 # 1x1 project
    assert config["3.1"] == {"module": "3.1", "kind": "block", "block_rows": 8, "sparsity": 0.75}
    assert {e["module"]: e["kind"] for e in whole_network_config(resnext_like())}["2"] == "pattern"   # grouped


def test_the_stem_and_small_layers_stay_dense_with_a_reason():
    dense = []
    config = whole_network_config(mobilenet_like(), dense=dense)
    reasons = dict(dense)
    assert reasons["0.0.0"] == "the stem (3 input channels)"
    assert all(n not in reasons for n in (e["module"] for e in config))
    assert all("too small to pay" in r for n, r in dense if n != "0.0.0")


def test_overrides_by_layer_type_and_by_module_name():
    model = mobilenet_like()
    config = {e["module"]: e for e in whole_network_config(
        model, by_type={"linear": {"sparsity": 0.9}, "depthwise3x3": None}, by_name={"0.1.conv.0": None})}
    assert config["3.1"]["sparsity"] == 0.9
    assert not any(layer_type(dict(model.named_modules())[n]) == "depthwise3x3" for n in config)
    assert "0.1.conv.0" not in config


def test_an_override_with_another_kind_replaces_the_default_entry():
    model = mobilenet_like()
    config = {e["module"]: e for e in whole_network_config(
        model, by_type={"conv1x1": {"kind": "column_combine", "group": 4}, "linear": {"kind": "circulant", "block": 8}})}
    kinds = {layer_type(dict(model.named_modules())[n]): (e["kind"], sorted(e)) for n, e in config.items()}
    assert kinds["conv1x1"] == ("column_combine", ["group", "kind", "module"])
    assert kinds["linear"] == ("circulant", ["block", "kind", "module"])


@pytest.mark.parametrize("kwargs,message", [
    ({"by_type": {"conv5x5": None}}, "unknown layer type 'conv5x5'"),
    ({"by_name": {"0.9": None}}, "the model has no module '0.9'"),
])
def test_an_override_naming_nothing_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        whole_network_config(mobilenet_like(), **kwargs)


def test_a_depthwise_conv_refuses_connectivity_it_cannot_have():
    model = mobilenet_like()
    with pytest.raises(ValueError, match="'0.1.conv.3' is a depthwise conv .* connectivity must be 1"):
        oneshot_prune(model, [{"module": "0.1.conv.3", "kind": "pattern", "connectivity": 2.0}])


@pytest.mark.parametrize("make", [mobilenet_like, resnext_like])
def test_a_model_in_torchvision_layout_compressed_whole_builds_right_and_reports_every_layer_by_name(make):
    model = make()
    config = whole_network_config(model)
    oneshot_prune(model, config).squash()
    for entry in config:                                   # every kernel of a pattern layer fits 4 taps
        w = dict(model.named_modules())[entry["module"]].weight
        if entry["kind"] == "pattern":
            assert int((w.flatten(2) != 0).sum(-1).max()) <= 4
    x = torch.randn(2, 3, 18, 22)
    report = []
    vm = relax.VirtualMachine(tp.build(tp.from_pytorch(model, x), report=report), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    names = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {r.layer for r in report} == names                          # torch names, dense layers too
    blocks = {e["module"] for e in config if e["kind"] == "block"}
    assert {r.layer for r in report if r.kind == "block"} == blocks


def test_a_depthwise_conv_is_pruned_however_few_weights_it_has():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 4, 3, padding=1))
    dense = []
    config = {e["module"]: e for e in whole_network_config(model, dense=dense)}
    assert config["0"]["kind"] == "pattern"            # 144 weights: its cost is its activations
    assert dict(dense)["1"] == "576 weights: too small to pay"
