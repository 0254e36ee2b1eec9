"""pattern_conv2d_nchw_neon: aarch64 NEON (4 float lanes, 32 vector registers) schedule of the pattern conv.

Loop nest of the main block after scheduling:

    parallel (n, h_outer, k)          -- cores split output rows x filters
      w_outer
        j < max_len                   -- kernels of filter k (table rows)
          t < taps   (unrolled)       -- one offset + one weight per tap: ``fmla vN.4s, vI.4s, vW.s[0]``
            hi (unrolled) x wm (unrolled) x wv (4-lane vector)   -- register tile of HI*WM q-registers
      write-back: crop + fused epilogue (bias, residual add, relu) from the register tile

An A76-class core has 32 q-registers, so the tile is taller and wider than AVX2's (16 ymm): up to
24 accumulators, leaving registers for the broadcast weight and the input vectors of a tap.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import CROP_BLOCK, MAIN_BLOCK

from .pattern_conv2d_nchw_x86 import split_pattern_stages
from .registry import register_schedule

VECTOR = 4
MAX_ACCUMULATORS = 24   # of 32 q-registers; the rest hold the weight and the tap's input vectors
MAX_VECTORS = 4


@dataclass(frozen=True)
class Knobs:
    rows: int      # output rows per register tile (HI); divides the output height
    vectors: int   # 4-lane vectors per tile row (WM); divides the padded output width / 4


def default_knobs(out_h: int, out_w_padded: int) -> Knobs:
    """The largest register tile within the budget; taller before wider (fewer distinct input rows
    per tap are loaded for the same number of FMAs when the tile is one vector column more)."""
    cols = out_w_padded // VECTOR
    best = (0, 0, 1, 1)
    for vectors in (v for v in range(1, MAX_VECTORS + 1) if cols % v == 0):
        for rows in (r for r in range(1, out_h + 1) if out_h % r == 0 and r * vectors <= MAX_ACCUMULATORS):
            best = max(best, (rows * vectors, rows, rows, vectors))
    return Knobs(rows=best[2], vectors=best[3])


@register_schedule(MAIN_BLOCK, "arm_cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    knobs = knobs or default_knobs(int(sch.get(h).extent), int(sch.get(w).extent))
    wb = split_pattern_stages(sch, block)
    ho, hi = sch.split(h, [None, knobs.rows])
    wo, wm, wv = sch.split(w, [None, knobs.vectors, VECTOR])
    sch.reorder(n, ho, k, wo, j, t, hi, wm, wv)
    sch.parallel(sch.fuse(n, ho, k))
    sch.reverse_compute_at(wb, wo)
    sch.unroll(t)
    sch.unroll(hi)
    sch.unroll(wm)
    sch.vectorize(wv)
    sch.decompose_reduction(block, j)
    last = sch.get_loops(wb)[-1]
    # A cropped write-back is predicated (w < Wo): it stays scalar.
    if not sch.get(wb).name_hint.startswith(CROP_BLOCK) and int(sch.get(last).extent) % VECTOR == 0:
        _, lane = sch.split(last, [None, VECTOR])
        sch.vectorize(lane)
