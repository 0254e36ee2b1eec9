"""The "int8_dense_conv" kind: a conv that no sparse kind takes (a network's stem, a layer left dense) run in
int8 on x86 (AVX-512 VNNI, or AVX2 with weights of at most 64), as a 1x1 conv over its patches:

    quantize_im2col(x) -> patches [N, Q, Ho, Wo*4] -> int8_block_sparse_conv2d_1x1_x86 (``patches``) -> dequantize_conv

(a quad's 4 patch codes interleaved a position: one load feeds the R multiplies of a block).

Asked for by ``tp.build(mod, int8=ranges)``; tried after every other kind. The weight goes on the uniform
8-bit grid per output channel, or keeps its values on a grid found (as "int8_filter_block"). It runs in int8
where it has at least ``UNCHAINED_MIN_INTENSITY`` MACs per float element it quantizes or dequantizes (the
patches are written once, from the input's codes); ``passes/int8_requantize`` chains it in 8 bits to the int8
convs after it, as it does a 1x1 conv.
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax

from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86
from schedules.int8_block_sparse_conv2d_1x1_x86 import lanes as lanes_1x1
from schedules.int8_filter_block_pattern_conv2d_rowpair_avx2 import MAX_PAIR
from schedules.int8_quantize_im2col_x86 import int8_quantize_im2col_x86
from tvm_patterns.computes.int8_quantization import DEQUANTIZE_BLOCK, dequantize_conv
from tvm_patterns.sparsity.int8_block import dense_quad_tables, patches_shape

from .block_kind import check_input, check_weight
from .int8_block_kind import CONV_KERNEL, UNCHAINED_MIN_INTENSITY, zero_point_bias
from .int8_filter_block_kind import (CONV_ATTR, DEQUANTIZE_ATTR, LAYOUT_ATTR, check_int8_target, int8_weight,
                                     written_out, written_tensor)
from .pattern_kind import check_conv_attrs
from .registry import CHECKED_BY_PLAN, LAYER_ATTR, LayerContext, LeaveDense, Plan, constant_weight, register_sparse_kind

IM2COL = "int8_quantize_im2col_x86"
IM2COL_LAYOUT = "im2col"   # the LAYOUT_ATTR of the patches: [it, N, C, H, W, KH, KW, strides..., padding...]
BLOCK_ROWS, AVX2_BLOCK_ROWS = 16, 8   # output channels a block: one interleave of 4 patch rows feeds this many


def im2col_of(layout) -> dict | None:
    """The arguments of ``int8_quantize_im2col_x86`` from a LAYOUT_ATTR; None for another layout."""
    if str(layout[0]) != IM2COL_LAYOUT:
        return None
    n, c, h, w, kh, kw, sh, sw, *padding = (int(v) for v in layout[1:])
    return {"n": n, "c": c, "h": h, "w": w, "kernel": (kh, kw), "strides": (sh, sw), "padding": tuple(padding)}


@register_sparse_kind("int8_dense_conv", ["relax.nn.conv2d"], options={"ranges": CHECKED_BY_PLAN})
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    scale, zero_point, family = check_int8_target(ctx, avx2=True)
    vnni = family == "vnni"
    w = constant_weight(call)
    check_weight(w)
    strides, padding = check_conv_attrs(call.attrs, w.shape)
    N, C, H, W = check_input(call.args[0], (4,))
    K, _, KH, KW = w.shape
    taps = C * KH * KW
    shape = patches_shape(N, C, H, W, (KH, KW), strides, padding)
    out_hw = shape[2], shape[3] // 4
    if out_hw[0] * out_hw[1] < lanes_1x1(vnni):
        raise LeaveDense(f"{out_hw[0] * out_hw[1]} output positions: the int8 kernel takes at least {lanes_1x1(vnni)}")
    macs = N * K * taps * out_hw[0] * out_hw[1]
    intensity = macs / (N * C * H * W + N * K * out_hw[0] * out_hw[1])
    if intensity < UNCHAINED_MIN_INTENSITY:
        raise LeaveDense(f"{intensity:.0f} MACs per float element quantized or dequantized (< "
                         f"{UNCHAINED_MIN_INTENSITY}): the int8 kernel would not pay for them")
    codes, weight_scale, weight_grid = int8_weight(w, largest=127 if vnni else MAX_PAIR // 2)
    R = BLOCK_ROWS if vnni else AVX2_BLOCK_ROWS
    try:
        tables = dense_quad_tables(codes.reshape(K, taps), R)
    except NotImplementedError as e:
        raise LeaveDense(str(e)) from None
    B, Q = tables.col.shape[0], tables.quads
    kernel = written_out(int8_block_sparse_conv2d_1x1_x86(N, 4 * Q, out_hw, K, B, R, Q, vnni, patches=True)).with_attrs(
        {CONV_ATTR: [CONV_KERNEL, N, 4 * Q, *out_hw, K, B, R, Q, vnni, True], LAYER_ATTR: ctx.name})
    patches = written_out(int8_quantize_im2col_x86(N, C, H, W, (KH, KW), strides, padding)).with_attrs(
        {LAYOUT_ATTR: [IM2COL_LAYOUT, N, C, H, W, KH, KW, *strides, *padding], LAYER_ATTR: ctx.name})
    arrays = (tables.col, tables.value, zero_point_bias(tables, zero_point))
    grid = np.array([np.float32(1.0 / scale), zero_point], dtype="float32")

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = bb.emit(relax.call_tir(bb.add_func(patches, IM2COL), relax.Tuple([call.args[0], relax.const(grid)]),
                                   written_tensor(patches)))
        acc = bb.emit(relax.call_tir(bb.add_func(kernel, CONV_KERNEL), relax.Tuple([x, *(relax.const(a) for a in arrays)]),
                                     relax.TensorType((N, K, *out_hw), "int32")))
        return bb.call_te(functools.partial(dequantize_conv, scale=scale), acc, relax.const(weight_scale),
                          primfunc_name_hint=DEQUANTIZE_BLOCK,
                          primfunc_attrs={"op_pattern": 0, DEQUANTIZE_ATTR: float(scale)})

    return Plan(emit=emit,
                summary=f"int8 (input scale {scale:.3g}, zero point {zero_point}; {weight_grid}), dense "
                        f"{KH}x{KW} as a 1x1 conv over its {taps} patch codes",
                macs_dense=macs, macs_sparse=macs, weight_bytes_packed=sum(a.nbytes for a in arrays))
