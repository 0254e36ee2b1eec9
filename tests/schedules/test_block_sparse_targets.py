"""Block-punched 1x1 convs and linear layers on aarch64 NEON (cross-built, run on the emulated aarch64
device) and on Mali / Adreno (OpenCL kernels run on PoCL), against PyTorch; their design spaces."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax, s_tir, te

import schedules.block_sparse_neon as neon
import schedules.block_sparse_opencl as ocl
import schedules.block_sparse_x86 as x86
import tvm_patterns as tp
from tvm_patterns.computes.block_sparse import (CONV_BLOCK, DENSE_BLOCK, Conv1x1Geometry, block_sparse_conv2d_1x1,
                                                block_sparse_dense)
from tvm_patterns.devices.opencl_launcher import OpenCLLauncher
from tvm_patterns.passes.schedule_pass import SCHEDULED_ATTR
from tvm_patterns.sparsity.block import pack_block_punched, project_block_punched

from .test_block_sparse import ConvBlock, TokenMLP, prune_blocks
from ..tuning_helpers import points_of, sampled

RTOL = 1e-4
OBJDUMP = "aarch64-linux-gnu-objdump"
FMLA_4S = re.compile(r"\bfmla\s+v\d+\.4s, v\d+\.4s, v\d+\.(?:4s|s\[\d\])")
OPENCL = {"mali": tp.targets.mali, "adreno": tp.targets.adreno}


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


# ---------------------------------------------------------------- models: every conv / linear block-pruned

def ConvNet():   # noqa: N802  (a model class, as the table reads)
    """13 -> 10 1x1 conv, stride 2 (odd channels, K not a multiple of R, cropped width) + BN + ReLU;
    10 -> 10 1x1 conv with a residual; pooling and a linear head on a batch of 2 rows."""
    return ConvBlock(cin=13, width=10, classes=6)


def TokenMLP30():   # noqa: N802
    """[B, T, 30] tokens: 30 -> 44 -> 30, GELU between, residual."""
    return TokenMLP(dim=30, hidden=44)


def plain_conv():
    """Stride 1, width 16, K a multiple of R: the write-back is a straight vector store."""
    return torch.nn.Sequential(torch.nn.Conv2d(12, 16, 1), torch.nn.ReLU())


MODELS = {  # name: (model, input shape, layers rewritten to the block kind)
    "conv stride 2 + BN/ReLU, residual conv, linear head, batch 2": (ConvNet, (2, 13, 9, 11), 3),
    "plain write-back conv": (plain_conv, (1, 12, 4, 16), 1),
    "token MLP [2, 7, 30]": (TokenMLP30, (2, 7, 30), 2),
}


def block_pruned(name: str, R: int = 4, sparsity: float = 0.75):
    """(model with every conv / linear weight block-punched, input, expected block layers)."""
    make, shape, layers = MODELS[name]
    torch.manual_seed(0)
    return prune_blocks(make(), R, sparsity), torch.randn(*shape), layers


def torch_ref(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


# ---------------------------------------------------------------- single kernels wrapped in a Relax module

def conv_kernel(N=2, C=13, H=9, W=11, K=10, R=4, stride=2, sparsity=0.75, seed=0):
    """(PrimFunc, main block, x, col_idx, values, torch reference) of one block-punched 1x1 conv."""
    rng = np.random.default_rng(seed)
    w = project_block_punched(rng.standard_normal((K, C)).astype("float32"), R, sparsity)
    p = pack_block_punched(w, R)
    geom = Conv1x1Geometry(N, C, H, W, K, (stride, stride))
    phs = [te.placeholder((N, C, H, W), name="x"), te.placeholder(p.col_idx.shape, "int32", name="col_idx"),
           te.placeholder(p.values.shape, name="values")]
    func = te.create_prim_func([*phs, block_sparse_conv2d_1x1(*phs, geom)])
    x = rng.standard_normal((N, C, H, W)).astype("float32")
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w.reshape(K, C, 1, 1)), stride=stride)
    return func, CONV_BLOCK, x, p.col_idx, p.values, ref.numpy()


def dense_kernel(shape=(2, 5, 30), out_features=20, R=8, sparsity=0.75, seed=0):
    """(PrimFunc, main block, x, col_idx, values, torch reference) of one block-punched linear layer."""
    rng = np.random.default_rng(seed)
    w = project_block_punched(rng.standard_normal((out_features, shape[-1])).astype("float32"), R, sparsity)
    p = pack_block_punched(w, R)
    phs = [te.placeholder(shape, name="x"), te.placeholder(p.col_idx.shape, "int32", name="col_idx"),
           te.placeholder(p.values.shape, name="values")]
    func = te.create_prim_func([*phs, block_sparse_dense(*phs, out_features)])
    x = rng.standard_normal(shape).astype("float32")
    ref = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w))
    return func, DENSE_BLOCK, x, p.col_idx, p.values, ref.numpy()


KERNELS = {"conv 13->10 stride 2, batch 2": conv_kernel, "linear [2, 5, 30] -> 20": dense_kernel}


def relax_module(scheduled: tvm.tirx.PrimFunc, x, col_idx, values, out_shape) -> tvm.IRModule:
    """main(x) = call_tir(the already scheduled kernel, x, col_idx, values): built with ``sparse=False``,
    so our pipeline keeps the schedule and lowers the rest as for a model."""
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(list(x.shape), "float32"))
    with bb.function("main", [xv]):
        func = scheduled.with_attr(SCHEDULED_ATTR, True).with_attr("global_symbol", "block_sparse_kernel")
        gv = bb.add_func(func, "block_sparse_kernel")
        y = bb.emit(relax.call_tir(gv, [xv, relax.const(col_idx), relax.const(values)],
                                   relax.TensorType(list(out_shape), "float32")))
        bb.emit_func_output(y)
    return bb.get()


def scheduled(func, block, fn, target, knobs=None) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    fn(sch, sch.get_sblock(block), target, knobs)
    return sch


# ---------------------------------------------------------------- aarch64 NEON on the emulated device

def run_on_arm(device, mod, path, x) -> np.ndarray:
    ex = tp.build(mod, tp.targets.arm_cpu(), sparse=False)
    return device.run_model(tp.export_library(ex, path, tp.targets.arm_cpu()), x)


@pytest.fixture(scope="module", params=list(MODELS))
def arm_model(request, tmp_path_factory):
    """(exported aarch64 library, model, input, report) of one model."""
    model, x, layers = block_pruned(request.param)
    report = []
    ex = tp.build(tp.from_pytorch(model, x), tp.targets.arm_cpu(), report=report)
    assert [d.kind for d in report] == ["block"] * layers, [(d.layer, d.kind, d.reason) for d in report]
    path = tp.export_library(ex, tmp_path_factory.mktemp("block_neon") / "model_aarch64.so", tp.targets.arm_cpu())
    return path, model, x


def block_kernel_bodies(path) -> dict[str, str]:
    """Disassembly of the block kernels' parallel bodies (``..._compute_``: they hold the register tiles)."""
    dis = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(path)],
                         capture_output=True, text=True, check=True).stdout
    bodies = {}
    for body in re.split(r"\n(?=[0-9a-f]+ <)", dis):
        m = re.match(r"[0-9a-f]+ <(\w*block_sparse\w*compute_\w*)>:", body)
        if m:
            bodies[m.group(1)] = body
    return bodies


