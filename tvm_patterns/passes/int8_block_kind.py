"""The "int8_block" kind: a block-punched linear layer or 1x1 conv run in int8 (x86 AVX-512 VNNI, or AVX2:
blocks of 4 or 8 rows, weights of at most 64 as the AVX2 conv's).

Asked for by ``tp.build(mod, int8=ranges)`` (``tvm_patterns.calibrate``); tried before "block", on the
same weights (options as "block"'s: ``block_rows``, ``block_rows_candidates``, ``max_density``,
``tolerance``, under ``options={"int8_block": {...}}``; ``nibbles_above_bytes``: weights of at most
16 codes whose int8 tables are larger than this are stored two codes a byte). Weights on a grid that fits int8 keep their
values; others go on the uniform 8-bit grid (as "int8_filter_block"). The matmul becomes

    quantize_dense(x) -> int8_block_sparse_dense_x86 -> dequantize_dense

and a 1x1 conv (VNNI, or AVX2 with weights of at most 64; ``conv1x1``: "chained", the default, where
``passes/int8_requantize`` chains it to an int8 layer before or after it, or where it has at least
UNCHAINED_MIN_INTENSITY kept MACs per float element; True always; False never)

    quantize_positions(x) -> int8_block_sparse_conv2d_1x1_x86 -> dequantize_conv

(the bias, activation and residual add after it fuse into the dequantization; ``passes/int8_requantize``
chains it in 8 bits to the int8 convs before and after it).
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax

from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86
from schedules.int8_block_sparse_conv2d_1x1_x86 import lanes as lanes_1x1
from schedules.int8_block_sparse_dense_x86 import AVX2_BLOCK_ROWS, BLOCK_ROWS, int8_block_sparse_dense_x86
from schedules.int8_filter_block_pattern_conv2d_rowpair_avx2 import MAX_PAIR
from tvm_patterns.computes.int8_quantization import (DEQUANTIZE_BLOCK, QUANTIZE_BLOCK, dequantize_conv, dequantize_dense,
                                                     quantize_dense, quantize_positions)
from tvm_patterns.sparsity.int8_block import UNROLL, int8_block_tables, nibble_tables

from .block_kind import BLOCK_OPTIONS, choose_block_rows, conv1x1_parts, matmul_weight
from .int8_filter_block_kind import CONV_ATTR, DEQUANTIZE_ATTR, LAYOUT_ATTR, check_int8_target, int8_weight, written_out
from .registry import CHECKED_BY_PLAN, LAYER_ATTR, LayerContext, LeaveDense, Option, Plan, integer, register_sparse_kind

KERNEL = "int8_block_sparse_dense_x86"
CONV_KERNEL = "int8_block_sparse_conv2d_1x1_x86"
# An int8 1x1 conv between float layers pays where it has this many kept MACs per float element its
# quantization reads and its dequantization writes (docs/design.md#int8-block-1x1)
UNCHAINED_MIN_INTENSITY = 24
POSITIONS_LAYOUT = "positions"   # the LAYOUT_ATTR of a 1x1 conv's quantization: [it, N, C, H, W, strides...]
CHAINED = "chained"              # conv1x1's default: in int8 where chained (or dense enough), see the module doc
# Two codes a byte pay where the tables do not stay in cache (docs/design.md#int8-block-linear)
NIBBLES_ABOVE_BYTES = 8 << 20


def positions_strides(layout) -> tuple | None:
    """The strides of a 1x1 conv's quantization from its LAYOUT_ATTR; None for another layout."""
    return tuple(int(v) for v in layout[5:]) if str(layout[0]) == POSITIONS_LAYOUT else None


