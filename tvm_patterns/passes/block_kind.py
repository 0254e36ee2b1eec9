"""The "block" sparse kind: 1x1 conv2d and linear layers (matmul with a constant weight) whose weight
matrix is block-punched: blocks of R output channels keep the same input channels.

Options (``options={"block": {...}}``):
- ``block_rows``: force R (default: detected among ``block_rows_candidates``);
- ``block_rows_candidates``: R values tried, default (16, 8, 4); the largest R whose format costs at
  most ``tolerance`` more MACs than the smallest candidate's is taken (the R the weight was pruned with);
- ``max_density``: rewrite only when at most this fraction of the dense MACs remains (default 0.5).
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax

from tvm_patterns.computes.block_sparse import (CONV_BLOCK, DENSE_BLOCK, Conv1x1Geometry, block_sparse_conv2d_1x1,
                                                block_sparse_dense)
from tvm_patterns.sparsity.block import block_density, pack_block_punched

from .pattern_kind import check_conv_attrs
from .registry import (LayerContext, LeaveDense, Plan, constant_weight, integer, integers, number,
                       register_sparse_kind, static_shape)

DEFAULT_MAX_DENSITY = 0.5
DEFAULT_CANDIDATES = (16, 8, 4)
TOLERANCE = 0.02     # relative extra MACs accepted for a larger (faster) block


def choose_block_rows(w2d: np.ndarray, options: dict) -> tuple[int, float]:
    """(R, MAC density of the block-punched format) for a [rows, cols] weight, or LeaveDense."""
    max_density = float(options.get("max_density", DEFAULT_MAX_DENSITY))
    element_density = float(np.count_nonzero(w2d)) / w2d.size
    if element_density > max_density:
        raise LeaveDense(f"{element_density:.0%} of the weights are nonzero (rewrite at most "
                         f"{max_density:.0%}): not sparse enough to pay")
    forced = options.get("block_rows")
    if forced is not None:
        candidates = [int(forced)]
    else:
        candidates = sorted({int(r) for r in options.get("block_rows_candidates", DEFAULT_CANDIDATES)})
    densities = {r: block_density(w2d, r) for r in candidates}
    floor = min(densities.values())
    tol = float(options.get("tolerance", TOLERANCE))
    R = max(r for r, d in densities.items() if d <= floor * (1 + tol) + 1e-12)
    density = densities[R]
    if density > max_density:
        raise LeaveDense(f"not block-structured: {element_density:.0%} of the weights are nonzero but blocks "
                         f"of {candidates} rows keep {floor:.0%} of the MACs (rewrite at most {max_density:.0%})")
    return R, density


def check_weight(w: np.ndarray) -> None:
    """LeaveDense unless the weight is finite float32."""
    if w.dtype != np.float32:
        raise LeaveDense(f"weight dtype {w.dtype} (only float32)")
    if not np.isfinite(w).all():
        raise LeaveDense("weight has NaN or infinite values")


def check_input(expr, ndims) -> tuple:
    """The static shape of a float32 input of one of ``ndims`` ranks, or LeaveDense."""
    shape = static_shape(expr)
    if len(shape) not in ndims:
        raise LeaveDense(f"input rank {len(shape)} (expected {' or '.join(map(str, ndims))})")
    if expr.ty.dtype != "float32":
        raise LeaveDense(f"input dtype {expr.ty.dtype} (only float32)")
    return shape


def _summary(R: int, packed, density: float) -> str:
    return (f"block-punched {R}x{packed.width} (of {packed.shape[1]} columns) in {packed.n_blocks} blocks, "
            f"{1 / max(density, 1e-9):.1f}x fewer MACs")


def block_punched(w2d: np.ndarray, options: dict) -> tuple:
    """(packed rows of R, MAC density, summary) of a block-punched weight, or LeaveDense."""
    R, density = choose_block_rows(w2d, options)
    packed = pack_block_punched(w2d, R)
    return packed, density, _summary(R, packed, density)


def conv1x1_parts(call: relax.Call) -> tuple:
    """(weight [K, C, 1, 1], strides, input shape (N, C, H, W)) of an unpadded 1x1 conv with a finite
    float32 constant weight and a float32 NCHW input, or LeaveDense."""
    w = constant_weight(call)
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        raise LeaveDense(f"kernel {tuple(w.shape[2:])} is not 1x1")
    check_weight(w)
    strides, padding = check_conv_attrs(call.attrs, w.shape)
    if any(padding):
        raise LeaveDense(f"padding={list(padding)} on a 1x1 conv (only 0)")
    return w, strides, check_input(call.args[0], (4,))


def plan_conv(call: relax.Call, ctx: LayerContext, structure=block_punched) -> Plan:
    """A 1x1 conv on the block-sparse kernel; ``structure(w2d, options)`` -> (BlockPunched, MAC
    density, summary) recognises and packs the weight (the block kind's or another kind's)."""
    w, strides, (N, C, H, W) = conv1x1_parts(call)
    K = w.shape[0]
    packed, density, summary = structure(w.reshape(K, C), ctx.options)
    geom = Conv1x1Geometry(N, C, H, W, K, strides)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return bb.call_te(functools.partial(block_sparse_conv2d_1x1, geom=geom), call.args[0],
                          relax.const(packed.col_idx), relax.const(packed.values),
                          primfunc_name_hint=CONV_BLOCK, primfunc_attrs={"op_pattern": 4})

    macs = geom.macs_dense()
    return Plan(emit=emit, summary=summary, macs_dense=macs,
                macs_sparse=int(round(macs * density)), weight_bytes_packed=packed.col_idx.nbytes + packed.values.nbytes)


def matmul_weight(call: relax.Call) -> tuple:
    """(w2d [out, in] float32, input shape) of a matmul with a constant 2-D weight, or LeaveDense."""
    w = constant_weight(call)            # [in, out]: torch's Linear weight, transposed and folded
    if w.ndim != 2:
        raise LeaveDense(f"weight rank {w.ndim} (only a 2-D [in, out] weight)")
    check_weight(w)
    out_dtype = getattr(call.attrs, "out_dtype", None)
    if out_dtype is not None and str(out_dtype) not in ("", "void", "float32"):
        raise LeaveDense(f"out_dtype={out_dtype} (only float32)")
    shape = check_input(call.args[0], (2, 3))
    Kin, Nout = w.shape
    if shape[-1] != Kin:
        raise LeaveDense(f"input features {shape[-1]} do not match the weight's {Kin}")
    return np.ascontiguousarray(w.T), shape     # [out, in], rows = output features


def plan_matmul(call: relax.Call, ctx: LayerContext, structure=block_punched) -> Plan:
    """A linear layer on the block-sparse kernel; ``structure`` as in ``plan_conv``."""
    w2d, shape = matmul_weight(call)
    Nout, Kin = w2d.shape
    packed, density, summary = structure(w2d, ctx.options)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return bb.call_te(functools.partial(block_sparse_dense, out_features=Nout), call.args[0],
                          relax.const(packed.col_idx), relax.const(packed.values),
                          primfunc_name_hint=DENSE_BLOCK, primfunc_attrs={"op_pattern": 4})

    macs = int(np.prod(shape[:-1])) * Kin * Nout
    return Plan(emit=emit, summary=summary, macs_dense=macs,
                macs_sparse=int(round(macs * density)), weight_bytes_packed=packed.col_idx.nbytes + packed.values.nbytes)


# the options of the block-punched format, also the int8 block kind's
BLOCK_OPTIONS = {"block_rows": integer(1), "block_rows_candidates": integers(1), "max_density": number(0),
                 "tolerance": number(0)}


@register_sparse_kind("block", ["relax.nn.conv2d", "relax.matmul"], options=BLOCK_OPTIONS)
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    if call.op.name == "relax.nn.conv2d":
        return plan_conv(call, ctx)
    return plan_matmul(call, ctx)
