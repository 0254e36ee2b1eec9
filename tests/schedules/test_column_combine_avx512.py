"""Column-combined 1x1 convs and linear layers on x86 with AVX-512: vectors along the output channels,
each group's inputs picked by a register permute (``schedules.column_combine_conv2d_1x1_nhwc_x86``,
``schedules.column_combine_dense_avx512``); checked against torch on odd shapes, through ``tp.build`` on
a user's own modules, and in the generated assembly."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from torch import nn

from schedules.column_combine_conv2d_1x1_nhwc_x86 import (Epilogue, Geometry, Knobs, column_combine_conv2d_1x1_nhwc_x86,
                                                          default_knobs, padded_channels, padded_out_channels,
                                                          runs_on)
from schedules.column_combine_dense_avx512 import column_combine_dense_avx512, pack_tiles, takes, vectors_per_tile
from tvm_patterns import targets
from tvm_patterns.compress import oneshot_prune
from tvm_patterns.computes.column_combine import pack_column_combined, pack_column_combined_conv
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity.column_combine import project_column_combine

from ..layer_check import assert_matches_torch

HOST = targets.host()
AVX2_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})         # AVX2 + FMA, no AVX-512
AVX512_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
TARGET = HOST if runs_on(HOST) else AVX512_TARGET    # what the kernel is built for (run on AVX-512 hosts)
RTOL = 1e-5


def require_avx512():
    if not runs_on(HOST):
        pytest.skip(f"this CPU ({HOST.mcpu}) lacks AVX-512")   # the assembly tests still run


def compiled(func, target=TARGET):
    func = func.with_attr("global_symbol", "main")
    return tvm.compile(tvm.IRModule({"main": func}), target=target, tir_pipeline=tir_pipeline(target))


def build(geom: Geometry, knobs: Knobs, epilogue: Epilogue = Epilogue(), target=TARGET):
    return compiled(column_combine_conv2d_1x1_nhwc_x86(geom, knobs, epilogue), target)


def run(geom: Geometry, knobs: Knobs, epilogue: Epilogue = Epilogue(), seed=0):
    """(our output [N, K, H, W], torch's) for a random column-combined weight, bias, input (and residual)."""
    rng = np.random.default_rng(seed)
    n, c, h, w, k, g = geom.n, geom.c, geom.h, geom.w, geom.k, geom.group
    weight = project_column_combine(rng.standard_normal((k, c)).astype("float32"), g)
    x = rng.standard_normal((n, c, h, w)).astype("float32")
    bias = rng.standard_normal(k).astype("float32")
    residual = rng.standard_normal((n, k, h, w)).astype("float32")
    values, offset = pack_column_combined_conv(weight, g, padded_out_channels(k, knobs))
    padded_bias = np.zeros(values.shape[1], "float32")
    padded_bias[:k] = bias
    arrays = [x, values, offset, padded_bias] + ([residual] if epilogue.residual else [])
    args = [tvm.runtime.tensor(a) for a in (*arrays, np.zeros((n, k, h, w), "float32"))]
    build(geom, knobs, epilogue)["main"](*args)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight[:, :, None, None]),
                                     torch.from_numpy(bias))
    if epilogue.residual:
        ref = ref + torch.from_numpy(residual)
    if epilogue.relu:
        ref = torch.relu(ref)
    return args[-1].numpy(), ref.numpy()


CASES = {  # name: (Geometry(n, c, h, w, k, group), knobs)
    "56x56 shape, positions outer": (Geometry(1, 64, 8, 14, 48, 4), Knobs(2, 8, False)),
    "odd channels, a short last group, batch 2": (Geometry(2, 37, 5, 7, 21, 4), Knobs(2, 8, False)),
    "positions inner, rows past the last tile": (Geometry(2, 40, 7, 7, 40, 4), Knobs(2, 8, True)),
    "groups of 3, one filter vector, tiles of 4": (Geometry(1, 30, 3, 11, 16, 3), Knobs(1, 4, False)),
    "groups of 16, tiles of 16": (Geometry(1, 64, 4, 9, 33, 16), Knobs(1, 16, True)),
    "groups of 2, a single position": (Geometry(1, 18, 1, 1, 20, 2), Knobs(2, 4, False)),
}


@pytest.mark.parametrize("case", CASES)
def test_the_kernel_matches_torch_on_odd_shapes(case):
    require_avx512()
    geom, knobs = CASES[case]
    out, ref = run(geom, knobs)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


@pytest.mark.parametrize("epilogue", [Epilogue(relu=True), Epilogue(residual=True), Epilogue(True, True)])
@pytest.mark.parametrize("case", ["odd channels, a short last group, batch 2", "positions inner, rows past the last tile"])
def test_the_write_back_adds_the_residual_and_the_relu(case, epilogue):
    require_avx512()
    geom, knobs = CASES[case]
    out, ref = run(geom, knobs, epilogue)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


