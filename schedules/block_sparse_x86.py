"""block_dense_x86 / block_conv2d_1x1_x86: host CPU (AVX2, 8 float lanes) schedules of the
block-punched computes (``tvm_patterns.computes.block_sparse``).

Loop nest of the main block after scheduling (conv; the linear layer has no h loops):

    parallel (n, h_outer, block)       -- threads split blocks of R output channels; one h-row
                                          chunk of the input stays in L2 across the blocks
      w_outer                          -- (Knobs.tiles_outer: w_outer goes above the blocks)
        r_outer                        -- R rows of a block in register tiles of RT rows
          j < width                    -- kept input channels of the block: one index load
            r_inner (unrolled) x hi (unrolled) x wm (unrolled) x 8-lane vector   -- RT*HI*WM FMAs
                                          per j on one broadcast weight per row
          write-back: crop / transpose + fused epilogue (bias, residual, relu) from the registers

The index ``col_idx[block, j]`` is shared by the whole register tile, so the gather costs one
scalar load per RT*HI*WM vector FMAs. Zen1 issues one 8-lane FMA per cycle with a 5-cycle
latency: tiles of 8..12 accumulators hide it. The hot loop (``inspect_source("asm")``) is 8
``vfmadd231ps`` on 2 ``vmovups`` + 4 ``vbroadcastss`` + one ``imul`` for the gathered row.
Measured on Zen1, 1 thread: ~22-30 useful GFLOP/s (PyTorch dense ~38); unrolling j by 2 or 4,
channel-vector tiles (no padding of 7/14/28-wide rows) and tiles with one broadcast and 8 loads
were all slower or no better.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from tvm_patterns.computes.block_sparse import CONV_BLOCK, DENSE_BLOCK, OUT_SUFFIX, PACK_SUFFIX

from .registry import register_schedule

VECTOR = 8
TARGET_ACCUMULATORS = 12   # of AVX2's 16 ymm registers: the rest hold the broadcast and the loads
MAX_TILE_ROWS = 8


@dataclass(frozen=True)
class Knobs:
    rows: int        # RT: output channels per register tile (divides R)
    h_rows: int      # HI: output rows per register tile (conv; divides Ho); 1 for linear
    vectors: int     # WM: 8-lane vectors along w / tokens per register tile row
    tiles_outer: bool = False  # w / token tiles outside the blocks (input tile reused across blocks);
                               # measured neutral on ResNet-50 1x1, 7% slower on BERT's 3072->768


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_knobs(block_rows: int, out_h: int, width_vectors: int) -> Knobs:
    """The most accumulators up to TARGET_ACCUMULATORS; among equals the squarest tile (fewest
    loads + broadcasts per FMA), then the most rows of the block. Measured on Zen1 (ResNet-50 1x1 layers):
    8x1 beats 2x7 on 7x7 outputs - each pass over the block's channels re-reads the input tile, so
    more rows per tile means fewer passes."""
    best = None
    for rt in _divisors(block_rows):
        if rt > MAX_TILE_ROWS:
            continue
        for hi in _divisors(out_h):
            for wm in _divisors(width_vectors):
                acc = rt * hi * wm
                if acc > TARGET_ACCUMULATORS:
                    continue
                key = (acc, -(rt + hi * wm), rt, wm)
                if best is None or key > best[0]:
                    best = (key, Knobs(rt, hi, wm))
    return best[1]


def _schedule_pack(sch: s_tir.Schedule, pack) -> None:
    loops = sch.get_loops(pack)
    sch.parallel(sch.fuse(*loops[:2]))


def _inline_epilogue(sch: s_tir.Schedule, block):
    """Reverse-inline the elementwise consumers of ``block``; a consumer's other injective inputs
    computed in the same function (a sliced residual, a broadcast bias) are inlined into it first."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return block
        mine = sch.get(block).name_hint
        for p in sch.get_producers(consumers[0]):
            if sch.get(p).name_hint != mine:
                try:
                    sch.compute_inline(p)
                except Exception:  # noqa: BLE001  not inlinable: the reverse inline below decides
                    pass
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001  not injective / several producers: stays a stage
            return block


def _write_back(sch: s_tir.Schedule, block):
    """cache_write the accumulators; fold the crop / transpose stage and the elementwise consumers
    into the write-back block; returns (write-back block, whether it is a plain copy)."""
    cw = sch.cache_write(block, 0, "local")
    consumers = sch.get_consumers(cw)
    plain = True
    if len(consumers) == 1 and sch.get(consumers[0]).name_hint.endswith(OUT_SUFFIX):
        sch.compute_inline(cw)
        cw = consumers[0]
        plain = False
    return _inline_epilogue(sch, cw), plain


def apply(sch: s_tir.Schedule, block, knobs: Knobs | None = None) -> None:
    R = int(sch.get(block).annotations["block_rows"])
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.endswith(PACK_SUFFIX):
            _schedule_pack(sch, p)
    loops = sch.get_loops(block)
    conv = len(loops) == 5
    if conv:
        n, k, h, w, j = loops
    else:
        n, k, w, j = loops
        h = None
    out_h = int(sch.get(h).extent) if conv else 1
    wvecs = int(sch.get(w).extent) // VECTOR
    knobs = knobs or default_knobs(R, out_h, wvecs)

    wb, plain = _write_back(sch, block)
    kb, kro, kri = sch.split(k, [None, R // knobs.rows, knobs.rows])
    wo, wm, wv = sch.split(w, [None, knobs.vectors, VECTOR])
    if conv:
        ho, hi = sch.split(h, [None, knobs.h_rows])
        if knobs.tiles_outer:
            sch.reorder(n, ho, wo, kb, kro, j, kri, hi, wm, wv)
            outer = sch.fuse(n, ho, wo, kb)
        else:
            sch.reorder(n, ho, kb, wo, kro, j, kri, hi, wm, wv)
            outer = sch.fuse(n, ho, kb)
        sch.unroll(hi)
    elif knobs.tiles_outer:
        sch.reorder(n, wo, kb, kro, j, kri, wm, wv)
        outer = sch.fuse(n, wo, kb)
    else:
        sch.reorder(n, kb, wo, kro, j, kri, wm, wv)
        outer = sch.fuse(n, kb)
    sch.parallel(outer)
    sch.reverse_compute_at(wb, kro)
    sch.unroll(kri)
    sch.unroll(wm)
    sch.vectorize(wv)
    sch.decompose_reduction(block, j)
    wb_loops = sch.get_loops(wb)
    last = wb_loops[-1]
    if plain and int(sch.get(last).extent) % VECTOR == 0:
        _, lane = sch.split(last, [None, VECTOR])
        sch.vectorize(lane)
    else:   # cropped (predicated) or transposed write-back: scalar, unrolled
        depth = 2 if knobs.tiles_outer else 3   # loops above the write-back: outer, [wo,] kro
        for loop in wb_loops[depth:]:
            sch.unroll(loop)


@register_schedule(CONV_BLOCK, "cpu")
def schedule_conv2d_1x1(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, knobs)


@register_schedule(DENSE_BLOCK, "cpu")
def schedule_dense(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, knobs)
