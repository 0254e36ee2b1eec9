"""The "int8_filter_block" kind: a filter-block pattern conv run in int8 (x86 AVX-512 VNNI or AVX2,
aarch64 sdot).

Asked for by ``tp.build(mod, int8=ranges)`` (``tvm_patterns.calibrate``); tried before "filter_block".
A weight quantized on a grid that fits int8 (``quantize`` of a config entry: uniform, pow2, sp2, mixed,
term) keeps its values exactly, and the report names the grid found; any other weight goes on the
uniform 8-bit grid, a scale per output channel (``sparsity.quantization``); on AVX2 (``vpmaddubsw``
saturates beyond) a found grid only with codes up to 64, else the uniform 7-bit grid. The
input on the uint8 grid of its calibrated range (``quantization.input_grid``). The conv becomes

    x86:      quantize_rowpairs(x) -> int8_filter_block_pattern_conv2d_rowpair_x86 -> dequantize_conv
              (stride 2: the same kernel reading stride-2 records)
    AVX2:     quantize_rowpairs(x, avx2) -> int8_filter_block_pattern_conv2d_rowpair_avx2 -> dequantize_conv
    aarch64:  quantize_rowtriples(x) -> int8_filter_block_pattern_conv2d_rowtriple_neon -> dequantize_conv

(the bias and activation after it fuse into the dequantization). Where the next layer is an int8 conv
too, ``passes/int8_requantize`` then writes its codes in this kernel's write-back instead.
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax
from tvm.target import Target

from schedules import int8_filter_block_pattern_conv2d_rowpair_avx2 as int8_avx2
from schedules import int8_filter_block_pattern_conv2d_rowpair_x86 as int8_x86
from schedules import int8_filter_block_pattern_conv2d_rowtriple_neon as int8_neon
from schedules.int8_quantize_rowpairs_x86 import int8_quantize_rowpairs_x86
from schedules import pattern_conv2d_nchw_x86 as x86
from tvm_patterns.computes.int8_quantization import DEQUANTIZE_BLOCK, QUANTIZE_ROWTRIPLES, dequantize_conv, quantize_rowtriples
from tvm_patterns.sparsity import NotPatternSparse
from tvm_patterns.sparsity.int8_filter_block import (int8_filter_block_tables, permute_index, record_index,
                                                     rowtriple_index, rowtriple_shape, shuffle_index_avx2)
from tvm_patterns.sparsity.quantization import find_grid, fit_grid, input_grid

from .filter_block_kind import FILTERS
from .pattern_kind import pattern_conv_of
from .registry import CHECKED_BY_PLAN, LAYER_ATTR, LayerContext, LeaveDense, Plan, integer, register_sparse_kind
from .schedule_pass import SCHEDULED_ATTR

KERNEL = "int8_filter_block_pattern_conv2d_rowpair_x86"
NEON_KERNEL = "int8_filter_block_pattern_conv2d_rowtriple_neon"
AVX2_KERNEL = "int8_filter_block_pattern_conv2d_rowpair_avx2"
QUANTIZE = "int8_quantize_rowpairs_x86"
OPAQUE = 8   # the op pattern of our written-out TIR functions: Relax fuses nothing into them
# What passes/int8_requantize reads back: the kernel, its geometry and knobs, its layer; the layout a
# quantization writes; the input scale a dequantization multiplies by.
# [kernel, geometry..., knobs...], [layout, N, C, H, W, knobs...]
CONV_ATTR = "tvm_patterns.int8_conv"
LAYOUT_ATTR, DEQUANTIZE_ATTR = "tvm_patterns.int8_layout", "tvm_patterns.int8_dequantize_scale"


def written_out(func):
    """A TIR function of ours marked scheduled and opaque to Relax's fusion."""
    return func.with_attr(SCHEDULED_ATTR, True).with_attr("op_pattern", OPAQUE)


def written_tensor(func) -> relax.TensorType:
    """The type of what a TIR function of ours writes: its last buffer, a tensor of static shape."""
    out = func.params[-1]                      # TVM 0.27: a PrimFunc's params are its buffers
    return relax.TensorType(tuple(int(d) for d in out.shape), str(out.dtype))


