"""Block-circulant and column-combined layers through the whole path: compressed in PyTorch, recognised
by the build from the weights alone, run by our kernels (x86 here; NEON on the emulated aarch64 device;
Mali and Adreno OpenCL on PoCL) and checked against PyTorch."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from torch import nn

import tvm_patterns as tp
from tvm_patterns.compress import oneshot_prune
from tvm_patterns.passes.circulant_kind import check_target
from tvm_patterns.passes.registry import LeaveDense
from tvm_patterns.devices.opencl_launcher import OpenCLLauncher

from ..layer_check import assert_matches_torch

OBJDUMP = "aarch64-linux-gnu-objdump"
FMLA_4S = re.compile(r"\bfmla\s+v\d+\.4s, v\d+\.4s, v\d+\.(?:4s|s\[\d\])")
RTOL = 1e-4
BENCH = Path(__file__).parents[2] / "scripts" / "bench_structured.py"


class TwoLinear(nn.Module):
    """in -> hidden -> out with a ReLU between: a user's own module, no Sequential."""

    def __init__(self, cin, hidden, cout):
        super().__init__()
        self.up, self.down = nn.Linear(cin, hidden), nn.Linear(hidden, cout)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def compressed(model: nn.Module, config) -> nn.Module:
    oneshot_prune(model, config).squash()
    return model.eval()


def kinds(report) -> dict:
    return {d.layer: d.kind for d in report}


CIRCULANT_CASES = {  # name: (in, hidden, out, block, input shape)
    "b=16, one row": (96, 64, 10, 16, (1, 96)),
    "b=8, 3 rows": (40, 24, 7, 8, (3, 40)),
    "b=4, tokens [2, 5, 64]": (64, 48, 5, 4, (2, 5, 64)),
    "b=32, batch 8": (64, 128, 3, 32, (8, 64)),
}


@pytest.mark.parametrize("case", CIRCULANT_CASES)
def test_circulant_linear_layer_matches_torch(case):
    cin, hidden, cout, b, shape = CIRCULANT_CASES[case]
    torch.manual_seed(0)
    model = compressed(TwoLinear(cin, hidden, cout), [{"module": "up", "kind": "circulant", "block": b}])
    report = []
    assert_matches_torch(model, torch.randn(*shape), report=report)
    assert kinds(report) == {"up": "circulant", "down": None}
    (up,) = [d for d in report if d.layer == "up"]
    assert f"block-circulant {b}x{b}" in up.reason and up.macs_sparse < up.macs_dense
    assert up.weight_bytes_packed < up.weight_bytes_dense


def test_a_dense_or_indivisible_layer_is_not_taken_as_circulant():
    torch.manual_seed(0)
    model = compressed(TwoLinear(30, 20, 6), [{"module": "up", "kind": "circulant", "block": 2}])
    report = []
    assert_matches_torch(model, torch.randn(2, 30), report=report, options={"circulant": {"block_candidates": (4,)}})
    (up,) = [d for d in report if d.layer == "up"]
    assert up.kind is None and "circulant: not block-circulant" in up.reason


def test_a_circulant_layer_too_small_to_pay_stays_dense_with_the_reason():
    torch.manual_seed(0)
    model = compressed(TwoLinear(12, 20, 5), [{"module": "up", "kind": "circulant", "block": 4}])
    report = []
    assert_matches_torch(model, torch.randn(1, 12), report=report)
    (up,) = [d for d in report if d.layer == "up"]
    assert up.kind is None and "transforms cost more MACs than the dense layer" in up.reason


@pytest.mark.parametrize("target_name", ["mali", "adreno"])
@pytest.mark.parametrize("shape", [(1, 32), (2, 5, 32)])
def test_circulant_linear_layer_matches_torch_on_pocl(target_name, shape):
    torch.manual_seed(0)
    model = compressed(TwoLinear(32, 48, 4), [{"module": "up", "kind": "circulant", "block": 8}])
    report = []
    x = torch.randn(*shape)
    runner = OpenCLLauncher.build(tp.from_pytorch(model, x), getattr(tp.targets, target_name)(), report=report)
    assert kinds(report) == {"up": "circulant", "down": None}
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(runner(x.numpy()) - ref).max() <= RTOL * np.abs(ref).max()


def test_a_target_without_a_circulant_kernel_keeps_the_layer_dense_with_the_reason():
    with tvm.target.Target("cuda"), pytest.raises(LeaveDense, match="no circulant kernel for target cuda"):
        check_target()


