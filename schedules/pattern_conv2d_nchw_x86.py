"""pattern_conv2d_nchw_x86: host CPU (AVX2, 8 float lanes) schedule of the pattern conv.

Loop nest of the main block after scheduling:

    parallel (n, h_outer, k)          -- threads split output rows; a row block of input stays in L2
      w_outer
        j < max_len                   -- kernels of filter k (table rows)
          t < taps   (unrolled)       -- one offset + one broadcast weight per tap
            hi (unrolled) x wm (unrolled) x wv (8-lane vector)   -- register tile of HI*WM vectors
      write-back: crop + fused epilogue (bias, residual add, relu) from the register tile
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import CROP_BLOCK, MAIN_BLOCK, PAD_BLOCK

from .registry import register_schedule

VECTOR = 8
MAX_ACCUMULATORS = 14   # of AVX2's 16 ymm registers; one holds the broadcast weight


@dataclass(frozen=True)
class Knobs:
    rows: int      # output rows per register tile (HI)
    vectors: int   # 8-lane vectors per tile row (WM)
    filters_inner: bool = False   # loop filters inside the width tiles (input tile reuse in L1)
    kernels_outer: bool = False   # loop kernels outside the width tiles (input rows streamed; tile in L1)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_knobs(out_h: int, out_w_padded: int) -> Knobs:
    """One vector column of up to 8 rows (the whole column when it is 14 rows or fewer), kernels
    outside the width tiles. Measured on Zen1 over VGG-16 shapes: taller single-vector tiles beat
    wider ones (fewer distinct input lines per tap); kernels-outer streams each input row once."""
    rows = out_h if out_h <= MAX_ACCUMULATORS else max(d for d in _divisors(out_h) if d <= 8)
    return Knobs(rows=rows, vectors=1, kernels_outer=True)


def inline_epilogue(sch: s_tir.Schedule, block):
    """Reverse-inline the elementwise consumers of ``block`` into it; returns the last block."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return block
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001  not injective / several producers: stays a stage
            return block


def schedule_pad(sch: s_tir.Schedule, pad) -> None:
    """Parallel over (image, channel); rows of the padded plane split out so x is contiguous."""
    ann = sch.get(pad).annotations
    row, plane = int(ann["row"]), int(ann["plane"])
    n, i = sch.get_loops(pad)
    c, y, x = sch.split(i, [None, plane // row, row])
    sch.parallel(sch.fuse(n, c))


def split_pattern_stages(sch: s_tir.Schedule, block):
    """Schedule the padding producer; return the write-back block (crop + epilogue) of ``block``."""
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith(PAD_BLOCK):
            schedule_pad(sch, p)
    cw = sch.cache_write(block, 0, "local")
    consumers = sch.get_consumers(cw)
    if len(consumers) == 1 and sch.get(consumers[0]).name_hint.startswith(CROP_BLOCK):
        sch.compute_inline(cw)
        cw = consumers[0]
    return inline_epilogue(sch, cw)


@register_schedule(MAIN_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    knobs = knobs or default_knobs(int(sch.get(h).extent), int(sch.get(w).extent))
    wb = split_pattern_stages(sch, block)
    ho, hi = sch.split(h, [None, knobs.rows])
    wo, wm, wv = sch.split(w, [None, knobs.vectors, VECTOR])
    if knobs.kernels_outer:
        sch.reorder(n, ho, k, j, wo, t, hi, wm, wv)
        outer = sch.fuse(n, ho, k)
        sch.parallel(outer)
        sch.reverse_compute_at(wb, outer)
    elif knobs.filters_inner:
        sch.reorder(n, ho, wo, k, j, t, hi, wm, wv)
        sch.parallel(sch.fuse(n, ho, wo))
        sch.reverse_compute_at(wb, k)
    else:
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
