"""Filter-block patterns: blocks of filters that share kernels and patterns, compressed, recognised by
the build and run by a kernel that reuses each input vector across a block's filters."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm

import tvm_patterns as tp
from tvm_patterns.compress import oneshot_prune
from tvm_patterns.sparsity import PatternLibrary, project_pattern_connectivity
from tvm_patterns.sparsity.filter_block import filter_block_tables, project_filter_block_pattern

from ..layer_check import assert_matches_torch
from .test_targets_opencl import check as check_opencl

LIB = PatternLibrary.patdnn()


def shared_structure(w: np.ndarray, filters: int) -> bool:
    """Whether every block of ``filters`` consecutive filters has one nonzero mask per input channel."""
    nz = (w != 0).reshape(*w.shape[:2], 9)
    return all((nz[b:b + filters] == nz[b]).all() for b in range(0, len(w), filters))


@pytest.mark.parametrize("K,filters", [(16, 4), (10, 4), (12, 2)])
def test_the_projection_keeps_one_pattern_per_block_and_channel_at_the_connectivity_rate(K, filters):
    w = np.random.default_rng(0).standard_normal((K, 12, 3, 3)).astype("float32")
    p = project_filter_block_pattern(w, LIB, 3.0, filters)
    assert shared_structure(p, filters)
    blocks = -(-K // filters)
    kept = (p != 0).reshape(K, 12, 9).any(axis=2)
    assert kept[::filters].sum() == round(blocks * 12 / 3.0)          # one (block, channel) kernel in 3
    masks = {m.tobytes() for m in LIB.masks.reshape(-1, 9)}
    assert all((p[k, c] != 0).reshape(9).tobytes() in masks for k, c in np.argwhere(kept))
    assert np.array_equal(p[p != 0], w[p != 0])                         # survivors keep their values


def test_free_patterns_are_not_taken_for_filter_blocks():
    w = project_pattern_connectivity(np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype("float32"),
                                     LIB, 3.6)
    with pytest.raises(ValueError, match="do not share"):
        filter_block_tables(w, LIB, 4, plane=100, row=10)


def test_the_tables_hold_each_filter_of_a_block_innermost_and_zeros_past_the_last_filter():
    w = project_filter_block_pattern(np.random.default_rng(2).standard_normal((6, 5, 3, 3)).astype("float32"),
                                     LIB, 2.0, 4)
    t = filter_block_tables(w, LIB, 4, plane=100, row=10)
    assert t.value.shape[0] == 2 and t.value.shape[3] == 4 and t.n_filters == 6
    assert not t.value[1, :, :, 2:].any()                               # filters 6 and 7 do not exist
    c = int(t.offset[0, 0, 0]) // 100                                   # block 0's first kernel's channel
    nz = np.flatnonzero(w[0, c].reshape(9))
    assert np.allclose(t.value[0, 0, :, 0], w[0, c].reshape(9)[nz])


def block_conv(cin, cout, stride=1, padding=1, bias=True, connectivity=3.0, filters=4, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, bias=bias)
    w = project_filter_block_pattern(conv.weight.detach().numpy(), LIB, connectivity, filters)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
    return conv


CASES = {  # name: (batch, cin, cout, height, width, conv kwargs)
    "basic": (1, 16, 32, 14, 14, {}),
    "filters not a multiple of the block, odd channels, batch 2": (2, 5, 10, 9, 11, {}),
    "stride 2": (1, 8, 8, 12, 12, {"stride": 2}),
    "stride 2, padding 0, non-square": (1, 8, 16, 9, 17, {"stride": 2, "padding": 0}),
    "a 56-wide row": (1, 6, 8, 6, 56, {}),
    "no bias, blocks of 2": (1, 4, 6, 7, 7, {"bias": False, "filters": 2}),
}


@pytest.mark.parametrize("case", CASES)
def test_filter_block_conv_matches_torch(case):
    n, cin, cout, h, w, kw = CASES[case]
    model = torch.nn.Sequential(block_conv(cin, cout, **kw), torch.nn.ReLU())
    report = []
    assert_matches_torch(model, torch.randn(n, cin, h, w), report=report)
    assert [r.kind for r in report] == ["filter_block"], report
    assert f"blocks of {kw.get('filters', 4)} filters" in report[0].reason


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = block_conv(12, 12, connectivity=2.0)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


def test_a_residual_add_and_relu_fuse_after_the_filter_block_conv():
    report = []
    assert_matches_torch(Residual().eval(), torch.randn(1, 12, 10, 10), report=report)
    assert [r.kind for r in report] == ["filter_block"]


def test_oneshot_pruning_with_the_filter_block_kind_gives_weights_the_build_recognises():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 24, 3, padding=1), torch.nn.ReLU()).eval()
    pruner = oneshot_prune(model, [{"module": "2", "kind": "filter_block_pattern", "connectivity": 3.0,
                                    "filters": 4}])
    pruner.squash()
    assert shared_structure(model[2].weight.detach().numpy(), 4)
    report = []
    assert_matches_torch(model, torch.randn(1, 3, 12, 12), report=report)
    assert [r.kind for r in report if r.rewritten] == ["filter_block"]


def innermost_loops(asm: str) -> list[list[str]]:
    """The bodies of the loops of an x86 listing: from a label to the last jump back to it."""
    lines = asm.splitlines()
    labels = {line[:-1]: i for i, line in enumerate(lines) if line.startswith(".LBB") and line.endswith(":")}
    loops = []
    for i, line in enumerate(lines):
        parts = line.split()
        if parts and parts[0].startswith("j") and len(parts) == 2 and labels.get(parts[1], i) < i:
            loops.append(lines[labels[parts[1]]:i + 1])
    return loops


@pytest.mark.parametrize("hw", [56, 28])
def test_the_hot_loop_loads_one_input_vector_per_block_of_fmas_and_keeps_the_tile_in_registers(hw):
    """AVX-512 build: in the loop with the most FMAs, each input vector loaded feeds the four filters
    of a block (one vector load per 4 FMAs, plus the broadcast weights), and no accumulator is
    stored (the 28x28 layer's tile of 16 accumulators is 1 KB: passes.register_tiles keeps it on
    the stack, where LLVM holds it in registers)."""
    model = torch.nn.Sequential(block_conv(16, 16)).eval()
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    asm = tp.build(tp.from_pytorch(model, torch.randn(1, 16, hw, hw)), target).mod.imports[0].inspect_source("asm")
    loop = max(innermost_loops(asm), key=lambda body: (sum("vfmadd" in line for line in body), -len(body)))
    fma = sum("vfmadd" in line for line in loop)
    moves = [line.split() for line in loop if line.strip().startswith("vmovups")]
    vector_loads = sum("(%" in parts[1].split(",")[0] for parts in moves)
    vector_stores = sum("(%" in parts[-1] for parts in moves)
    assert fma >= 16 and vector_loads * 4 <= fma and vector_stores == 0, (fma, vector_loads, vector_stores)


FMLA_BY_ELEMENT = re.compile(r"\bfmla\s+v\d+\.4s, v(\d+)\.4s, v\d+\.s\[(\d)\]")


def test_on_aarch64_each_loaded_input_vector_feeds_the_four_filters_and_matches_torch(arm_device, tmp_path):
    """Cross-compiled for targets.arm_cpu(): the conv's code multiplies input vectors by each of the
    four lanes of a block's weight register, and the emulated device's output is PyTorch's."""
    torch.manual_seed(4)
    model = torch.nn.Sequential(block_conv(6, 10, stride=2), torch.nn.ReLU()).eval()
    x = torch.randn(2, 6, 15, 13)
    report = []
    ex = tp.build(tp.from_pytorch(model, x), tp.targets.arm_cpu(), report=report)
    assert [r.kind for r in report] == ["filter_block"]
    path = tp.export_library(ex, tmp_path / "filter_block_aarch64.so", tp.targets.arm_cpu())
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", str(path)],
                         capture_output=True, text=True, check=True).stdout
    lanes = {lane for _, lane in FMLA_BY_ELEMENT.findall(dis)}
    assert lanes == {"0", "1", "2", "3"}, lanes
    with torch.no_grad():
        ref = model(x).numpy()
    out = arm_device.run_model(path, x.numpy())
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize("target_name", ["mali", "adreno"])
@pytest.mark.parametrize("case", ["filters not a multiple of the block, odd channels, batch 2", "stride 2",
                                  "no bias, blocks of 2"])