def test_the_hot_loop_picks_inputs_with_a_register_permute():
    geom = Geometry(1, 256, 56, 56, 64, 4)
    knobs = default_knobs(geom.k, 56 * 56, padded_channels(256, geom.groups, 4), geom.groups)
    asm = build(geom, knobs, target=AVX512_TARGET).mod.inspect_source("asm")
    # vpermps, or vpermd (LLVM's integer-domain form of the same permute), of a broadcast group
    permutes = re.findall(r"\bvperm(?:ps|d)\s+%zmm\d+, %zmm\d+, %zmm\d+", asm)
    fmas = re.findall(r"\bvfmadd\d+ps\s+[^\n]*%zmm\d+\n", asm)
    tile = knobs.filters * knobs.positions     # a permute and an FMA per accumulator of the register tile
    assert len(permutes) >= tile and len(fmas) >= tile
    assert "vbroadcastf32x4" in asm


def test_the_default_tile_fits_the_registers_and_keeps_the_larger_operand_in_cache():
    wide = default_knobs(64, 3136, 272, 64)          # ResNet-50 layer 1: input larger than the weights
    assert (wide.filters, wide.positions, wide.positions_inner) == (1, 16, False)   # a line a channel
    deep = default_knobs(2048, 49, 1040, 256)         # layer 4: weights larger than the input
    assert (deep.filters, deep.positions, deep.positions_inner) == (2, 8, True)
    assert default_knobs(10, 4, 32, 4).filters == 1    # one vector holds every output channel


def test_the_kernel_runs_on_x86_with_avx512_only():
    assert runs_on(AVX512_TARGET)
    assert not runs_on(AVX2_TARGET)                    # AVX2 keeps the rows-of-one kernel
    assert not runs_on(targets.arm_cpu()) and not runs_on(None)


def test_a_tile_the_write_back_cannot_transpose_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        column_combine_conv2d_1x1_nhwc_x86(Geometry(1, 16, 4, 4, 16, 4), Knobs(1, 6, False))
    with pytest.raises(ValueError, match="power of two"):
        column_combine_conv2d_1x1_nhwc_x86(Geometry(1, 16, 4, 4, 16, 4), Knobs(1, 2, False))
    with pytest.raises(NotImplementedError, match="permute picks among 16"):
        column_combine_conv2d_1x1_nhwc_x86(Geometry(1, 64, 4, 4, 16, 17), Knobs(1, 8, False))


