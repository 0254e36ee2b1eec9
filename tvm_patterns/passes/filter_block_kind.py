"""The "filter_block" sparse kind: a pattern-sparse 3x3 conv2d whose blocks of consecutive filters share
their kernels and patterns (``sparsity.filter_block``), run by a kernel that reuses each loaded input
vector across the filters of a block. Tried before the "pattern" kind, which takes what this leaves."""
from __future__ import annotations

import dataclasses
import functools

from tvm import relax
from tvm.target import Target

from schedules import filter_block_pattern_conv2d_nchw_neon as fb_neon
from schedules import filter_block_pattern_conv2d_nchw_x86 as fb_x86
from schedules import pattern_conv2d_nchw_x86 as x86
from schedules.registry import find_schedule
from tvm_patterns.computes.pattern_conv2d import FILTER_BLOCK_BLOCK, filter_block_pattern_conv2d
from tvm_patterns.sparsity import NotPatternSparse
from tvm_patterns.sparsity.filter_block import filter_block_tables

from .pattern_kind import DEFAULT_MAX_DENSITY, check_index_limit, pattern_conv_of
from .registry import CHECKED_BY_PLAN, LayerContext, LeaveDense, Plan, integer, number, register_sparse_kind

# Block sizes tried, largest first: a weight whose blocks of 8 share kernels has blocks of 4 that do.
# Four filters a block fill AVX-512's and NEON's registers with 4 x 6-7 accumulators.
FILTERS = (4, 2)


def tile_rows(target: Target, filters: int, geom) -> int:
    """Output rows of the target schedule's register tile (the compute rounds the height up to them)."""
    out_h, row_vectors = geom.out_hw[0], geom.out_w_padded // geom.vector_width
    if x86.is_x86(target):
        return fb_x86.register_tile(filters, geom.vector_width, x86.isa_of(target).registers, out_h, row_vectors)[0]
    if target.kind.name == "llvm":
        return fb_neon.register_tile(filters, out_h, row_vectors)[0]
    return 1   # OpenCL: a work item's rows divide the output height (the schedule's choice)


@register_sparse_kind("filter_block", ["relax.nn.conv2d"],
                      options={"library": CHECKED_BY_PLAN, "max_density": number(0), "filters": integer(1)},
                      before="pattern")
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    target = Target.current(allow_none=True)
    if target is None or find_schedule(FILTER_BLOCK_BLOCK, target) is None:
        raise LeaveDense(f"no filter-block schedule for {target}")
    conv = pattern_conv_of(call, ctx, grouped=False)
    w, library, geom = conv.weight, conv.library, conv.geom
    N, C = geom.N, geom.C
    sizes = ctx.options.get("filters")
    reasons = []
    for filters in FILTERS if sizes is None else (sizes,):
        if w.shape[0] < 2 * filters:
            reasons.append(f"fewer than two blocks of {filters} filters")
            continue
        geom = dataclasses.replace(geom, row_tile=tile_rows(target, filters, geom))
        try:
            tables = filter_block_tables(w, library, filters, geom.plane, geom.row, geom.columns)
            break
        except NotPatternSparse as e:
            reasons.append(str(e))
    else:
        raise LeaveDense("; ".join(reasons))
    check_index_limit(geom)   # of the geometry with its row tiles
    density = tables.mac_density(C)
    max_density = ctx.options.get("max_density", DEFAULT_MAX_DENSITY)
    if density > max_density:
        raise LeaveDense(f"MAC density {density:.2f} is above {max_density:.2f}: dense is faster")
    ho, wo = geom.out_hw
    macs_dense = N * w.shape[0] * C * 9 * ho * wo
    arrays = (tables.length, tables.offset, tables.value)

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return bb.call_te(functools.partial(filter_block_pattern_conv2d, geom=geom, skip=target.kind.name == "llvm"),
                          call.args[0],
                          *(relax.const(a) for a in arrays), primfunc_name_hint=FILTER_BLOCK_BLOCK, primfunc_attrs={"op_pattern": 4})

    return Plan(emit=emit,
                summary=f"{library.size}x{library.taps} patterns shared by blocks of {tables.filters} filters, "
                        f"{int(tables.length.sum())}/{len(tables.length) * C} block kernels, "
                        f"{1 / max(density, 1e-9):.1f}x fewer MACs",
                macs_dense=macs_dense, macs_sparse=int(round(macs_dense * density)),
                weight_bytes_packed=sum(a.nbytes for a in arrays))