def test_on_opencl_the_filter_block_kernel_matches_torch_on_pocl(case, target_name):
    n, cin, cout, h, w, kw = CASES[case]
    torch.manual_seed(0)
    model = torch.nn.Sequential(block_conv(cin, cout, **kw), torch.nn.ReLU())
    runner = check_opencl(model, torch.randn(n, cin, h, w), target_name)
    assert "filter_block" in runner.kernels[-1].name


def test_on_opencl_each_gathered_input_vector_feeds_the_four_filters_of_a_block():
    """The work-group divides the plane (no guarded statement), so a tap's input indices are computed
    once and read by the four filters' multiply-adds in one basic block."""
    torch.manual_seed(0)
    runner = check_opencl(torch.nn.Sequential(block_conv(16, 32), torch.nn.ReLU()), torch.randn(1, 16, 14, 16), "mali")
    body = runner.source.split(f"__kernel void {runner.kernels[-1].name}(")[-1]
    indices = re.findall(r"long4 (v_\w*) =", body)
    assert indices and "get_local_id(0))) <" not in body
    for v in indices:
        assert body.count(f"pattern_conv2d_pad_ptr[{v}.s0]") == 4, v


@pytest.mark.parametrize("filters", [0, -2, 2.5, True])
def test_a_block_size_that_is_not_a_positive_integer_is_refused_by_option_name(filters):
    model = torch.nn.Sequential(block_conv(8, 8)).eval()
    with pytest.raises(ValueError, match=r"options\['filter_block'\]\['filters'\] must be an integer >= 1"):
        tp.build(tp.from_pytorch(model, torch.randn(1, 8, 8, 8)), options={"filter_block": {"filters": filters}})


@pytest.mark.parametrize("filters", [0, 1.5])
def test_the_compression_kind_refuses_a_block_size_that_is_not_a_positive_integer(filters):
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1))
    with pytest.raises(ValueError, match="filters must be a positive integer"):
        oneshot_prune(model, [{"module": "0", "kind": "filter_block_pattern", "filters": filters}])


def test_bench_layers_refuses_a_negative_filter_block(tmp_path):
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "bench_layers.py"),
                           "--filter-block", "-1", "--csv", str(tmp_path / "l.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--filter-block must be >= 0" in proc.stderr
