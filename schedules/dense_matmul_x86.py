"""dense_matmul_x86: legalized Relax matmul x[M, K] @ w[K, N] (linear layers), the dense fallback.

Vectors run along N (contiguous in the weight); threads split N; the K reduction is outside the
vector tile so each weight row segment is streamed once. Knobs: vectors per tile, unroll of K.
"""
from __future__ import annotations

from tvm import s_tir

from .generic_x86 import schedule as generic
from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, inline_epilogue, perfect_tile, unroll_knob
from .registry import register_schedule

LANES = 8
VECTORS = 4


MAIN_BLOCK = "matmul"
MAX_VECTORS = 8


def apply(sch: s_tir.Schedule, block, vectors: int | None = None, unroll: int | None = None) -> None:
    """Threads split N into tiles of ``vectors`` 8-lane vectors (None: sampled), the K reduction
    outside the tile; N not a multiple of 8 stays scalar."""
    i, j, k = sch.get_loops(block)
    N = int(sch.get(j).extent)
    cw = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    wb = inline_epilogue(sch, cw)
    lanes = LANES if N % LANES == 0 else 1
    j_, lane = sch.split(j, [None, lanes])
    jo, jv = perfect_tile(sch, j_, vectors, MAX_VECTORS)
    sch.reorder(jo, i, k, jv, lane)
    sch.parallel(jo)
    sch.reverse_compute_at(wb, i)
    sch.unroll(jv)
    if lanes > 1:
        sch.vectorize(lane)
    unroll_knob(sch, k, unroll)
    sch.decompose_reduction(block, k)


def default_vectors(N: int) -> int:
    """The divisor of N's vector columns nearest ``VECTORS`` (ties: the wider): one tile streams a
    longer piece of each weight row (docs/design.md#dense-matmul-vectors)."""
    cols = N // LANES if N % LANES == 0 else N
    return min((d for d in range(1, MAX_VECTORS + 1) if cols % d == 0), key=lambda d: (abs(d - VECTORS), -d))


def design_space(sch: s_tir.Schedule, target=None) -> s_tir.Schedule:
    """MetaSchedule design space of a legalized 2-D matmul: vectors per tile and unroll sampled;
    ``schedule`` is one point of it (a batched matmul has no space: the generic schedule runs it)."""
    block = sch.get_sblock(MAIN_BLOCK)
    if len(sch.get_loops(block)) != 3:
        raise NotImplementedError("batched matmul has no design space (the generic schedule runs it)")
    apply(sch, block)
    return sch


@register_schedule(MAIN_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target) -> None:
    loops = sch.get_loops(block)
    if len(loops) != 3:          # batched matmul: leave it to the generic schedule
        return generic(sch, block, target)
    apply(sch, block, default_vectors(int(sch.get(loops[1]).extent)), 0)
