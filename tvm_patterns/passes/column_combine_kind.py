"""The "column_combine" sparse kind: 1x1 conv2d and linear layers whose weight is column-combined
(``sparsity.column_combine``): each row keeps at most one weight in every group of g consecutive input
channels. Packed as rows of their own (the block-sparse kernel with blocks of one row): ``ceil(in / g)``
values a row, each with the input channel it reads, gathered by the kernel.

Options (``options={"column_combine": {...}}``):
- ``group_candidates``: the group sizes g tried, largest first (default 16 down to 2);
- ``max_density``: rewrite only when at most this fraction of the dense MACs remains (default 0.5);
- ``max_gather_rows``: a linear layer of at most this many rows (batch x tokens) runs the group-major
  kernel (``computes.column_combine``: vectors along output features, inputs gathered in each group)
  where the target has its schedule; more rows (and GPUs) run the block-sparse kernel's rows of one
  (vectors along rows). Default 8.

On x86 with AVX-512 the linear layers at any rows, and the 1x1 convs of 16 groups or more (32 at
batch > 1), run kernels of their own that pick each group's inputs with a register permute
(``schedules.column_combine_dense_avx512``, ``schedules.column_combine_conv2d_1x1_nhwc_x86``), where g is
one they take.
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax
from tvm.target import Target

import schedules  # noqa: F401  (registers every schedule)
from schedules import column_combine_conv2d_1x1_nhwc_x86 as nhwc_x86
from schedules import column_combine_dense_avx512 as dense_avx512
from schedules.registry import has_schedule
from tvm_patterns.computes.column_combine import (COLUMN_COMBINE_DENSE, CROP_ROWS, column_combine_dense, crop_rows,
                                                  pack_column_combined, pack_column_combined_conv)
from tvm_patterns.sparsity.block import pack_block_punched
from tvm_patterns.sparsity.column_combine import find_group

from .block_kind import DEFAULT_MAX_DENSITY, conv1x1_parts, matmul_weight, plan_conv, plan_matmul
from .int8_filter_block_kind import written_out
from .registry import (LAYER_ATTR, LayerContext, LeaveDense, Plan, integer, integers, number, register_sparse_kind,
                       static_shape)

DEFAULT_GROUPS = tuple(range(16, 1, -1))   # every group size from 16 down to 2
MAX_GATHER_ROWS = 8   # a linear layer of at most this many rows gathers along outputs (else along rows)


def combine_group(w2d: np.ndarray, options: dict) -> tuple[int, int]:
    """(g, the longest row's weight count) of a column-combined weight sparse enough, or LeaveDense."""
    g = find_group(w2d, options.get("group_candidates", DEFAULT_GROUPS))
    if g is None:
        raise LeaveDense("not column-combined: a row has two nonzeros among 2 consecutive input channels")
    width = max(1, int((w2d != 0).sum(axis=1).max(initial=0)))   # every row runs the longest row's length
    density = width / w2d.shape[1]
    max_density = float(options.get("max_density", DEFAULT_MAX_DENSITY))
    if density > max_density:
        raise LeaveDense(f"column-combined by {g} but rows keep {density:.0%} of the MACs (rewrite at most "
                         f"{max_density:.0%})")
    return g, width


def _summary(g: int, width: int, cols: int) -> str:
    return f"column-combined by {g}: {width} of {cols} columns a row, {cols / width:.1f}x fewer MACs"


def column_combined(w2d: np.ndarray, options: dict) -> tuple:
    """(rows packed one a block, MAC density, summary): the block-sparse kernel's form, or LeaveDense."""
    g, width = combine_group(w2d, options)
    return pack_block_punched(w2d, 1), width / w2d.shape[1], _summary(g, width, w2d.shape[1])


def _plan_permute_rows(call: relax.Call, ctx: LayerContext) -> Plan | None:
    """A linear layer on x86 with AVX-512, at any rows: vectors along output features, each group's inputs
    picked by a register permute (``schedules.column_combine_dense_avx512``); None where the group is
    not one the kernel broadcasts."""
    w2d, shape = matmul_weight(call)
    rows = int(np.prod(shape[:-1]))
    g, width = combine_group(w2d, ctx.options)
    if not dense_avx512.takes(g, w2d.shape[1]):
        return None
    values, offset = pack_column_combined(w2d, g)
    V = dense_avx512.vectors_per_tile(rows)
    tiled = dense_avx512.pack_tiles(values, offset, V)
    kernel = written_out(dense_avx512.column_combine_dense_avx512(rows, w2d.shape[1], g, tiled[0].shape[0], V))
    out_padded = tiled[0].shape[0] * tiled[0].shape[2]

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = call.args[0]
        if len(shape) != 2:
            x = bb.emit(relax.op.reshape(x, (rows, shape[-1])))
        out = bb.emit(relax.call_tir(bb.add_func(kernel, dense_avx512.KERNEL),
                                     relax.Tuple([x, *(relax.const(a) for a in tiled)]),
                                     relax.TensorType((rows, out_padded), "float32")))
        return bb.call_te(functools.partial(crop_rows, rows_shape=tuple(shape[:-1]), out_features=w2d.shape[0]),
                          out, primfunc_name_hint=CROP_ROWS, primfunc_attrs={"op_pattern": 2})

    return Plan(emit=emit, summary=_summary(g, values.shape[0], w2d.shape[1]) + ", groups picked by a permute "
                "along outputs", macs_dense=rows * w2d.size, macs_sparse=rows * values.size,
                weight_bytes_packed=values.nbytes + offset.nbytes)


def _plan_few_rows(call: relax.Call, ctx: LayerContext) -> Plan:
    """A linear layer at a few rows: the group-major kernel, inputs gathered along output features."""
    w2d, shape = matmul_weight(call)
    rows = int(np.prod(shape[:-1]))
    g, width = combine_group(w2d, ctx.options)
    values, offset = pack_column_combined(w2d, g)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return bb.call_te(functools.partial(column_combine_dense, group=g), call.args[0], relax.const(values),
                          relax.const(offset), primfunc_name_hint=COLUMN_COMBINE_DENSE, primfunc_attrs={"op_pattern": 4})

    return Plan(emit=emit, summary=_summary(g, values.shape[0], w2d.shape[1]) + ", groups gathered along outputs",
                macs_dense=rows * w2d.size, macs_sparse=rows * values.size,
                weight_bytes_packed=values.nbytes + offset.nbytes)


def _plan_conv_permute(call: relax.Call, ctx: LayerContext) -> Plan | None:
    """A 1x1 conv on x86 with AVX-512: vectors along the output channels, each group's inputs picked by
    a register permute (``schedules.column_combine_conv2d_1x1_nhwc_x86``); None where the groups are too
    large for the permute or too few to pay."""
    w, strides, (N, C, H, W) = conv1x1_parts(call)
    K = w.shape[0]
    w2d = w.reshape(K, C)
    g, width = combine_group(w2d, ctx.options)
    if g > nhwc_x86.LANES or -(-C // g) < (nhwc_x86.MIN_GROUPS if N == 1 else nhwc_x86.MIN_GROUPS_BATCHED):
        return None
    out_hw = ((H - 1) // strides[0] + 1, (W - 1) // strides[1] + 1)
    geom = nhwc_x86.Geometry(N, C, *out_hw, K, g)
    count = out_hw[0] * out_hw[1]
    knobs = nhwc_x86.default_knobs(K, count, nhwc_x86.padded_channels(C, geom.groups, g), geom.groups)
    Kp = nhwc_x86.padded_out_channels(K, knobs)
    values, offset = pack_column_combined_conv(w2d, g, Kp)
    kernel = written_out(nhwc_x86.column_combine_conv2d_1x1_nhwc_x86(geom, knobs)).with_attr(LAYER_ATTR, ctx.name)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = call.args[0]
        if tuple(strides) != (1, 1):   # the positions a strided conv reads, then a conv of stride 1
            x = bb.emit(relax.op.strided_slice(x, axes=[2, 3], begin=[0, 0], end=[H, W], strides=list(strides)))
        # the bias (and what follows) the epilogue pass folds in (passes/column_combine_epilogue.py)
        return relax.call_tir(bb.add_func(kernel, nhwc_x86.KERNEL),
                              relax.Tuple([x, relax.const(values), relax.const(offset),
                                           relax.const(np.zeros(Kp, "float32"))]),
                              relax.TensorType((N, K, *out_hw), "float32"))

    macs = N * K * C * count
    return Plan(emit=emit, summary=_summary(g, width, C) + ", inputs picked by a permute along output channels",
                macs_dense=macs, macs_sparse=N * K * width * count, weight_bytes_packed=values.nbytes + offset.nbytes)


@register_sparse_kind("column_combine", ["relax.nn.conv2d", "relax.matmul"],
                      options={"group_candidates": integers(2), "max_density": number(0),
                               "max_gather_rows": integer(0)})
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    conv = call.op.name == "relax.nn.conv2d"
    if nhwc_x86.runs_on(Target.current(allow_none=True)):
        permuted = (_plan_conv_permute if conv else _plan_permute_rows)(call, ctx)
        if permuted is not None:
            return permuted
    if conv:
        return plan_conv(call, ctx, column_combined)
    rows = int(np.prod(static_shape(call.args[0])[:-1]))
    if has_schedule(COLUMN_COMBINE_DENSE) and rows <= int(ctx.options.get("max_gather_rows", MAX_GATHER_ROWS)):
        return _plan_few_rows(call, ctx)
    return plan_matmul(call, ctx, column_combined)
