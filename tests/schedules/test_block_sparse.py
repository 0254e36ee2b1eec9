"""Block-punched 1x1 convs and linear layers: formats, projection, kernels vs torch, the kind's decisions."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax, te

import schedules.block_sparse_x86 as sched
import tvm_patterns.passes.block_kind  # noqa: F401  (registers the "block" kind)
from tvm_patterns import targets
from tvm_patterns.computes.block_sparse import (CONV_BLOCK, DENSE_BLOCK, Conv1x1Geometry, block_sparse_conv2d_1x1,
                                                block_sparse_dense)
from tvm_patterns.passes.registry import LayerContext, LeaveDense, sparse_kinds
from tvm_patterns.sparsity.block import (block_density, pack_block_punched, pack_bsr, project_block_punched,
                                         project_bsr)

from ..layer_check import assert_matches_torch

RTOL = 1e-4


def rand_block_weight(rows, cols, R, sparsity, seed=0):
    rng = np.random.default_rng(seed)
    return project_block_punched(rng.standard_normal((rows, cols)).astype("float32"), R, sparsity)


# ---------------------------------------------------------------- formats and projection

FORMAT_SHAPES = [(8, 8, 4), (13, 10, 4), (7, 5, 8), (1, 1, 1), (33, 17, 16), (64, 3, 2)]


@pytest.mark.parametrize("rows,cols,R", FORMAT_SHAPES)
def test_block_punched_round_trip(rows, cols, R):
    rng = np.random.default_rng(rows * cols)
    w = rng.standard_normal((rows, cols)).astype("float32") * (rng.random((rows, cols)) < 0.3)
    packed = pack_block_punched(w, R)
    np.testing.assert_array_equal(packed.to_dense(), w)
    assert packed.values.shape == (-(-rows // R), packed.width, R)
    assert packed.mac_density() == pytest.approx(block_density(w, R))
    assert packed.padded_macs_per_column() >= packed.macs_per_column()


@pytest.mark.parametrize("rows,cols,R", FORMAT_SHAPES)
@pytest.mark.parametrize("block", [(1, 1), (2, 3), (4, 4), (8, 1)])
def test_bsr_round_trip(rows, cols, R, block):
    rng = np.random.default_rng(rows + cols)
    w = project_bsr(rng.standard_normal((rows, cols)).astype("float32"), block, 0.6)
    packed = pack_bsr(w, block)
    np.testing.assert_array_equal(packed.to_dense(), w)
    assert packed.data.shape[1:] == block


@pytest.mark.parametrize("rows,cols,R,sparsity", [(13, 10, 4, 0.7), (16, 64, 8, 0.75), (5, 9, 16, 0.5),
                                                    (12, 7, 3, 0.0), (12, 7, 3, 0.99)])
def test_projection_structure(rows, cols, R, sparsity):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((rows, cols)).astype("float32")
    p = project_block_punched(w, R, sparsity)
    keep = max(1, round((1 - sparsity) * cols))
    assert p.shape == w.shape and p.dtype == w.dtype
    for r0 in range(0, rows, R):
        blk_w, blk_p = w[r0:r0 + R], p[r0:r0 + R]
        kept = np.flatnonzero((blk_p != 0).any(axis=0))
        assert kept.size == keep
        np.testing.assert_array_equal(blk_p[:, kept], blk_w[:, kept])       # kept columns untouched
        norms = np.linalg.norm(blk_w, axis=0)
        dropped = np.setdiff1d(np.arange(cols), kept)
        if kept.size and dropped.size:
            assert norms[kept].min() >= norms[dropped].max()                # the largest norms win
    assert pack_block_punched(p, R).width == keep


@pytest.mark.parametrize("args,match", [
    ((np.ones((4, 4)), 0, 0.5), "block_rows"),
    ((np.ones((4, 4)), 2.5, 0.5), "block_rows"),
    ((np.ones((4, 4)), 2, 1.5), "sparsity"),
    ((np.ones((4, 4)), 2, -0.1), "sparsity"),
    ((np.ones((4, 4)), 2, float("nan")), "sparsity"),
    ((np.ones((4, 4)), 2, 1.0), "would remove the whole layer"),
    ((np.ones((4, 4, 1)), 2, 0.5), "2-D"),
])
def test_projection_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        project_block_punched(*args)


# ---------------------------------------------------------------- kernels vs torch.nn.functional

def _compile(outputs_fn, placeholders, main_block, schedule):
    out = outputs_fn(*placeholders)
    sch = tvm.s_tir.Schedule(te.create_prim_func([*placeholders, out]))
    schedule(sch, sch.get_sblock(main_block), None)
    return tvm.compile(sch.mod, target=targets.host()), tuple(int(d) for d in out.shape)


def _run(ex, out_shape, *arrays):
    dev = tvm.cpu()
    out = tvm.runtime.empty(out_shape, "float32", dev)
    ex["main"](*[tvm.runtime.tensor(a, dev) for a in arrays], out)
    return out.numpy()


def _assert_close(out, ref):
    assert out.shape == ref.shape
    err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err < RTOL, f"relative max error {err:.2e}"


CONV_CASES = [  # N, C, H, W, K, R, stride, sparsity
    (1, 16, 8, 8, 16, 4, 1, 0.75),
    (1, 13, 7, 9, 10, 4, 1, 0.5),       # odd channels, K not a multiple of R, W not of 8
    (2, 16, 9, 11, 24, 8, 2, 0.75),     # batch 2, stride 2, odd sizes
    (1, 32, 14, 14, 48, 16, 2, 0.9),
    (1, 24, 7, 7, 20, 8, 1, 0.75),
    (1, 8, 16, 16, 12, 3, 1, 0.5),      # R with no power-of-two factor
]


@pytest.mark.parametrize("N,C,H,W,K,R,stride,sparsity", CONV_CASES)
def test_conv1x1_matches_torch(N, C, H, W, K, R, stride, sparsity):
    w = rand_block_weight(K, C, R, sparsity)
    packed = pack_block_punched(w, R)
    geom = Conv1x1Geometry(N, C, H, W, K, (stride, stride))
    phs = [te.placeholder((N, C, H, W), name="x"), te.placeholder(packed.col_idx.shape, "int32", name="col_idx"),
           te.placeholder(packed.values.shape, name="values")]
    ex, shape = _compile(lambda x, c, v: block_sparse_conv2d_1x1(x, c, v, geom), phs, CONV_BLOCK,
                         sched.schedule)
    x = np.random.default_rng(2).standard_normal((N, C, H, W)).astype("float32")
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w.reshape(K, C, 1, 1)), stride=stride).numpy()
    _assert_close(_run(ex, shape, x, packed.col_idx, packed.values), ref)


AVX512_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
AVX512_CONV_CASES = [  # N, C, H, W, K, R, stride: rows of whole 16-lane vectors, one 8-lane one, or several
    (1, 24, 28, 28, 40, 8, 1),          # 28 wide, padded to 32: 2 x 16 lanes
    (2, 16, 14, 10, 24, 8, 1),          # batch 2, 10 wide: one 16-lane vector with a cropped tail
    (1, 16, 27, 27, 20, 4, 2),          # stride 2, 14 wide out, K not a multiple of 16
    (1, 40, 7, 7, 64, 8, 1),            # 7 wide: one 8-lane vector, the wider tile
    (1, 16, 9, 56, 16, 8, 1),           # 56 wide: 7 x 8 lanes, AVX2's tiles
]


def _conv_on_avx512(N, C, H, W, K, R, stride):
    """(built for AVX-512, torch's output, the input arrays) of a random block-punched 1x1 conv."""
    w = rand_block_weight(K, C, R, 0.75)
    packed = pack_block_punched(w, R)
    geom = Conv1x1Geometry(N, C, H, W, K, (stride, stride))
    phs = [te.placeholder((N, C, H, W), name="x"), te.placeholder(packed.col_idx.shape, "int32", name="col_idx"),
           te.placeholder(packed.values.shape, name="values")]
    out = block_sparse_conv2d_1x1(*phs, geom)
    sch = tvm.s_tir.Schedule(te.create_prim_func([*phs, out]))
    sched.schedule(sch, sch.get_sblock(CONV_BLOCK), AVX512_TARGET)
    ex = tvm.compile(sch.mod, target=AVX512_TARGET)
    x = np.random.default_rng(3).standard_normal((N, C, H, W)).astype("float32")
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w.reshape(K, C, 1, 1)), stride=stride).numpy()
    return ex, tuple(int(d) for d in out.shape), ref, (x, packed.col_idx, packed.values)