def test_neon_block_kernels_use_4_lane_fma(arm_model):
    bodies = block_kernel_bodies(arm_model[0])
    assert bodies, "no parallel body of a block kernel in the library"
    for name, body in bodies.items():
        fmla = FMLA_4S.findall(body)
        assert len(fmla) >= 4, f"{name}: {len(fmla)} NEON 'fmla vN.4s'"


def test_neon_model_matches_torch_on_the_emulated_device(arm_model, arm_device):
    path, model, x = arm_model
    err = relative_error(arm_device.run_model(path, x.numpy()), torch_ref(model, x))
    assert err < RTOL, f"relative max error {err:.2e} on the aarch64 device"


def test_neon_register_tile_fits_the_a76_budget():
    for R, ho, wvecs in [(4, 5, 2), (8, 7, 2), (16, 14, 4), (16, 1, 2), (3, 16, 4), (16, 56, 14)]:
        k = neon.default_knobs(R, ho, wvecs)
        assert R % k.rows == 0 and ho % k.h_rows == 0 and wvecs % k.vectors == 0
        assert k.rows * k.h_rows * k.vectors <= neon.MAX_ACCUMULATORS
    big = neon.default_knobs(16, 56, 14)
    assert big.rows * big.h_rows * big.vectors > 12          # more than AVX2's budget