def _tables(w2d: np.ndarray, ctx: LayerContext, avx2: bool, unroll: int = UNROLL):
    """(R, MAC density, int8 tables, weight scale, what grid) of a [rows, cols] block-punched weight, or
    LeaveDense."""
    rows = AVX2_BLOCK_ROWS if avx2 else BLOCK_ROWS
    options = ctx.options if not avx2 or "block_rows_candidates" in ctx.options else \
        {**ctx.options, "block_rows_candidates": AVX2_BLOCK_ROWS}   # a block of 16 rows is two of 8
    R, density = choose_block_rows(w2d, options)
    if R not in rows:
        raise LeaveDense(f"blocks of {R} rows (the int8 kernel{' on AVX2' if avx2 else ''} runs {rows})")
    codes, weight_scale, weight_grid = int8_weight(w2d, largest=MAX_PAIR // 2 if avx2 else 127)
    try:
        tables = int8_block_tables(codes, R, unroll)
    except NotImplementedError as e:
        raise LeaveDense(str(e)) from None
    return R, density, tables, weight_scale, weight_grid


def zero_point_bias(tables, zero_point: int) -> np.ndarray:
    """The zero point's share of the sums, a row each (int32, padded to whole blocks)."""
    codes = tables.value.view("int8").reshape(*tables.value.shape, 4)               # [B, Q, R, tap]
    if tables.levels is not None:
        raise ValueError("the bias is taken from the int8 tables, before nibbles")
    return (-zero_point * codes.astype(np.int64).sum(axis=(1, 3))).reshape(-1).astype("int32")


def _summary(scale, zero_point, weight_grid, stored, R, tables, cols, density) -> str:
    return (f"int8 (input scale {scale:.3g}, zero point {zero_point}; {weight_grid}{stored}), block-punched "
            f"{R}x{4 * tables.quads} (of {cols} columns) in {tables.col.shape[0]} blocks, "
            f"{1 / max(density, 1e-9):.1f}x fewer MACs")


def _plan_matmul(call: relax.Call, ctx: LayerContext, scale: float, zero_point: int, avx2: bool) -> Plan:
    w2d, shape = matmul_weight(call)     # [out, in]
    if len(shape) != 2:
        raise LeaveDense(f"the int8 kernel takes a [batch, features] input, got {list(shape)}")
    M, cols = shape
    out = w2d.shape[0]
    R, density, tables, weight_scale, weight_grid = _tables(w2d, ctx, avx2)
    B = tables.col.shape[0]
    bias = zero_point_bias(tables, zero_point)
    if tables.col.nbytes + tables.value.nbytes > ctx.options.get("nibbles_above_bytes", NIBBLES_ABOVE_BYTES):
        tables = nibble_tables(tables) or tables
    nibbles = tables.levels is not None
    kernel = written_out(int8_block_sparse_dense_x86(M, cols, out, B, R, tables.quads, nibbles, avx2))
    levels = tables.levels if nibbles else np.zeros(16, dtype="int8")
    arrays = (tables.col, tables.value, levels, bias)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = bb.emit_te(functools.partial(quantize_dense, scale=scale, zero_point=zero_point), call.args[0],
                       primfunc_name_hint=QUANTIZE_BLOCK)
        acc = bb.emit(relax.call_tir(bb.add_func(kernel, KERNEL), relax.Tuple([x, *(relax.const(a) for a in arrays)]),
                                     relax.TensorType((M, out), "int32")))
        return bb.call_te(functools.partial(dequantize_dense, scale=scale), acc, relax.const(weight_scale),
                          primfunc_name_hint=DEQUANTIZE_BLOCK, primfunc_attrs={"op_pattern": 0})

    macs = M * cols * out
    stored = ", 4-bit codes two a byte" if nibbles else ""
    return Plan(emit=emit, summary=_summary(scale, zero_point, weight_grid, stored, R, tables, cols, density),
                macs_dense=macs, macs_sparse=int(round(macs * density)),
                weight_bytes_packed=sum(a.nbytes for a in arrays))


def _plan_conv(call: relax.Call, ctx: LayerContext, scale: float, zero_point: int, vnni: bool) -> Plan:
    """A 1x1 conv: AVX-512 VNNI's kernel, or AVX2's (docs/design.md#int8-block-1x1)."""
    mode = ctx.options.get("conv1x1", CHAINED)
    if mode is False:
        raise LeaveDense("1x1 convs stay float: options={'int8_block': {'conv1x1': False}}")
    w, strides, (N, C, H, W) = conv1x1_parts(call)
    K = w.shape[0]
    R, density, tables, weight_scale, weight_grid = _tables(w.reshape(K, C), ctx, avx2=not vnni, unroll=1)
    intensity = K * C * density / (K + C)      # kept MACs per float element quantized or dequantized
    if mode == CHAINED and ctx.name in ctx.options.get("unchained", ()) and intensity < UNCHAINED_MIN_INTENSITY:
        raise LeaveDense(f"no int8 layer before or after it to chain with, and {intensity:.0f} kept MACs per float "
                         f"element (< {UNCHAINED_MIN_INTENSITY}): between float layers the quantization and "
                         "dequantization cost what the int8 kernel saves (options={'int8_block': {'conv1x1': True}} "
                         "to run it in int8 all the same)")
    B = tables.col.shape[0]
    out_hw = ((H - 1) // strides[0] + 1, (W - 1) // strides[1] + 1)
    positions = out_hw[0] * out_hw[1]
    if positions < lanes_1x1(vnni):
        raise LeaveDense(f"{positions} output positions: the int8 1x1 kernel takes at least {lanes_1x1(vnni)}")
    kernel = written_out(int8_block_sparse_conv2d_1x1_x86(N, C, out_hw, K, B, R, tables.quads, vnni)).with_attrs(
        {CONV_ATTR: [CONV_KERNEL, N, C, *out_hw, K, B, R, tables.quads, vnni], LAYER_ATTR: ctx.name})
    arrays = (tables.col, tables.value, zero_point_bias(tables, zero_point))
    grid = np.array([np.float32(1.0 / scale), zero_point], dtype="float32")

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = bb.emit(bb.call_te(functools.partial(quantize_positions, strides=strides), call.args[0], relax.const(grid),
                               primfunc_name_hint=QUANTIZE_BLOCK,
                               primfunc_attrs={LAYOUT_ATTR: [POSITIONS_LAYOUT, N, C, H, W, *strides],
                                               LAYER_ATTR: ctx.name}))
        acc = bb.emit(relax.call_tir(bb.add_func(kernel, CONV_KERNEL),
                                     relax.Tuple([x, *(relax.const(a) for a in arrays)]),
                                     relax.TensorType((N, K, *out_hw), "int32")))
        return bb.call_te(functools.partial(dequantize_conv, scale=scale), acc,
                          relax.const(weight_scale), primfunc_name_hint=DEQUANTIZE_BLOCK,
                          primfunc_attrs={"op_pattern": 0, DEQUANTIZE_ATTR: float(scale)})

    macs = N * K * C * out_hw[0] * out_hw[1]
    return Plan(emit=emit, summary=_summary(scale, zero_point, weight_grid, "", R, tables, C, density),
                macs_dense=macs, macs_sparse=int(round(macs * density)),
                weight_bytes_packed=sum(a.nbytes for a in arrays))


@register_sparse_kind("int8_block", ["relax.nn.conv2d", "relax.matmul"],
                      options={"ranges": CHECKED_BY_PLAN, **BLOCK_OPTIONS, "nibbles_above_bytes": integer(0),
                               "conv1x1": Option("True, False or 'chained'", lambda v: isinstance(v, bool) or v == CHAINED),
                               "unchained": Option("a list of layer names (the 1x1 convs chained to no int8 layer)",
                                                   lambda v: isinstance(v, (list, tuple))
                                                   and all(isinstance(x, str) for x in v), list)},
                      before="block")
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    scale, zero_point, family = check_int8_target(ctx, avx2=True)
    if call.op.name == "relax.nn.conv2d":
        return _plan_conv(call, ctx, scale, zero_point, family == "vnni")
    return _plan_matmul(call, ctx, scale, zero_point, family == "avx2")
