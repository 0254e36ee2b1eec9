"""filter_block_pattern_conv2d_nchw_x86: host CPU (AVX2 / AVX-512) schedule of the filter-block pattern conv.

Loop nest of the main block after scheduling:

    parallel (n, h_outer, block)      -- a block of F filters sharing kernels and patterns
      w_outer
        j < max_len                   -- the block's kernels
          t < taps   (unrolled)       -- one offset per tap, F broadcast weights (value[b, j, t, :])
            hi x wm (unrolled)        -- one input vector loaded ...
              f < F (unrolled)        -- ... feeds F FMAs, one per filter of the block
                wv (8 / 16 lanes)
      write-back: crop + fused epilogue (bias, residual add, relu) from the F*HI*WM accumulators

The free pattern kernel loads an input vector per FMA; here one load serves F FMAs, so the kernel
leaves the load ports for the FMA units (issue 33).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx

from tvm_patterns.computes.pattern_conv2d import FILTER_BLOCK_BLOCK

from . import pattern_conv2d_nchw_x86 as x86
from .registry import register_schedule


# Tap overhead of a register tile, in FMAs: per tap the tile also loads an offset and F weights
# (docs/design.md#filter-block-tile).
TAP_OVERHEAD = 4


@dataclass(frozen=True)
class Knobs:
    rows: int         # output rows per register tile (HI); divides the computed output height
    vectors: int = 1  # vectors per tile row (WM); divides the padded output width / lanes
    lanes: int = x86.VECTOR


def fits(filters: int, rows: int, vectors: int, lanes: int, registers: int, weight_registers: int) -> bool:
    """Whether F*HI*WM accumulators fit the registers beside the weights and a row of input vectors,
    and the stack size kept for register tiles (``passes.register_tiles``)."""
    acc = filters * rows * vectors
    return acc * lanes * 4 <= x86.REGISTER_TILE_BYTES and acc + weight_registers + vectors <= registers


def register_tile(filters: int, lanes: int, registers: int, out_h: int, row_vectors: int,
                  weight_registers: int | None = None) -> tuple[int, int]:
    """(HI rows, WM vectors) of the register tile: the fewest padded output rows (the compute rounds
    the height up to whole tiles) per FMA plus tap overhead, ties to the wider tile."""
    weights = filters if weight_registers is None else weight_registers
    best = None
    for vectors in (v for v in range(1, row_vectors + 1) if row_vectors % v == 0):
        rows = 1
        while rows <= out_h and fits(filters, rows, vectors, lanes, registers, weights):
            acc = filters * rows * vectors
            cost = -(-out_h // rows) * rows * (1 + TAP_OVERHEAD / acc)
            if best is None or (cost, -vectors) < best[0]:
                best = ((cost, -vectors), (rows, vectors))
            rows += 1
    return best[1] if best else (1, 1)


def tile_vectors(filters: int, rows: int, lanes: int, registers: int, row_vectors: int,
                 weight_registers: int | None = None) -> int:
    """The most vectors a tile row of ``rows`` rows takes (what ``register_tile`` chose for them)."""
    weights = filters if weight_registers is None else weight_registers
    return max(v for v in range(1, row_vectors + 1)
               if row_vectors % v == 0 and (v == 1 or fits(filters, rows, v, lanes, registers, weights)))


def filters_of(sch: s_tir.Schedule, block) -> int:
    return int(sch.get(block).annotations["filters"])


def rows_of(sch: s_tir.Schedule, block) -> int:
    return int(sch.get(block).annotations["rows"])


def weight_vector(sch: s_tir.Schedule, block, t) -> None:
    """Load the F weights a tap has for the block (``value[b, j, t, :]``) as one vector at ``t``:
    NEON multiplies by a lane of it (``fmla ... v.s[f]``), one register for the block's weights."""
    reads = [r.source for r in sch.get(block).reads]
    index = next(i for i, b in enumerate(reads) if len(b.shape) == 4)
    cache = sch.cache_read(block, index, "local")
    sch.compute_at(cache, t)
    sch.vectorize(sch.get_loops(cache)[-1])


def apply(sch: s_tir.Schedule, block, knobs: Knobs, vector_weights: bool = False) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    filters = filters_of(sch, block)
    wb = x86.split_pattern_stages(sch, block)
    kb, f = sch.split(k, [None, filters])
    ho, hi = sch.split(h, [None, knobs.rows])
    w_, wv = sch.split(w, [None, knobs.lanes])
    wo, wm = sch.split(w_, [None, knobs.vectors])
    sch.reorder(n, ho, kb, wo, j, t, hi, wm, f, wv)
    outer = sch.fuse(n, ho, kb)
    sch.parallel(outer)
    sch.reverse_compute_at(wb, wo, preserve_unit_loops=True)
    for loop in (t, hi, wm, f):
        sch.unroll(loop)
    if vector_weights:
        weight_vector(sch, block, t)
    sch.vectorize(wv)
    sch.decompose_reduction(block, j)
    x86.vectorize_write_back(sch, wb, knobs.lanes)
    unroll_write_back(sch, wb, wo)


def unroll_write_back(sch: s_tir.Schedule, wb, above) -> None:
    """Unroll the write-back's loops under ``above`` but its vector lanes: with every access to the
    accumulator tile at a constant index, LLVM keeps the tile in registers across the kernel loop
    (a loop indexing it at run time keeps it in memory: a load and a store per FMA)."""
    loops = [sch.get(l) for l in sch.get_loops(wb)]
    at = next(i for i, l in enumerate(loops) if l.same_as(sch.get(above)))
    for loop, stmt in zip(sch.get_loops(wb)[at + 1:], loops[at + 1:]):
        if stmt.kind != tirx.ForKind.VECTORIZED:
            sch.unroll(loop)


def default_knobs(sch: s_tir.Schedule, block, lanes: int, registers: int,
                  weight_registers: int | None = None) -> Knobs:
    """The tile the pass sized the compute for: its rows (the block's annotation) and the vectors
    ``register_tile`` chose beside them."""
    width = int(sch.get(sch.get_loops(block)[3]).extent)
    rows = rows_of(sch, block)
    return Knobs(rows=rows, lanes=lanes, vectors=tile_vectors(filters_of(sch, block), rows, lanes, registers,
                                                              width // lanes, weight_registers))


@register_schedule(FILTER_BLOCK_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    isa = x86.isa_of(target)
    width = int(sch.get(sch.get_loops(block)[3]).extent)
    apply(sch, block, knobs or default_knobs(sch, block, x86.usable_lanes(width, isa)[-1], isa.registers))