@pytest.mark.parametrize("N,C,H,W,K,R,stride", AVX512_CONV_CASES)
def test_conv1x1_on_avx512_matches_torch(N, C, H, W, K, R, stride):
    if not tvm.target.codegen.target_has_features("avx512f", targets.host()):
        pytest.skip("this CPU lacks AVX-512")    # the assembly test below runs anywhere
    ex, shape, ref, arrays = _conv_on_avx512(N, C, H, W, K, R, stride)
    _assert_close(_run(ex, shape, *arrays), ref)


def test_conv1x1_on_avx512_runs_16_lane_fmas_where_its_rows_hold_them():
    def fmas(case):
        asm = _conv_on_avx512(*case)[0].mod.inspect_source("asm")
        return {reg: len(re.findall(rf"vfmadd231ps\s+[^\n]*%{reg}mm", asm)) for reg in ("z", "y")}

    assert fmas(AVX512_CONV_CASES[0])["z"] >= 16         # a tile of up to 24 zmm accumulators
    assert fmas(AVX512_CONV_CASES[4])["z"] == 0          # 56 wide: ymm only
    assert fmas(AVX512_CONV_CASES[4])["y"] >= 8


DENSE_CASES = [  # input shape, out features, R, sparsity
    ((16, 32), 32, 8, 0.75),
    ((7, 30), 13, 4, 0.5),              # tokens and features that do not divide
    ((2, 5, 24), 20, 8, 0.75),          # [B, T, K]
    ((128, 64), 48, 16, 0.9),
    ((3, 9), 5, 2, 0.5),
]


