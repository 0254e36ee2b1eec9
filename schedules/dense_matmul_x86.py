"""dense_matmul_x86: legalized Relax matmul x[M, K] @ w[K, N] (linear layers), the dense fallback.

Vectors run along N (contiguous in the weight); threads split N; the K reduction is outside the
vector tile so each weight row segment is streamed once.
"""
from __future__ import annotations

from tvm import s_tir

from .pattern_conv2d_nchw_x86 import inline_epilogue
from .registry import register_schedule

LANES = 8
VECTORS = 4


@register_schedule("matmul", "cpu")
def schedule(sch: s_tir.Schedule, block, target) -> None:
    loops = sch.get_loops(block)
    if len(loops) != 3:          # batched matmul: leave it to the generic schedule
        from .generic_x86 import schedule as generic
        return generic(sch, block, target)
    i, j, k = loops
    N = int(sch.get(j).extent)
    tile = LANES * VECTORS
    if N % tile:
        tile = LANES if N % LANES == 0 else 1
    cw = sch.cache_write(block, 0, "local")
    wb = inline_epilogue(sch, cw)
    jo, ji = sch.split(j, [None, tile])
    sch.reorder(jo, i, k, ji)
    sch.parallel(jo)
    sch.reverse_compute_at(wb, i)
    if tile >= LANES:
        jv, lane = sch.split(ji, [None, LANES])
        sch.unroll(jv)
        sch.vectorize(lane)
    sch.decompose_reduction(block, k)
