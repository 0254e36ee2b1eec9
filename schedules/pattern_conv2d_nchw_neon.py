"""pattern_conv2d_nchw_neon: aarch64 NEON (4 float lanes, 32 vector registers) schedule of the pattern conv.

Loop nest of the main block after scheduling:

    parallel (n, h_outer, k)          -- cores split output rows x filters
      w_outer
        j < max_len                   -- kernels of filter k (table rows)
          t < taps   (unrolled)       -- one offset + one weight per tap: ``fmla vN.4s, vI.4s, vW.s[0]``
            hi (unrolled) x wm (unrolled) x wv (4-lane vector)   -- register tile of HI*WM q-registers
      write-back: crop + fused epilogue (bias, residual add, relu) from the register tile

An A76-class core has 32 q-registers, so the tile is taller and wider than AVX2's (16 ymm): up to
24 accumulators, leaving registers for the broadcast weight and the input vectors of a tap. The
loop nest and its design space are the x86 schedule's (``pattern_conv2d_nchw_x86.apply``) with
NEON's vector width and register budget; the default order keeps kernels inside the width tiles.
"""
from __future__ import annotations

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import MAIN_BLOCK

from . import pattern_conv2d_nchw_x86 as x86
from .pattern_conv2d_nchw_x86 import Knobs
from .registry import register_schedule

VECTOR = 4
MAX_ACCUMULATORS = 24   # of 32 q-registers; the rest hold the weight and the tap's input vectors
MAX_VECTORS = x86.MAX_VECTORS
NEON = {"vector": VECTOR, "max_accumulators": MAX_ACCUMULATORS}


def default_knobs(out_h: int, out_w_padded: int) -> Knobs:
    """The largest register tile within the budget; taller before wider (fewer distinct input rows
    per tap are loaded for the same number of FMAs when the tile is one vector column more);
    kernels inside the width tiles (the tile's accumulators stay live over all of a filter's kernels)."""
    cols = out_w_padded // VECTOR
    best = (0, 0, 1, 1)
    for vectors in (v for v in range(1, MAX_VECTORS + 1) if cols % v == 0):
        for rows in (r for r in range(1, out_h + 1) if out_h % r == 0 and r * vectors <= MAX_ACCUMULATORS):
            best = max(best, (rows * vectors, rows, rows, vectors))
    return Knobs(rows=best[2], vectors=best[3], lanes=VECTOR)


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """The x86 space (loop orders x sampled register tile x unroll) with NEON's lanes and registers;
    ``schedule`` (the default knobs) is one point of it."""
    return x86.one_space_per_order(sch, MAIN_BLOCK, x86.ORDERS, x86.apply, **NEON)


@register_schedule(MAIN_BLOCK, "arm_cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    knobs = knobs or default_knobs(int(sch.get(h).extent), int(sch.get(w).extent))
    x86.apply(sch, block, knobs.order, knobs, **NEON)