@pytest.mark.parametrize("shape,out_features,R,sparsity", DENSE_CASES)
def test_dense_matches_torch(shape, out_features, R, sparsity):
    w = rand_block_weight(out_features, shape[-1], R, sparsity)
    packed = pack_block_punched(w, R)
    phs = [te.placeholder(shape, name="x"), te.placeholder(packed.col_idx.shape, "int32", name="col_idx"),
           te.placeholder(packed.values.shape, name="values")]
    ex, oshape = _compile(lambda x, c, v: block_sparse_dense(x, c, v, out_features), phs, DENSE_BLOCK,
                          sched.schedule)
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")
    ref = F.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    _assert_close(_run(ex, oshape, x, packed.col_idx, packed.values), ref)


def test_dense_same_layout_baseline():
    """col_idx=None: the dense layer in the same layout (the benchmark's TVM dense baseline)."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((20, 12)).astype("float32")
    padded = np.zeros((24, 12), "float32")
    padded[:20] = w
    values = np.ascontiguousarray(padded.reshape(3, 8, 12).transpose(0, 2, 1))   # [block, column, row]
    phs = [te.placeholder((9, 12), name="x"), te.placeholder(values.shape, name="values")]
    ex, shape = _compile(lambda x, v: block_sparse_dense(x, None, v, 20), phs, DENSE_BLOCK, sched.schedule)
    x = rng.standard_normal((9, 12)).astype("float32")
    _assert_close(_run(ex, shape, x, values), x @ w.T)


# ---------------------------------------------------------------- end to end through the Relax pass

class ConvBlock(torch.nn.Module):
    """1x1 conv (stride 2) + BN + ReLU, a 1x1 conv with a residual, pooling and a linear head."""

    def __init__(self, cin=16, width=24, classes=10):
        super().__init__()
        self.c1 = torch.nn.Conv2d(cin, width, 1, stride=2, bias=False)
        self.bn = torch.nn.BatchNorm2d(width)
        self.c2 = torch.nn.Conv2d(width, width, 1)
        self.fc = torch.nn.Linear(width, classes)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        y = torch.relu(self.c2(y) + y)
        return self.fc(y.mean((2, 3)))


class TokenMLP(torch.nn.Module):
    """[B, T, dim] tokens: dim -> hidden -> dim, GELU between, residual."""

    def __init__(self, dim=32, hidden=64):
        super().__init__()
        self.up = torch.nn.Linear(dim, hidden)
        self.down = torch.nn.Linear(hidden, dim)

    def forward(self, x):
        return self.down(F.gelu(self.up(x))) + x


def prune_blocks(model, R, sparsity):
    """Block-punch every conv / linear weight of ``model`` in place (random BN statistics too)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                w2d = m.weight.numpy().reshape(m.weight.shape[0], -1)
                m.weight.copy_(torch.from_numpy(project_block_punched(w2d, R, sparsity)).reshape(m.weight.shape))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("model,x", [(ConvBlock, (2, 16, 9, 11)), (TokenMLP, (2, 7, 32))])
def test_end_to_end(model, x):
    torch.manual_seed(0)
    report = []
    assert_matches_torch(prune_blocks(model(), 8, 0.75), torch.randn(*x), report=report, kinds=["block"])
    assert report and all(d.kind == "block" for d in report), [(d.layer, d.reason) for d in report]
    assert all(d.macs_sparse * 4 == d.macs_dense for d in report)