class ConvCombine(nn.Module):
    """13 -> 10 1x1 conv stride 2 + BN + ReLU, 10 -> 12 1x1 conv, pooled, linear head 12 -> 6."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(13, 10, 1, stride=2), nn.BatchNorm2d(10), nn.ReLU())
        self.b = nn.Conv2d(10, 12, 1)
        self.head = nn.Linear(12, 6)

    def forward(self, x):
        return self.head(self.b(self.a(x)).mean(dim=(2, 3)))


def combined_conv_model():
    torch.manual_seed(0)
    model = ConvCombine()
    with torch.no_grad():
        model.a[1].running_mean.uniform_(-0.5, 0.5)
        model.a[1].running_var.uniform_(0.5, 2.0)
    return compressed(model, [{"module": "a.0", "kind": "column_combine", "group": 4},
                              {"module": "b", "kind": "column_combine", "group": 2},
                              {"module": "head", "kind": "column_combine", "group": 3}])


def test_column_combined_convs_and_linear_match_torch():
    report = []
    assert_matches_torch(combined_conv_model(), torch.randn(2, 13, 9, 11), report=report)
    assert kinds(report) == {"a.0": "column_combine", "b": "column_combine", "head": "column_combine"}
    by_layer = {d.layer: d for d in report}
    assert "column-combined by 4: 4 of 13 columns a row" in by_layer["a.0"].reason   # BN folded: still combined
    assert "column-combined by 2" in by_layer["b"].reason


def test_column_combined_tokens_match_torch():
    torch.manual_seed(0)
    model = compressed(TwoLinear(37, 40, 24), [{"module": "up", "kind": "column_combine", "group": 4},
                                               {"module": "down", "kind": "column_combine", "group": 3}])
    report = []
    assert_matches_torch(model, torch.randn(2, 7, 37), report=report)
    assert kinds(report) == {"up": "column_combine", "down": "column_combine"}


@pytest.mark.parametrize("rows,expected", [(1, "groups gathered along outputs"), (8, "groups gathered along outputs"),
                                           (9, "columns a row, 4.0x fewer MACs")])
def test_a_linear_layer_at_few_rows_gathers_along_its_outputs(rows, expected):
    """With AVX2 (AVX-512 permutes instead: test_column_combine_avx512)."""
    torch.manual_seed(0)
    model = compressed(TwoLinear(64, 48, 16), [{"module": "up", "kind": "column_combine", "group": 4}])
    report = []
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    assert_matches_torch(model, torch.randn(rows, 64), report=report, target=avx2)
    (up,) = [d for d in report if d.layer == "up"]
    assert up.kind == "column_combine" and up.reason.endswith(expected), up.reason
    if rows <= 8:    # values and one byte an offset: 5 bytes a kept weight
        assert up.weight_bytes_packed == 48 * 16 * 5


def test_unstructured_sparsity_is_not_taken_as_column_combined():
    torch.manual_seed(0)
    model = TwoLinear(64, 32, 4).eval()
    with torch.no_grad():
        model.up.weight.mul_((torch.rand_like(model.up.weight) < 0.25).float())
    report = []
    assert_matches_torch(model, torch.randn(1, 64), report=report, kinds=["column_combine"])
    (up,) = [d for d in report if d.layer == "up"]
    assert up.kind is None and "not column-combined" in up.reason


@pytest.mark.parametrize("target_name", ["mali", "adreno"])
def test_column_combined_model_matches_torch_on_pocl(target_name):
    model, x = combined_conv_model(), torch.randn(2, 13, 9, 11)
    report = []
    runner = OpenCLLauncher.build(tp.from_pytorch(model, x), getattr(tp.targets, target_name)(), report=report)
    assert set(kinds(report).values()) == {"column_combine"}
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(runner(x.numpy()) - ref).max() <= RTOL * np.abs(ref).max()


@pytest.fixture(scope="module")
def arm_structured(tmp_path_factory):
    """(aarch64 library, model, input) of a circulant layer feeding a column-combined one."""
    torch.manual_seed(0)
    model = compressed(TwoLinear(48, 32, 8), [{"module": "up", "kind": "circulant", "block": 8},
                                              {"module": "down", "kind": "column_combine", "group": 4}])
    x = torch.randn(3, 48)
    report = []
    ex = tp.build(tp.from_pytorch(model, x), tp.targets.arm_cpu(), report=report)
    assert kinds(report) == {"up": "circulant", "down": "column_combine"}
    path = tp.export_library(ex, tmp_path_factory.mktemp("structured_neon") / "model_aarch64.so", tp.targets.arm_cpu())
    return path, model, x


def test_neon_circulant_product_uses_4_lane_fma(arm_structured):
    dis = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(arm_structured[0])],
                         capture_output=True, text=True, check=True).stdout
    bodies = [b for b in re.split(r"\n(?=[0-9a-f]+ <)", dis) if re.match(r"[0-9a-f]+ <\w*circulant_dense\w*compute_\w*>:", b)]
    assert bodies, "no parallel body of the circulant kernel in the library"
    assert max(len(FMLA_4S.findall(b)) for b in bodies) >= 4


def test_neon_structured_model_matches_torch_on_the_emulated_device(arm_structured, arm_device):
    path, model, x = arm_structured
    with torch.no_grad():
        ref = model(x).numpy()
    out = arm_device.run_model(path, x.numpy())
    assert np.abs(out - ref).max() <= RTOL * np.abs(ref).max()


@pytest.mark.parametrize("args,message", [
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
])
def test_the_structured_benchmark_refuses_bad_arguments_before_any_work(tmp_path, args, message):
    proc = subprocess.run([sys.executable, str(BENCH), "--csv", str(tmp_path / "s.csv"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "s.csv").exists()
