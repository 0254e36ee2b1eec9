"""Grouped and depthwise 3x3 convs pruned to patterns: built as the pattern conv of their block-diagonal
weight (each filter's kernels on its own group's channels) and checked against PyTorch."""
import numpy as np
import pytest
import torch

import tvm_patterns as tp
from tvm_patterns.compress import oneshot_prune, whole_network_config
from tvm_patterns.passes import pipeline
from tvm_patterns.passes.pattern_kind import ungrouped
from tvm_patterns.sparsity import PatternLibrary
from tvm_patterns.targets import arm_cpu, mali

from ..layer_check import assert_matches_torch


def test_a_grouped_weight_becomes_block_diagonal():
    w = np.arange(4 * 2 * 9, dtype="float32").reshape(4, 2, 3, 3) + 1
    full = ungrouped(w, 2)
    assert full.shape == (4, 4, 3, 3)
    assert np.array_equal(full[:2, :2], w[:2]) and np.array_equal(full[2:, 2:], w[2:])
    assert not full[:2, 2:].any() and not full[2:, :2].any()


def pruned(model: torch.nn.Module) -> torch.nn.Module:
    config = whole_network_config(model, by_name={"0": {}})   # named: pruned however small
    oneshot_prune(model, config, PatternLibrary.patdnn()).squash()
    return model.eval()


CASES = {  # name: (batch, channels in, channels out, groups, stride, height, width)
    "depthwise": (1, 32, 32, 32, 1, 14, 14),
    "depthwise, stride 2, odd size, batch 2": (2, 40, 40, 40, 2, 15, 9),
    "depthwise with a channel multiplier of 2": (1, 16, 32, 16, 1, 10, 12),
    "grouped (ResNeXt-like), 4 groups": (1, 32, 64, 4, 1, 12, 12),
    "grouped, stride 2": (1, 48, 48, 3, 2, 13, 16),
}


@pytest.mark.parametrize("case", CASES)
def test_grouped_pattern_conv_with_relu6_matches_torch(case):
    n, cin, cout, groups, stride, h, w = CASES[case]
    torch.manual_seed(0)
    model = pruned(torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1, groups=groups), torch.nn.ReLU6()))
    report = []
    assert_matches_torch(model, torch.randn(n, cin, h, w), report=report)
    assert [r.kind for r in report] == ["pattern"], report
    assert report[0].macs_dense / report[0].macs_sparse == pytest.approx(
        9 / 4 * (1 if cin == groups else 3.6), rel=0.05)


DEPTHWISE_CASES = {  # name: (batch, channels, stride, padding, height, width)
    "stride 1, 17 channels": (1, 17, 1, 1, 12, 20),
    "stride 2, batch 3, odd non-square input": (3, 24, 2, 1, 19, 30),
    "stride 2, no padding": (1, 16, 2, 0, 16, 13),
    "stride 1, padding 2": (2, 8, 1, 2, 9, 7),
}


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_a_depthwise_pattern_conv_runs_its_own_kernel_on_x86_and_matches_torch(case):
    n, c, stride, padding, h, w = DEPTHWISE_CASES[case]
    torch.manual_seed(1)
    model = pruned(torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, stride, padding, groups=c), torch.nn.ReLU6()))
    with torch.no_grad():
        model[0].weight[c // 2] = 0          # a channel with no taps left
    report = []
    x = torch.randn(n, c, h, w)
    out = assert_matches_torch(model, x, report=report)
    assert report[0].reason.endswith("depthwise implementation"), report[0].reason
    offsets = assert_matches_torch(model, x, options={"pattern": {"implementation": "offsets"}})
    np.testing.assert_allclose(out, offsets, rtol=1e-5, atol=1e-6)


def test_the_depthwise_implementation_refuses_a_conv_that_is_not_depthwise():
    torch.manual_seed(0)
    model = pruned(torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, 1, 1, groups=16)))   # two filters a channel
    report = []
    assert_matches_torch(model, torch.randn(1, 16, 8, 8), report=report,
                         options={"pattern": {"implementation": "depthwise"}})
    assert report[0].kind is None and "depthwise convs only" in report[0].reason, report[0].reason


def test_a_depthwise_conv_keeps_the_offset_tables_on_an_arm_cpu_and_is_refused_by_layer_on_a_gpu():
    torch.manual_seed(0)
    model = pruned(torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16)))
    mod = tp.from_pytorch(model, torch.randn(1, 16, 12, 12))
    report = []
    with arm_cpu():
        pipeline(arm_cpu(), report=report)(mod)
    assert report[0].reason.endswith("offsets implementation"), report[0].reason     # measured on x86 only
    with pytest.raises(ValueError, match="layer 0: the depthwise implementation has a schedule for CPUs only"):
        tp.build(mod, mali(), options={"pattern": {"implementation": "depthwise"}})