# ---------------------------------------------------------------- Mali / Adreno on PoCL

@pytest.mark.parametrize("target_name", OPENCL)
@pytest.mark.parametrize("name", MODELS)
def test_opencl_model_matches_torch_on_pocl(name, target_name):
    model, x, layers = block_pruned(name)
    report = []
    runner = OpenCLLauncher.build(tp.from_pytorch(model, x), OPENCL[target_name](), report=report)
    assert [d.kind for d in report] == ["block"] * layers
    err = relative_error(runner(x.numpy()), torch_ref(model, x))
    assert err < RTOL, f"relative max error {err:.2e} on PoCL ({target_name})"
    limit = int(runner.target.attrs["max_num_threads"])
    assert all(np.prod(k.local) <= limit for k in runner.kernels)


def kernel_on_pocl(sch: s_tir.Schedule, target, x, col_idx, values, out_shape) -> OpenCLLauncher:
    return OpenCLLauncher.build(relax_module(sch.mod["main"], x, col_idx, values, out_shape), target, sparse=False)


def block_kernel_source(runner) -> str:
    """OpenCL C of the main block kernel (the last kernel of the PrimFunc holding the block)."""
    (host,) = [h for name, h in runner.hosts.items() if "block_sparse" in name]
    return runner.source.split(f"__kernel void {host.kernels[-1].name}(")[-1].split("__kernel")[0]


def test_mali_block_kernel_is_float4():
    model, x, _ = block_pruned("plain write-back conv")
    runner = OpenCLLauncher.build(tp.from_pytorch(model, x), tp.targets.mali())
    body = block_kernel_source(runner)
    assert "float4" in body and "vstore4" in body
    assert re.search(r"vload4|\*\(float4\*\)", body), "the input is not read as float4"


@pytest.mark.parametrize("max_threads", [256, 32])
def test_work_group_size_is_a_knob_within_the_limit(max_threads):
    func, block, x, col_idx, values, ref = conv_kernel(N=1, C=16, H=16, W=16, K=16, stride=1)
    target = tp.targets.mali(max_threads=max_threads)
    for knobs in [ocl.Knobs(rows=2, work_group=16), ocl.Knobs(rows=4, work_group=64), None]:
        sch = scheduled(func, block, ocl.schedule_mali, target, knobs)
        runner = kernel_on_pocl(sch, target, x, col_idx, values, ref.shape)
        main = runner.kernels[-1]
        expected = min((knobs or ocl.MALI).work_group, max_threads)
        assert main.local == (expected, 1, 1)
        rows = (knobs or ocl.MALI).rows
        assert main.groups[0] * expected == 16 * 16 * 16 // (4 * rows)   # an item: RT rows x float4


# ---------------------------------------------------------------- design spaces

SPACES = {  # name: (schedule module, hand schedule, target)
    "x86": (x86, x86.schedule, tp.targets.host),
    "neon": (neon, neon.schedule, tp.targets.arm_cpu),
    "mali": (ocl, ocl.schedule_mali, tp.targets.mali),
    "adreno": (ocl, ocl.schedule_adreno, tp.targets.adreno),
}


def hand_point_of_space(module, hand, func, block, target) -> s_tir.Schedule:
    """The design space's point that is exactly the hand-scheduled function (it must have one)."""
    found = points_of(module.design_space(s_tir.Schedule(func, seed=1), target),
                      scheduled(func, block, hand, target), func)
    assert found, "the hand schedule is not a point of the design space"
    return found[0][1]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("space", SPACES)
