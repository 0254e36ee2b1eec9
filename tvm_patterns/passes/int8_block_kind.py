"""The "int8_block" kind: a block-punched linear layer run in int8 (x86 AVX-512 VNNI).

Asked for by ``tp.build(mod, int8=ranges)`` (``tvm_patterns.calibrate``); tried before "block", on the
same weights (options as "block"'s: ``block_rows``, ``block_rows_candidates``, ``max_density``,
``tolerance``, under ``options={"int8_block": {...}}``; ``nibbles_above_bytes``: weights of at most
16 codes whose int8 tables are larger than this are stored two codes a byte). Weights on a grid that fits int8 keep their
values; others go on the uniform 8-bit grid (as "int8_filter_block"). The matmul becomes

    quantize_dense(x) -> int8_block_sparse_dense_x86 -> dequantize_dense

(the bias and activation after it fuse into the dequantization). 1x1 convs stay with "block".
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax

from schedules.int8_block_sparse_dense_x86 import BLOCK_ROWS, int8_block_sparse_dense_x86
from tvm_patterns.computes.int8_quantization import DEQUANTIZE_BLOCK, QUANTIZE_BLOCK, dequantize_dense, quantize_dense
from tvm_patterns.sparsity.int8_block import int8_block_tables, nibble_tables

from .block_kind import choose_block_rows
from .int8_filter_block_kind import check_int8_target, int8_weight, written_out
from .registry import LayerContext, LeaveDense, Plan, constant_weight, register_sparse_kind, static_shape

KERNEL = "int8_block_sparse_dense_x86"
# Two codes a byte pay where the tables do not stay in cache (docs/design.md#int8-block-linear)
NIBBLES_ABOVE_BYTES = 8 << 20


@register_sparse_kind("int8_block", ["relax.matmul"],
                      options=("ranges", "block_rows", "block_rows_candidates", "max_density", "tolerance",
                               "nibbles_above_bytes"),
                      before="block")
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    scale, zero_point = check_int8_target(ctx)
    w = constant_weight(call)            # [in, out]
    if w.ndim != 2 or w.dtype != np.float32 or not np.isfinite(w).all():
        raise LeaveDense(f"the int8 kernel takes a finite float32 [in, out] weight, got {w.dtype} {w.shape}")
    shape = static_shape(call.args[0])
    if len(shape) != 2 or call.args[0].ty.dtype != "float32":
        raise LeaveDense(f"the int8 kernel takes a float32 [batch, features] input, got {call.args[0].ty.dtype} "
                         f"{list(shape)}")
    M, cols = shape
    out = w.shape[1]
    w2d = np.ascontiguousarray(w.T)
    R, density = choose_block_rows(w2d, ctx.options)
    if R not in BLOCK_ROWS:
        raise LeaveDense(f"blocks of {R} rows (the int8 kernel runs {BLOCK_ROWS})")
    codes, weight_scale, weight_grid = int8_weight(w2d)
    try:
        tables = int8_block_tables(codes, R)
    except NotImplementedError as e:
        raise LeaveDense(str(e)) from None
    B = tables.col.shape[0]
    if tables.col.nbytes + tables.value.nbytes > ctx.options.get("nibbles_above_bytes", NIBBLES_ABOVE_BYTES):
        tables = nibble_tables(tables) or tables
    nibbles = tables.levels is not None
    bias = np.zeros(B * R, dtype="int32")   # the zero point's share of the sums
    bias[:out] = -zero_point * codes.astype(np.int64).sum(axis=1)
    kernel = int8_block_sparse_dense_x86(M, cols, out, B, R, tables.quads, nibbles)
    kernel = written_out(kernel)
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
    return Plan(emit=emit,
                summary=f"int8 (input scale {scale:.3g}, zero point {zero_point}; {weight_grid}{stored}), block-"
                        f"punched {R}x{4 * tables.quads} (of {cols} columns) in {B} blocks, "
                        f"{1 / max(density, 1e-9):.1f}x fewer MACs",
                macs_dense=macs, macs_sparse=int(round(macs * density)),
                weight_bytes_packed=sum(a.nbytes for a in arrays))
