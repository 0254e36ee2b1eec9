"""The host pooling schedule: max and average pools of every window, stride and padding match torch."""
from __future__ import annotations

import pytest
import torch
from tvm import s_tir

import tvm_patterns as tp
from schedules import pool2d_nchw_x86 as pool
from tvm_patterns.tuning import extract_tasks

from .layer_check import assert_matches_torch
from .tuning_helpers import tuned_error, write_log

CASES = {  # name: (input shape, pooling layer)
    "ResNet stem: 3x3 stride 2 padding 1": ((1, 8, 20, 20), torch.nn.MaxPool2d(3, 2, 1)),
    "VGG: 2x2 stride 2": ((2, 5, 14, 14), torch.nn.MaxPool2d(2, 2)),
    "odd width, no padding": ((1, 3, 11, 13), torch.nn.MaxPool2d(3, 2)),
    "ceil mode": ((1, 4, 9, 9), torch.nn.MaxPool2d(2, 2, ceil_mode=True)),
    "rectangular window and stride": ((1, 4, 12, 17), torch.nn.MaxPool2d((2, 3), (1, 2), (1, 1))),
    "average, padding counted": ((2, 6, 15, 15), torch.nn.AvgPool2d(3, 2, 1)),
    "average, padding not counted": ((1, 6, 15, 15), torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
    "after a ReLU (fused before the window)": ((1, 4, 16, 16), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(2))),
}


@pytest.mark.parametrize("case", CASES)
def test_pooling_matches_torch(case):
    shape, layer = CASES[case]
    assert_matches_torch(layer, torch.randn(*shape))


def test_pooling_is_a_tuning_task_whose_sampled_points_match_torch(tmp_path):
    layer = torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, 1), torch.nn.AvgPool2d(2, 2)).eval()
    x = torch.randn(2, 4, 28, 28)
    mod = tp.from_pytorch(layer, x)
    tasks, untunable = extract_tasks(mod, tp.targets.host())
    assert sorted(t.block for t in tasks) == ["pool_max", "pool_sum"] and untunable == []
    for seed in (1, 2, 3):
        db_dir = tmp_path / str(seed) / tp.targets.target_name(tp.targets.host())
        write_log(db_dir, tp.targets.host(),
                  [(t, t.design_space(s_tir.Schedule(t.mod, seed=seed))) for t in tasks])
        assert tuned_error(layer, x, mod, db_dir) < 1e-5, seed


def test_the_default_column_tile_is_the_widest_divisor_up_to_16_and_vectorized():
    assert [pool.default_tile(w) for w in (56, 112, 28, 14, 7, 13)] == [14, 16, 14, 14, 7, 13]
    mod = tp.from_pytorch(torch.nn.MaxPool2d(3, 2, 1), torch.randn(1, 16, 112, 112))
    asm = tp.build(mod).mod.imports[0].inspect_source("asm")
    assert any("vmaxps" in line and ("%zmm" in line or "%ymm" in line) for line in asm.splitlines())