def test_hand_schedule_is_a_point_of_the_design_space(space, kernel):
    module, hand, target = SPACES[space]
    func, block, *_ = KERNELS[kernel]()
    hand_point_of_space(module, hand, func, block, target())


@pytest.mark.parametrize("kernel", KERNELS)
def test_sampled_neon_points_match_torch_on_the_emulated_device(kernel, arm_device, tmp_path):
    func, _, x, col_idx, values, ref = KERNELS[kernel]()
    for seed in (1, 2, 3):
        for i, space in enumerate(neon.design_space(s_tir.Schedule(func, seed=seed), tp.targets.arm_cpu())):
            out = run_on_arm(arm_device, relax_module(space.mod["main"], x, col_idx, values, ref.shape),
                             tmp_path / f"point_{seed}_{i}.so", x)
            err = relative_error(out, ref)
            assert err < RTOL, f"seed {seed}, order {neon.ORDERS[i]}: relative max error {err:.2e}"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("target_name", OPENCL)
def test_sampled_opencl_points_match_torch_on_pocl(target_name, kernel):
    func, _, x, col_idx, values, ref = KERNELS[kernel]()
    target = OPENCL[target_name]()
    limit = int(target.attrs["max_num_threads"])
    for seed in (1, 2, 3):
        (space,) = ocl.design_space(s_tir.Schedule(func, seed=seed), target)
        runner = kernel_on_pocl(space, target, x, col_idx, values, ref.shape)
        err = relative_error(runner(x), ref)
        assert err < RTOL, f"seed {seed}: relative max error {err:.2e}"
        assert all(np.prod(k.local) <= limit for k in runner.kernels)


def test_opencl_space_samples_power_of_two_groups_under_the_limit():
    assert ocl.group_sizes(plane=40, limit=256) == [8, 16, 32, 64]
    assert ocl.group_sizes(plane=1000, limit=32) == [8, 16, 32]
    assert ocl.group_sizes(plane=2, limit=256) == [2]
    func, block, *_ = conv_kernel(N=1, C=16, H=16, W=16, K=16, stride=1)
    target = tp.targets.mali(max_threads=32)
    seen = set()
    for seed in range(1, 9):
        (space,) = ocl.design_space(s_tir.Schedule(func, seed=seed), target)
        (group,) = [int(d) for i, d in sampled(space.trace) if i.kind.name == "SampleCategorical"
                    and [int(c) for c in i.attrs[0]] == ocl.group_sizes(64, 32)]
        seen.add(ocl.group_sizes(64, 32)[group])
    assert seen <= {8, 16, 32} and len(seen) > 1


# ---------------------------------------------------------------- registration

@pytest.mark.parametrize("block", [CONV_BLOCK, DENSE_BLOCK])
def test_each_target_key_gets_its_schedule(block):
    from schedules.registry import find_schedule

    assert find_schedule(block, tp.targets.arm_cpu()) is neon.schedule      # before the x86 "cpu" one
    assert find_schedule(block, tp.targets.mali()) is ocl.schedule_mali
    assert find_schedule(block, tp.targets.adreno()) is ocl.schedule_adreno


def test_design_spaces_take_the_target_from_the_context():
    """MetaSchedule's ScheduleFn calls ``design_space(sch)``: the OpenCL space reads the current target."""
    func, *_ = conv_kernel(N=1, C=16, H=16, W=16, K=16, stride=1)
    assert len(neon.design_space(s_tir.Schedule(func))) == len(neon.ORDERS)
    with tp.targets.mali(max_threads=32):
        (space,) = ocl.design_space(s_tir.Schedule(func))
    candidates = [[int(c) for c in i.attrs[0]] for i, _ in sampled(space.trace) if i.kind.name == "SampleCategorical"]
    assert [8, 16, 32] in candidates          # the work-group sizes: powers of two up to the context's limit
    with pytest.raises(ValueError, match="need a target"):
        ocl.design_space(s_tir.Schedule(func))