# ---------------------------------------------------------------- the kind's decisions

def _block_plan(call, **options):
    (kind,) = sparse_kinds(["block"])
    return kind.plan(call, LayerContext("layer", options))


def _conv(w, x_shape=(1, 16, 8, 8), **attrs):
    x = relax.Var("x", relax.TensorType(list(x_shape), "float32"))
    weight = relax.const(w) if isinstance(w, np.ndarray) else w
    return relax.op.nn.conv2d(x, weight, **attrs)


def _matmul(w, x_shape=(4, 16)):
    x = relax.Var("x", relax.TensorType(list(x_shape), "float32"))
    return relax.op.matmul(x, relax.const(w) if isinstance(w, np.ndarray) else w)


W_BLOCK = rand_block_weight(16, 16, 8, 0.75).reshape(16, 16, 1, 1)
W_NAN = W_BLOCK.copy()
W_NAN[0, 0, 0, 0] = np.nan
W_UNSTRUCTURED = (np.random.default_rng(5).standard_normal((16, 16)) *
                  (np.random.default_rng(6).random((16, 16)) < 0.25)).astype("float32")

LEAVE_DENSE = [
    (lambda: _conv(relax.Var("w", relax.TensorType([16, 16, 1, 1], "float32"))), "not a compile-time constant"),
    (lambda: _conv(np.zeros((16, 16, 3, 3), "float32"), padding=1), "not 1x1"),
    (lambda: _conv(W_BLOCK[:, :8], groups=2), "groups=2"),
    (lambda: _conv(W_BLOCK, padding=1), "padding"),
    (lambda: _conv(W_BLOCK, strides=3), "strides"),
    (lambda: _conv(W_NAN), "NaN"),
    (lambda: _conv(np.ones((16, 16, 1, 1), "float32")), "not sparse enough"),
    (lambda: _conv(W_UNSTRUCTURED.reshape(16, 16, 1, 1)), "not block-structured"),
    (lambda: _matmul(relax.Var("w", relax.TensorType([16, 16], "float32"))), "not a compile-time constant"),
    (lambda: _matmul(np.ones((16, 16), "float32")), "not sparse enough"),
    (lambda: _matmul(W_UNSTRUCTURED.T.copy()), "not block-structured"),
    (lambda: _matmul(np.zeros((2, 16, 16), "float32"), (2, 4, 16)), "rank 3"),
    (lambda: _matmul(W_BLOCK.reshape(16, 16).T.astype("float16")), "dtype float16"),
]


@pytest.mark.parametrize("make_call,reason", LEAVE_DENSE)
def test_leave_dense_reasons(make_call, reason):
    with pytest.raises(LeaveDense, match=reason):
        _block_plan(make_call())


def test_detects_block_rows_and_threshold():
    w = rand_block_weight(32, 16, 8, 0.5).reshape(32, 16, 1, 1)
    assert "block-punched 8x8" in _block_plan(_conv(w)).summary           # R detected: 8 of (16, 8, 4)
    assert "block-punched 4x8" in _block_plan(_conv(w), block_rows=4).summary
    with pytest.raises(LeaveDense, match="not sparse enough"):
        _block_plan(_conv(w), max_density=0.4)
    plan = _block_plan(_matmul(rand_block_weight(24, 16, 4, 0.75).T.copy()))
    assert "block-punched 4x4" in plan.summary and plan.macs_sparse * 4 == plan.macs_dense


def test_the_block_benchmark_schedules_its_kernels_for_the_host_target_as_the_build_does():
    """scripts/bench_block.py times the tiles tp.build picks (AVX-512 ones need the target to be known)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_block.py"
    spec = importlib.util.spec_from_file_location("bench_block", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seen = []

    def spy(sch, block, target):
        seen.append(target)
        sched.schedule(sch, block, target)

    layer = bench.Layer("resnet50", "odd", "conv", (12, 5, 7, 16, 1))
    packed = pack_block_punched(project_block_punched(layer.w, 8, 0.5), 8)
    phs = [te.placeholder(layer.x.shape, name="x"), te.placeholder(packed.col_idx.shape, "int32", name="c"),
           te.placeholder(packed.values.shape, name="v")]
    fn, shape = bench._compile(lambda x, c, v: block_sparse_conv2d_1x1(x, c, v, layer.geom), phs, CONV_BLOCK, spy)
    assert [str(t) for t in seen] == [str(targets.host())] and shape == (1, 16, 5, 7)
