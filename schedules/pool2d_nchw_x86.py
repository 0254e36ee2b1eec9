"""pool2d_nchw_x86: host CPU schedule of TVM's legalized 2-D pooling (max and average), NCHW.

Loop nest after scheduling:

    parallel (n, c, h)
      w                               -- a plain loop: LLVM's loop vectorizer makes it zmm code on AVX-512
        window rows x window columns (unrolled)
      write-back: epilogue (the average's division) per output column

The padding stage is inlined into the window reads. Measured on Zen5 against the generic fallback
(which ran it scalar): ResNet-18's 3x3/2 max pool 2.30 -> 0.12 ms, VGG-16's 2x2/2 ones 4.12 ->
0.36, 0.47 -> 0.16 and 0.20 -> 0.14 ms (224, 112 and 56 wide inputs). Explicit TVM vectors over
tiles of output columns were 1.5x..4x slower at every tile tried (2 to 16 columns, strides 1 and 2):
a stride-2 window read becomes a gather, while LLVM turns the plain loop into contiguous loads and
permutes. For AVX2 CPUs (Zen 1 and 3, Haswell) LLVM's cost model leaves the stride-2 loops scalar
(no cheap two-register permute); not measured against other schedules there. So the schedule has
no knob and no design space: pools are not tuning tasks.
"""
from __future__ import annotations

from tvm import s_tir

from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, inline_epilogue
from .registry import register_schedule

POOL_BLOCKS = ("pool_max", "pool_sum")   # topi's 2-D pooling reductions (average: pool_sum, then a division)
# Output rows of at most this many columns keep the generic schedule (every output element a
# parallel iteration): at 7 and 14 columns it was x1.7..x1.9 faster than a vectorized row on Zen5.
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
        from .generic_x86 import schedule as generic
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
