"""pool2d_nchw_x86: host CPU schedule of TVM's legalized 2-D pooling (max and average), NCHW.

Loop nest after scheduling:

    parallel (n, c, h)
      w                               -- a plain loop: LLVM's loop vectorizer makes it zmm code on AVX-512
        window rows x window columns (unrolled)
      write-back: epilogue (the average's division) per output column

The padding stage is inlined into the window reads. Explicit TVM vectors lost to LLVM's loop
vectorizer at every tile tried (a stride-2 window read becomes a gather, where LLVM emits contiguous
loads and permutes), so the schedule has no knob and no design space: pools are not tuning tasks
(docs/design.md#pool2d).
"""
from __future__ import annotations

from tvm import s_tir

from .generic_x86 import schedule as generic
from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, inline_epilogue
from .registry import register_schedule

POOL_BLOCKS = ("pool_max", "pool_sum")   # topi's 2-D pooling reductions (average: pool_sum, then a division)
# Output rows of at most this many columns keep the generic schedule (every output element a
# parallel iteration), which was faster there (docs/design.md#pool2d).
MIN_COLUMNS = 16


def inline_producers(sch: s_tir.Schedule, block) -> None:
    """Inline the padding stage, and elementwise stages before it, into the window reads."""
    inlined = True
    while inlined:
        inlined = False
        for p in sch.get_producers(block):
            try:
                sch.compute_inline(p)
                inlined = True
            except Exception:  # noqa: BLE001  not inlinable: stays a stage of its own
                pass


def _schedule(sch: s_tir.Schedule, block, target) -> None:
    loops = sch.get_loops(block)
    if len(loops) != 6 or int(sch.get(loops[3]).extent) <= MIN_COLUMNS:   # not NCHW 2-D, or a narrow row
        return generic(sch, block, target)
    n, c, h, w, r0, r1 = loops
    inline_producers(sch, block)
    wb = inline_epilogue(sch, sch.cache_write(block, 0, ACCUMULATOR_SCOPE))
    sch.parallel(sch.fuse(n, c, h))
    sch.reverse_compute_at(wb, w, preserve_unit_loops=True)
    sch.unroll(r0)
    sch.unroll(r1)
    sch.decompose_reduction(block, r0)


for _name in POOL_BLOCKS:
    register_schedule(_name, "cpu")(_schedule)