def int8_weight(w: np.ndarray, largest: int = 127) -> tuple[np.ndarray, np.ndarray, str]:
    """(int8 codes, float32 scale per output channel, what grid) of a weight: the grid it was quantized
    on if it is on one whose codes stay within ``largest`` (its values kept exactly), else the uniform
    grid of 8 bits (7 for a ``largest`` of 64: the AVX2 kernel's)."""
    found = find_grid(w)
    if found is not None and found.largest_code <= largest:
        return found.codes, found.scale, f"weights exact on a {found.scheme} grid (codes up to {found.largest_code})"
    bits = 8 if largest >= 127 else 7
    grid = fit_grid(w, "uniform", bits)
    codes = np.round(grid.snap(w) / grid.scale.reshape(-1, *([1] * (w.ndim - 1))))
    return codes.astype("int8"), grid.scale.astype("float32"), f"weights on the uniform {bits}-bit grid"


def is_aarch64(target: Target | None) -> bool:
    return target is not None and "arm_cpu" in target.keys and bool(target.attrs.get("feature.is_aarch64", False))


def int8_family(target: Target | None, aarch64: bool = False, avx2: bool = False) -> str | None:
    """Which int8 kernels run on ``target``: "neon" (aarch64: sdot, or smull without dot product), "vnni" (x86 with
    AVX-512 VNNI and VBMI), "avx2" (x86 with AVX2 only); None for none. ``aarch64`` and ``avx2``: the
    layer has those kernels too."""
    if target is None:
        return None
    if aarch64 and is_aarch64(target):   # NEON is in every aarch64 CPU: sdot, or smull without it
        return "neon"
    if x86.is_x86(target):
        if not int8_x86.missing_features(target):
            return "vnni"
        if avx2 and not int8_avx2.missing_features(target):
            return "avx2"
    return None


def check_int8_target(ctx: LayerContext, aarch64: bool = False, avx2: bool = False) -> tuple[float, int, str]:
    """(input scale, zero point, ``int8_family``) of an int8 layer, or LeaveDense saying why it stays
    float. ``aarch64``, ``avx2``: the layer has a kernel for aarch64, for x86 with AVX2 too."""
    ranges = ctx.options.get("ranges")
    if ranges is None:
        raise LeaveDense("int8 not asked for (tp.build(..., int8=tp.calibrate(model, batches)))")
    target = Target.current(allow_none=True)
    family = int8_family(target, aarch64, avx2)
    if family is None:
        if target is not None and x86.is_x86(target):   # the least a kernel of the layer needs
            missing = (int8_avx2 if avx2 else int8_x86).missing_features(target)
        else:
            where = ("x86 with AVX-512 VNNI" + (" or AVX2" if avx2 else "")
                     + (" or aarch64" if aarch64 else ""))
            name = "no target" if target is None else f"{target.kind.name} {target.attrs.get('mcpu', '')}".strip()
            raise LeaveDense(f"no int8 kernel for {name} ({where} only)")
        raise LeaveDense(f"no int8 kernel: the target CPU lacks {', '.join(missing)}")
    if ctx.name not in ranges:
        raise LeaveDense(f"no calibrated input range for layer {ctx.name!r} (tp.calibrate names the nn.Conv2d "
                         f"and nn.Linear modules)")
    return (*input_grid(*ranges[ctx.name]), family)


