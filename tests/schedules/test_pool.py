"""The host pooling schedule: max and average pools of every window, stride and padding match torch."""
from __future__ import annotations

import pytest
import torch
from tvm.target import Target

import tvm_patterns as tp
from tvm_patterns.tuning import extract_tasks

from ..layer_check import assert_matches_torch

CASES = {  # name: (input shape, pooling layer); output rows wider than 16 columns unless said
    "ResNet stem: 3x3 stride 2 padding 1": ((1, 8, 20, 40), torch.nn.MaxPool2d(3, 2, 1)),
    "VGG: 2x2 stride 2": ((2, 5, 14, 36), torch.nn.MaxPool2d(2, 2)),
    "odd width, no padding": ((1, 3, 11, 41), torch.nn.MaxPool2d(3, 2)),
    "ceil mode": ((1, 4, 9, 37), torch.nn.MaxPool2d(2, 2, ceil_mode=True)),
    "rectangular window and stride": ((1, 4, 12, 41), torch.nn.MaxPool2d((2, 3), (1, 2), (1, 1))),
    "average, padding counted": ((2, 6, 15, 39), torch.nn.AvgPool2d(3, 2, 1)),
    "average, padding not counted": ((1, 6, 15, 39), torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
    "after a ReLU (fused before the window)": ((1, 4, 16, 40), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(2))),
    "a narrow row (the generic schedule)": ((1, 4, 14, 14), torch.nn.MaxPool2d(2)),
}


@pytest.mark.parametrize("case", CASES)
def test_pooling_matches_torch(case):
    shape, layer = CASES[case]
    assert_matches_torch(layer, torch.randn(*shape))


def test_pools_are_vectorized_for_avx512_and_are_not_tuning_tasks():
    """For an AVX-512 CPU LLVM's loop vectorizer makes zmm code of the plain stride-2 column loop (for
    AVX2 ones, Zen 1 and 3 or Haswell, its cost model leaves that loop scalar); the schedule has no knob."""
    mod = tp.from_pytorch(torch.nn.MaxPool2d(3, 2, 1), torch.randn(1, 16, 112, 112))
    asm = tp.build(mod, Target({"kind": "llvm", "mcpu": "znver5"})).mod.imports[0].inspect_source("asm")
    assert any("vmaxps" in line and "%zmm" in line for line in asm.splitlines())
    tasks, untunable = extract_tasks(mod, tp.targets.host())
    assert tasks == [] and untunable == ["max_pool2d"]