class Bottleneck(nn.Module):
    """A user's own residual block: 1x1 reduce (BN, ReLU), 1x1 expand (BN), a strided 1x1 shortcut
    (BN), added and ReLU'd, pooled into a linear head. Not our models' layout."""

    def __init__(self, cin=132, mid=128, cout=40):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(mid, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
        self.head = nn.Linear(cout, 5)

    def forward(self, x):
        y = torch.relu(self.expand(self.reduce(x)) + self.shortcut(x))
        return self.head(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("target_name", ["host", "avx2"])
def test_a_users_residual_block_matches_torch(target_name):
    """On the host (AVX-512: the permute kernel) and for AVX2 (rows of one), the same answer."""
    if target_name == "host":
        require_avx512()
    torch.manual_seed(0)
    model = Bottleneck()
    for bn in (model.reduce[1], model.expand[1], model.shortcut[1]):
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    oneshot_prune(model, [{"module": name, "kind": "column_combine", "group": 4}
                          for name in ("reduce.0", "expand.0", "shortcut.0")]).squash()
    model.eval()
    report = []
    target = HOST if target_name == "host" else AVX2_TARGET
    assert_matches_torch(model, torch.randn(2, 132, 13, 18), report=report, target=target)
    convs = {d.layer: d for d in report if d.layer.endswith(".0")}
    assert {d.kind for d in convs.values()} == {"column_combine"}
    permuted = {"picked by a permute" in d.reason for d in convs.values()}
    assert permuted == {target_name == "host"}, [d.reason for d in convs.values()]
    if target_name == "host":    # BN's bias, the ReLU, and in one branch the residual add, in the write-backs
        assert convs["reduce.0"].reason.endswith("; bias, ReLU in its write-back")
        assert sorted(convs[m].reason.split("; ")[-1] for m in ("expand.0", "shortcut.0")) == [
            "bias in its write-back", "bias, residual add, ReLU in its write-back"]


class SharedOutput(nn.Module):
    """A conv without a bias whose output is used twice (nothing to fold), then one with a bias and a
    ReLU6 (the bias folds, the clip stays a Relax op)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(128, 64, 1, bias=False), nn.Conv2d(64, 48, 1)

    def forward(self, x):
        y = self.a(x)
        return torch.nn.functional.relu6(self.b(torch.relu(y) + 0.5 * y))


def test_an_epilogue_is_folded_only_where_the_output_has_no_other_use():
    require_avx512()
    torch.manual_seed(0)
    model = SharedOutput()
    oneshot_prune(model, [{"module": m, "kind": "column_combine", "group": 2} for m in ("a", "b")]).squash()
    report = []
    assert_matches_torch(model.eval(), torch.randn(2, 128, 5, 11), report=report)
    reasons = {d.layer: d.reason for d in report}
    assert "picked by a permute" in reasons["a"] and "write-back" not in reasons["a"]
    assert reasons["b"].endswith("; bias in its write-back")


def test_a_conv_of_few_groups_keeps_the_rows_of_one_kernel():
    require_avx512()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(60, 96, 1), nn.ReLU(), nn.Conv2d(96, 128, 1)).eval()
    oneshot_prune(model, [{"module": "0", "kind": "column_combine", "group": 4},
                          {"module": "2", "kind": "column_combine", "group": 6}]).squash()
    report = []
    assert_matches_torch(model, torch.randn(1, 60, 9, 10), report=report)
    reasons = {d.layer: d.reason for d in report}
    assert "picked by a permute" not in reasons["0"] and reasons["0"].startswith("column-combined by 4")  # 15 groups
    assert "picked by a permute" in reasons["2"]                                                          # 16 groups
    report = []
    assert_matches_torch(model, torch.randn(2, 60, 9, 10), report=report)    # at batch 2, from 32 groups
    assert not any("picked by a permute" in d.reason for d in report)


# ---------------------------------------------------------------- linear layers at a few rows

DENSE_CASES = [  # (rows, in, out, group)
    (1, 64, 37, 4),       # outputs not a whole vector
    (3, 40, 70, 8),
    (8, 48, 16, 16),      # a whole vector a group; 8 rows, 2 vectors a tile
    (5, 30, 100, 2),
    (13, 64, 50, 4),      # a row tile of 8, then one of 5 rows
]


@pytest.mark.parametrize("rows,cin,cout,group", DENSE_CASES)
def test_the_linear_kernel_matches_torch(rows, cin, cout, group):
    require_avx512()
    rng = np.random.default_rng(rows * cin)
    w = project_column_combine(rng.standard_normal((cout, cin)).astype("float32"), group)
    x = rng.standard_normal((rows, cin)).astype("float32")
    V = vectors_per_tile(rows)
    tiled = pack_tiles(*pack_column_combined(w, group), V)
    out = np.zeros((rows, tiled[0].shape[0] * tiled[0].shape[2]), "float32")
    args = [tvm.runtime.tensor(a) for a in (x, *tiled, out)]
    compiled(column_combine_dense_avx512(rows, cin, group, tiled[0].shape[0], V))["main"](*args)
    ref = x @ w.T
    np.testing.assert_allclose(args[-1].numpy()[:, :cout], ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


def test_the_linear_hot_loop_permutes_and_gathers_nothing():
    asm = compiled(column_combine_dense_avx512(1, 4096, 4, 64, 4), AVX512_TARGET).mod.inspect_source("asm")
    assert len(re.findall(r"\bvperm(?:ps|d)\s+%zmm", asm)) >= 4 and "vpmovzxbd" in asm
    assert "gather" not in asm and "vpextrd" not in asm     # no gather, nor one taken apart lane by lane


def test_groups_the_broadcast_cannot_load_keep_the_gathering_kernel():
    assert takes(4, 64) and takes(16, 32)
    assert not takes(3, 30) and not takes(4, 66) and not takes(32, 64)
    with pytest.raises(NotImplementedError, match="power of two"):
        column_combine_dense_avx512(1, 30, 3, 1, 1)


class TokenMLP(nn.Module):
    """A user's feed-forward block over tokens [batch, tokens, features], GELU between."""

    def __init__(self, d=64, hidden=96):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


@pytest.mark.parametrize("group,tokens,picked", [(4, 3, True), (4, 21, True), (3, 3, False)])
def test_a_users_token_mlp_matches_torch(group, tokens, picked):
    require_avx512()
    torch.manual_seed(0)
    model = TokenMLP()
    oneshot_prune(model, [{"module": m, "kind": "column_combine", "group": group} for m in ("fc1", "fc2")]).squash()
    report = []
    assert_matches_torch(model.eval(), torch.randn(2, tokens, 64), report=report)
    layers = {d.layer: d for d in report if d.layer in ("fc1", "fc2")}
    assert {d.kind for d in layers.values()} == {"column_combine"}
    assert {"picked by a permute" in d.reason for d in layers.values()} == {picked}, [d.reason for d in layers.values()]
