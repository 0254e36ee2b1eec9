"""A block-punched 1x1 conv that feeds only a depthwise pattern conv is fused into it (x86): the wide
tensor between them is never written, and the answer is PyTorch's."""
import pytest
import torch
from torch import nn

from tvm_patterns.compress import oneshot_prune, whole_network_config
from tvm_patterns.passes.expand_depthwise import FUSED
from tvm_patterns.sparsity import PatternLibrary

from ..layer_check import assert_matches_torch


class InvertedResidual(nn.Module):
    """MobileNet-V2's block in torchvision's layout: expand 1x1, depthwise 3x3, project 1x1, each with a
    BatchNorm; the residual add where the shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 6, activation=nn.ReLU6, bias: bool = False):
        super().__init__()
        wide = cin * expand
        self.conv = nn.Sequential(
            nn.Conv2d(cin, wide, 1, bias=bias), *([nn.BatchNorm2d(wide)] if not bias else []), activation(),
            nn.Conv2d(wide, wide, 3, stride, 1, groups=wide, bias=False), nn.BatchNorm2d(wide), nn.ReLU6(),
            nn.Conv2d(wide, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.residual else y


def compressed(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):       # statistics of a trained network, not the identity
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    oneshot_prune(model, whole_network_config(model, by_name={n: {} for n in names}), PatternLibrary.patdnn()).squash()
    return model.eval()


CASES = {  # name: (block, batch, height, width)
    "stride 1 with the residual, 40 wide channels, batch 2": (lambda: InvertedResidual(8, 8, 1, expand=5), 2, 11, 14),
    "stride 2, odd non-square input": (lambda: InvertedResidual(16, 24, 2), 1, 15, 22),
    "a ReLU between the convs": (lambda: InvertedResidual(8, 16, 1, activation=nn.ReLU), 1, 9, 9),
    "no activation between the convs": (lambda: InvertedResidual(8, 16, 2, activation=nn.Identity), 3, 8, 10),
    "a 1x1 conv with its own bias and no BatchNorm": (lambda: InvertedResidual(8, 8, 1, bias=True), 1, 7, 7),
}


@pytest.mark.parametrize("case", CASES)
def test_the_expand_conv_is_fused_into_the_depthwise_conv_and_matches_torch(case):
    block, n, h, w = CASES[case]
    model = compressed(block())
    report = []
    assert_matches_torch(model, torch.randn(n, model.conv[0].in_channels, h, w), report=report)
    by_layer = {r.layer: r for r in report}
    assert by_layer["conv.0"].kind == "block"
    depthwise = next(r for name, r in by_layer.items() if r.kind == "pattern")
    assert depthwise.reason.endswith(f"depthwise implementation; {FUSED}"), depthwise.reason


def test_an_expanded_tensor_with_another_use_is_written_and_not_fused():
    class TwoUses(nn.Module):
        def __init__(self):
            super().__init__()
            self.expand = nn.Conv2d(8, 32, 1)
            self.depthwise = nn.Conv2d(32, 32, 3, 1, 1, groups=32)

        def forward(self, x):
            e = self.expand(x)
            return self.depthwise(torch.relu(e)) + e

    model = compressed(TwoUses())
    report = []
    assert_matches_torch(model, torch.randn(1, 8, 10, 12), report=report)
    depthwise = next(r for r in report if r.layer == "depthwise")
    assert depthwise.reason.endswith("depthwise implementation"), depthwise.reason


def test_a_strided_expand_conv_is_not_fused():
    model = compressed(nn.Sequential(nn.Conv2d(8, 32, 1, stride=2), nn.ReLU6(),
                                     nn.Conv2d(32, 32, 3, 1, 1, groups=32)))
    report = []
    assert_matches_torch(model, torch.randn(1, 8, 12, 12), report=report)
    assert FUSED not in report[1].reason, report[1].reason