@register_sparse_kind("int8_filter_block", ["relax.nn.conv2d"],
                      options={"library": CHECKED_BY_PLAN, "ranges": CHECKED_BY_PLAN, "filters": integer(1)},
                      before="filter_block")
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    scale, zero_point, family = check_int8_target(ctx, aarch64=True, avx2=True)
    conv = pattern_conv_of(call, ctx, grouped=False)
    w, library, geom = conv.weight, conv.library, conv.geom
    strides = (1, 1), (2, 2)
    if family != "vnni":
        strides = strides[:1]
    if geom.strides not in strides or geom.padding != (1, 1, 1, 1):
        raise LeaveDense(f"the int8 kernel runs padding 1, stride {' or '.join(str(s[0]) for s in strides)} "
                         f"(strides {geom.strides}, padding {geom.padding})")
    stride = geom.strides[0]
    Ho, Wo = geom.out_hw
    codes, weight_scale, weight_grid = int8_weight(w, largest=int8_avx2.MAX_PAIR // 2 if family == "avx2" else 127)
    reasons = []
    sizes = ctx.options.get("filters")
    for filters in FILTERS if sizes is None else (sizes,):
        try:
            tables = int8_filter_block_tables(codes, library, filters)
            break
        except (NotPatternSparse, NotImplementedError) as e:
            reasons.append(str(e))
    else:
        raise LeaveDense("; ".join(reasons))
    N, C, H, W, K = geom.N, geom.C, geom.H, geom.W, w.shape[0]
    F = tables.filters
    B, L = tables.channel.shape
    geometry = (N, C, H, W, K, B, F, L, library.size)
    bias = np.zeros(B * F, dtype="int32")   # the zero point's share of the sums
    grid = np.array([np.float32(1.0 / scale), zero_point], dtype="float32")
    if family == "neon":                     # signed codes: the shift by 128 is folded in as well
        bias[:K] = -(zero_point - 128) * codes.astype(np.int64).sum(axis=(1, 2, 3))
        knobs = int8_neon.default_knobs(F, H, W, sdot=int8_neon.has_sdot(Target.current()))
        knobs_of = [knobs.rows, knobs.groups, knobs.sdot]
        kernel = int8_neon.int8_filter_block_pattern_conv2d_rowtriple_neon(*geometry, knobs)
        kernel_name, index = NEON_KERNEL, rowtriple_index(library)
        triples = rowtriple_shape(N, C, H, W, knobs.rows, knobs.groups)

        def quantize(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
            return bb.emit(bb.call_te(functools.partial(quantize_rowtriples, shape=triples), x, relax.const(grid),
                                      primfunc_name_hint=QUANTIZE_ROWTRIPLES,
                                      primfunc_attrs={LAYOUT_ATTR: ["rowtriple_neon", N, C, H, W, *knobs_of],
                                                      LAYER_ATTR: ctx.name}))
    else:
        bias[:K] = -zero_point * codes.astype(np.int64).sum(axis=(1, 2, 3))
        avx2 = family == "avx2"
        if avx2:
            knobs = int8_avx2.default_knobs(F, H, W)
            knobs_of = [knobs.rows, knobs.groups, knobs.blocks_inner]
            kernel = int8_avx2.int8_filter_block_pattern_conv2d_rowpair_avx2(*geometry, knobs)
            kernel_name, index = AVX2_KERNEL, shuffle_index_avx2(library)
        else:
            knobs = int8_x86.default_knobs(F, C, H, W, stride)
            knobs_of = [knobs.rows, knobs.groups, knobs.blocks_inner, knobs.stride]
            kernel = int8_x86.int8_filter_block_pattern_conv2d_rowpair_x86(*geometry, knobs)
            kernel_name, index = KERNEL, permute_index(library) if stride == 1 else record_index(library)
        rowpairs = written_out(int8_quantize_rowpairs_x86(N, C, H, W, knobs.rows, knobs.groups, avx2=avx2,
                                                          stride=stride))
        rowpairs = rowpairs.with_attrs({LAYOUT_ATTR: ["rowpair_avx2" if avx2 else "rowpair_x86", N, C, H, W, *knobs_of],
                                        LAYER_ATTR: ctx.name})

        def quantize(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
            return bb.emit(relax.call_tir(bb.add_func(rowpairs, QUANTIZE), relax.Tuple([x, relax.const(grid)]),
                                          written_tensor(rowpairs)))
    kernel = written_out(kernel).with_attrs({CONV_ATTR: [kernel_name, *geometry, *knobs_of], LAYER_ATTR: ctx.name})
    arrays = (tables.length, tables.channel, tables.pattern, tables.value, index, bias)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = quantize(bb, call.args[0])
        acc = bb.emit(relax.call_tir(bb.add_func(kernel, kernel_name),
                                     relax.Tuple([x, *(relax.const(a) for a in arrays)]),
                                     relax.TensorType((N, K, Ho, Wo), "int32")))
        return bb.call_te(functools.partial(dequantize_conv, scale=scale), acc, relax.const(weight_scale),
                          primfunc_name_hint=DEQUANTIZE_BLOCK,
                          primfunc_attrs={"op_pattern": 0, DEQUANTIZE_ATTR: float(scale)})

    macs_dense = N * K * C * 9 * Ho * Wo
    return Plan(emit=emit,
                summary=f"int8 (input scale {scale:.3g}, zero point {zero_point}; {weight_grid}), {library.size}x{library.taps} "
                        f"patterns shared by blocks of {F} filters, {int(tables.length.sum())}/{B * C} block kernels",
                macs_dense=macs_dense, macs_sparse=int(tables.length.sum()) * F * 4 * N * Ho * Wo,
                weight_bytes_packed=sum(a.nbytes for a in arrays))
