"""column_combine_dense on CPUs (x86 AVX2 / AVX-512, aarch64 NEON): a column-combined linear layer at
a few rows (``tvm_patterns.computes.column_combine``).

    parallel o_outer                   -- a tile of output features per task
      j < G                            -- groups: load values and offsets [j, o tile] once
        m (unrolled) x o_vectors (unrolled) x lanes   -- gather x[m, j*g + offset] (vpgatherdd /
                                          scalar loads on NEON), one FMA a vector

The values and the byte offsets are the only large operands, streamed once for all rows of the tile.
"""
from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from tvm_patterns.computes.column_combine import COLUMN_COMBINE_DENSE

from . import pattern_conv2d_nchw_x86 as x86
from .circulant_dense_cpu import NEON, widest_lanes
from .pattern_conv2d_nchw_opencl import largest_divisor
from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, inline_epilogue
from .registry import register_schedule

MAX_VECTORS = 4


def apply(sch: s_tir.Schedule, block, isa: x86.Isa) -> None:
    m, o, j = sch.get_loops(block)
    M, N = int(sch.get(m).extent), int(sch.get(o).extent)
    lanes = widest_lanes(N, isa)
    room = max(1, isa.max_accumulators // M)
    vectors = largest_divisor(N // lanes, min(MAX_VECTORS, room))
    cw = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    last = inline_epilogue(sch, cw)
    oo, ov, ol = sch.split(o, [None, vectors, lanes])
    sch.reorder(oo, j, m, ov, ol)
    sch.parallel(oo)
    sch.reverse_compute_at(last, oo)
    sch.unroll(m)
    sch.unroll(ov)
    sch.vectorize(ol)
    sch.decompose_reduction(block, j)


@register_schedule(COLUMN_COMBINE_DENSE, "cpu")
def schedule_x86(sch: s_tir.Schedule, block, target: Target) -> None:
    apply(sch, block, x86.isa_of(target))


@register_schedule(COLUMN_COMBINE_DENSE, "arm_cpu")
def schedule_neon(sch: s_tir.Schedule, block, target: Target) -> None:
    apply(sch, block, NEON)
