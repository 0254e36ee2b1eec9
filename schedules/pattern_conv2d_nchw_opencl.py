"""pattern_conv2d_nchw_opencl: Mali and Adreno (OpenCL) schedules of the pattern conv, one per target key.

Two kernels per layer:

    pad kernel:   one work item per element of the padded, flattened input [N, C * plane]
    conv kernel:  work-group = one filter k of one image (n) x ``work_group`` items along the output plane
                  work item  = ``rows`` output rows x ``vector`` output pixels (float4 on Mali)
        j < max_len           -- kernels of filter k: the same trip count for the whole work-group,
          t < taps (unrolled) -- offset and weight are uniform across the group (scalar loads)
            rows (unrolled) x vector (float4 / unrolled scalars)   -- accumulators in private memory
        write-back: crop + fused epilogue (bias, residual add, relu), vstore4 when not cropped

The padding stays a kernel of its own: inlined, its bounds test depends on the data-dependent table
offsets and scalarises every vector load.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import CROP_BLOCK, MAIN_BLOCK, PAD_BLOCK

from .pattern_conv2d_nchw_x86 import categorical_knob, inline_epilogue, perfect_tile
from .registry import register_schedule


@dataclass(frozen=True)
class Knobs:
    vector: int       # output pixels along w per work item, vectorised (4 = float4); divides 8
    rows: int         # output rows per work item (at most; the largest divisor of Ho not above it)
    work_group: int   # work items per work-group of the conv kernel (a power of two)
    pad_group: int = 64   # work items per work-group of the pad kernel


# Mali (Bifrost/Valhall): 128-bit vector ALUs want float4; 64-item groups keep registers per item high.
MALI = Knobs(vector=4, rows=2, work_group=64)
# Adreno: waves of 64/128 lanes that still gain from float4 loads and stores; one row per item and
# larger groups to fill the waves.
ADRENO = Knobs(vector=4, rows=1, work_group=128)


def largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def bind_flat(sch: s_tir.Schedule, block, threads: int) -> None:
    """One work item per element of an elementwise stage (padding, packing): its loops fused, split
    into work-groups of at most ``threads``."""
    fused = sch.fuse(*sch.get_loops(block))
    threads = min(threads, int(sch.get(fused).extent))
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def gpu_stages(sch: s_tir.Schedule, block, knobs: Knobs):
    """Schedule the padding kernel; return the write-back block (crop + epilogue) of ``block``."""
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith(PAD_BLOCK):
            bind_flat(sch, p, knobs.pad_group)
    cw = sch.cache_write(block, 0, "local")
    consumers = sch.get_consumers(cw)
    if len(consumers) == 1 and sch.get(consumers[0]).name_hint.startswith(CROP_BLOCK):
        sch.compute_inline(cw)
        cw = consumers[0]
    return inline_epilogue(sch, cw)


VECTORS = (1, 2, 4)        # candidates of the vector knob (all divide the padded width, a multiple of 8)
MAX_ROWS = 4               # the tuner tries up to this many output rows per work item
MIN_WORK_GROUP = 16


def work_groups(target) -> list[int]:
    """Candidates of the work-group knob: powers of two up to the target's thread limit."""
    limit = int(target.attrs.get("max_num_threads", 256)) if target is not None else 256
    sizes, g = [], MIN_WORK_GROUP
    while g <= limit:
        sizes.append(g)
        g *= 2
    return sizes


def apply(sch: s_tir.Schedule, block, knobs: Knobs | None, target=None) -> None:
    """``knobs`` None leaves vector, rows and work-group size to the tuner (sampled); otherwise they
    are the fixed decisions of the same sampling instructions."""
    n, k, h, w, j, t = sch.get_loops(block)
    groups = work_groups(target)
    if knobs is not None:
        knobs = replace(knobs, rows=largest_divisor(int(sch.get(h).extent), knobs.rows),
                        work_group=max(g for g in groups if g <= knobs.work_group))
    wb = gpu_stages(sch, block, knobs or replace(MALI, pad_group=min(MALI.pad_group, groups[-1])))
    ho, hi = perfect_tile(sch, h, knobs and knobs.rows, MAX_ROWS)
    wo, wv = sch.split(w, [None, categorical_knob(sch, VECTORS, knobs and knobs.vector, "vector")])
    sch.reorder(ho, wo, hi, wv)
    plane = sch.fuse(ho, wo)
    if knobs is not None:   # no larger group than the plane needs (the tuner may still try one)
        extent = int(sch.get(plane).extent)
        while knobs.work_group // 2 >= extent and knobs.work_group // 2 in groups:
            knobs = replace(knobs, work_group=knobs.work_group // 2)
    po, tx = sch.split(plane, [None, categorical_knob(sch, groups, knobs and knobs.work_group, "work_group")])
    bx = sch.fuse(n, k, po)
    sch.reorder(bx, tx, j, t, hi, wv)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.reverse_compute_at(wb, tx)
    sch.unroll(t)
    sch.unroll(hi)
    sch.vectorize(wv)
    sch.decompose_reduction(block, j)
    last = sch.get_loops(wb)[-1]
    # A cropped write-back is predicated (w < Wo): its lanes stay scalar.
    if not sch.get(wb).name_hint.startswith(CROP_BLOCK):
        sch.vectorize(last)
    else:
        sch.unroll(last)


def design_space(sch: s_tir.Schedule, target=None) -> s_tir.Schedule:
    """MetaSchedule design space of a PrimFunc holding a pattern conv on an OpenCL GPU: vector
    width, rows per work item and work-group size sampled; the presets are points of it."""
    apply(sch, sch.get_sblock(MAIN_BLOCK), None, target)
    return sch


def knobs_for(target, base: Knobs) -> Knobs:
    """Work-groups never above the target's thread limit."""
    limit = int(target.attrs.get("max_num_threads", 256))
    return replace(base, work_group=min(base.work_group, limit), pad_group=min(base.pad_group, limit))


@register_schedule(MAIN_BLOCK, "mali")
def schedule_mali(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, knobs or knobs_for(target, MALI), target)


@register_schedule(MAIN_BLOCK, "adreno")
def schedule_adreno(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, knobs or knobs_for(target, ADRENO), target)
