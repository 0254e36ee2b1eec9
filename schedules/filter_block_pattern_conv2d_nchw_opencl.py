"""filter_block_pattern_conv2d_nchw_opencl: Mali and Adreno (OpenCL) schedules of the filter-block pattern conv.

The pattern conv's OpenCL kernels (``pattern_conv2d_nchw_opencl``) with a block of F filters per
work-group instead of one filter:

    conv kernel:  work-group = one block of F filters of one image x ``work_group`` items along the plane
                  work item  = ``rows`` output rows x ``vector`` output pixels x F filters
        j < max_len                  -- the block's kernels: one trip count for the whole work-group
          t < taps (unrolled)        -- one offset and F weights, uniform across the group
            rows (unrolled) x f (unrolled) x vector (float4)   -- each input vector loaded once feeds
                                                                  the F filters' accumulators

so a work item loads each input vector once for F multiply-adds (the free pattern kernel: one).
"""
from __future__ import annotations

from dataclasses import replace

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import FILTER_BLOCK_BLOCK

from . import pattern_conv2d_nchw_opencl as ocl
from .filter_block_pattern_conv2d_nchw_x86 import filters_of
from .pattern_conv2d_nchw_x86 import perfect_tile
from .registry import register_schedule


MIN_GROUP = 16


def work_group(plane: int, at_most: int) -> int:
    """Work items of a group: the largest divisor of the plane's items up to ``at_most`` when one is
    at least MIN_GROUP, so that no item is idle and no statement is guarded (the F filters'
    multiply-adds of a tap then sit in one basic block, where the compiler loads each input once);
    else the smallest power of two covering the plane, up to ``at_most``."""
    divisor = ocl.largest_divisor(plane, at_most)
    if divisor >= min(MIN_GROUP, plane):
        return divisor
    group = MIN_GROUP
    while group < min(plane, at_most):
        group *= 2
    return min(group, at_most)


def apply(sch: s_tir.Schedule, block, knobs: ocl.Knobs, target) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    groups = ocl.work_groups(target)
    knobs = replace(knobs, rows=ocl.largest_divisor(int(sch.get(h).extent), knobs.rows),
                    work_group=max(g for g in groups if g <= knobs.work_group))
    wb = ocl.gpu_stages(sch, block, knobs)
    kb, f = sch.split(k, [None, filters_of(sch, block)])
    ho, hi = perfect_tile(sch, h, knobs.rows, ocl.MAX_ROWS)
    wo, wv = sch.split(w, [None, knobs.vector])
    sch.reorder(ho, wo, hi, wv)
    plane = sch.fuse(ho, wo)
    po, tx = sch.split(plane, [None, work_group(int(sch.get(plane).extent), knobs.work_group)])
    sch.reorder(kb, po, tx, j, t, hi, f, wv)
    bx = sch.fuse(n, kb, po)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.reverse_compute_at(wb, tx)
    for loop in (t, hi, f):
        sch.unroll(loop)
    sch.vectorize(wv)
    sch.decompose_reduction(block, j)
    last = sch.get_loops(wb)[-1]
    sch.unroll(last)   # the write-back crops F filters, rows and columns: predicated, scalar lanes


@register_schedule(FILTER_BLOCK_BLOCK, "mali")
def schedule_mali(sch: s_tir.Schedule, block, target, knobs: ocl.Knobs | None = None) -> None:
    apply(sch, block, knobs or ocl.knobs_for(target, ocl.MALI), target)


@register_schedule(FILTER_BLOCK_BLOCK, "adreno")
def schedule_adreno(sch: s_tir.Schedule, block, target, knobs: ocl.Knobs | None = None) -> None:
    apply(sch, block, knobs or ocl.knobs_for(target, ocl.ADRENO), target)
