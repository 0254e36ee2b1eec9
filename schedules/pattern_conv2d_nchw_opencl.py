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

from .pattern_conv2d_nchw_x86 import inline_epilogue
from .registry import register_schedule


@dataclass(frozen=True)
class Knobs:
    vector: int       # output pixels along w per work item, vectorised (4 = float4); divides 8
    rows: int         # output rows per work item (at most; the largest divisor of Ho not above it)
    work_group: int   # work items per work-group of the conv kernel
    pad_group: int = 64   # work items per work-group of the pad kernel


# Mali (Bifrost/Valhall): 128-bit vector ALUs want float4; 64-item groups keep registers per item high.
MALI = Knobs(vector=4, rows=2, work_group=64)
# Adreno: waves of 64/128 lanes that still gain from float4 loads and stores; one row per item and
# larger groups to fill the waves.
ADRENO = Knobs(vector=4, rows=1, work_group=128)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def schedule_pad(sch: s_tir.Schedule, pad, threads: int) -> None:
    fused = sch.fuse(*sch.get_loops(pad))
    threads = min(threads, int(sch.get(fused).extent))
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def gpu_stages(sch: s_tir.Schedule, block, knobs: Knobs):
    """Schedule the padding kernel; return the write-back block (crop + epilogue) of ``block``."""
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith(PAD_BLOCK):
            schedule_pad(sch, p, knobs.pad_group)
    cw = sch.cache_write(block, 0, "local")
    consumers = sch.get_consumers(cw)
    if len(consumers) == 1 and sch.get(consumers[0]).name_hint.startswith(CROP_BLOCK):
        sch.compute_inline(cw)
        cw = consumers[0]
    return inline_epilogue(sch, cw)


def apply(sch: s_tir.Schedule, block, knobs: Knobs) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    rows = _largest_divisor(int(sch.get(h).extent), knobs.rows)
    wb = gpu_stages(sch, block, knobs)
    ho, hi = sch.split(h, [None, rows])
    wo, wv = sch.split(w, [None, knobs.vector])
    sch.reorder(ho, wo, hi, wv)
    plane = sch.fuse(ho, wo)
    threads = min(knobs.work_group, int(sch.get(plane).extent))
    po, tx = sch.split(plane, [None, threads])
    bx = sch.fuse(n, k, po)
    sch.reorder(bx, tx, j, t, hi, wv)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.reverse_compute_at(wb, tx)
    sch.unroll(t)
    sch.unroll(hi)
    if knobs.vector > 1:
        sch.vectorize(wv)
    sch.decompose_reduction(block, j)
    last = sch.get_loops(wb)[-1]
    # A cropped write-back is predicated (w < Wo): its lanes stay scalar.
    if not sch.get(wb).name_hint.startswith(CROP_BLOCK) and knobs.vector > 1:
        sch.vectorize(last)
    else:
        sch.unroll(last)


def _knobs_for(target, base: Knobs) -> Knobs:
    """Work-groups never above the target's thread limit."""
    limit = int(target.attrs.get("max_num_threads", 256))
    return replace(base, work_group=min(base.work_group, limit), pad_group=min(base.pad_group, limit))


@register_schedule(MAIN_BLOCK, "mali")
def schedule_mali(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, knobs or _knobs_for(target, MALI))


@register_schedule(MAIN_BLOCK, "adreno")
def schedule_adreno(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, knobs or _knobs_for(target, ADRENO))
