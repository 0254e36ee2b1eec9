"""group_conv2d_nchw_x86: dense grouped and depthwise convs, row-vector tiled, against PyTorch on
odd shapes (channels and widths not a multiple of the vector width, stride 2, batch > 1, non-square)."""
import pytest
import torch
from tvm.target import Target

import tvm_patterns as tp
from schedules.registry import find_schedule

from ..layer_check import assert_matches_torch


@pytest.mark.parametrize("channels,groups,stride,shape", [
    (30, 30, 1, (1, 17, 23)),      # depthwise, odd widths
    (30, 30, 2, (2, 18, 21)),      # depthwise, stride 2, batch 2
    (96, 96, 2, (1, 28, 28)),      # MobileNet-V2's stride-2 depthwise
    (64, 4, 1, (1, 14, 9)),        # ResNeXt-style grouped
    (24, 3, 2, (3, 11, 16)),
])
def test_a_dense_grouped_or_depthwise_conv_with_relu6_matches_torch(channels, groups, stride, shape):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, stride, 1, groups=groups),
                                torch.nn.BatchNorm2d(channels), torch.nn.ReLU6()).eval()
    n, h, w = shape
    assert_matches_torch(model, torch.randn(n, channels, h, w), sparse=False)


def test_a_depthwise_conv_gets_its_own_schedule_and_vector_fmas():
    avx512 = Target({"kind": "llvm", "mcpu": "znver4"})
    assert find_schedule("group_conv2d_nchw", avx512) is not find_schedule("*", avx512)
    mod = tp.from_pytorch(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16).eval(), torch.randn(1, 16, 16, 16))
    asm = tp.build(mod, avx512, sparse=False).mod.imports[0].inspect_source("asm")
    assert any("vfmadd" in line and ("%ymm" in line or "%zmm" in line) for line in asm.splitlines())
