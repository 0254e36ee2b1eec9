"""pattern_conv2d_by_pattern_x86: host CPU schedule of the per-pattern pattern conv.

Loop nest of the main block after scheduling (the default order, ``kernels_outer``):

    parallel (n, h_outer, k)
      p < patterns   (unrolled)       -- one copy of the kernel loop per pattern: its taps are constants
        j < max_len_p                 -- the filter's kernels of pattern p (stops at length[k, p])
          w_outer
            t < taps (unrolled) x hi (unrolled) x wm (unrolled) x wv (8- or 16-lane vector)
      write-back: crop + fused epilogue from the row tile

Within one pattern, the taps that read the same input line for different output rows of the tile
are one load, so a tile of R rows makes 2 R + 2 to 3 R + 1 vector loads per kernel (by pattern)
instead of 4 R.
Tiles, unroll, vector width and loop order (ORDERS) are the design space (one schedule per usable
vector width and order); ``default_knobs`` is the offset-table kernel's default, one point of it.
"""
from __future__ import annotations

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import BY_PATTERN_BLOCK

from . import pattern_conv2d_nchw_x86 as x86
from .registry import register_schedule

# Per-pattern code pays where a padded row holds one vector (the row block's accumulators stay in
# registers over all kernels) or this many and more; at two the offset tables are faster with the
# default tile (docs/design.md#per-pattern-code).
MIN_VECTORS_PER_ROW = 4
# ... except for two zmm vectors (AVX-512's 28-wide layers): there a tile of the whole row width
# (WHOLE_ROW_ACCUMULATORS of them: 4 rows, 2 where stride 2 reads twice the input rows) keeps its
# accumulators in registers over all of the filter's kernels (kernels_inner), which the offset
# tables' default tile does not (docs/design.md#per-pattern-two-vectors).
WHOLE_ROW_VECTORS = 2
WHOLE_ROW_ACCUMULATORS = 8

# Loop orders (the offset-table schedule's names for the same places of the width tile):
#   kernels_outer  (n, ho, k) | p | j | wo | t hi wm wv   -- the default: a kernel's weights and input
#                  lines are loaded once for the whole row block; the block's accumulators live in memory
#   kernels_inner  (n, ho, k) | wo | p | j | t hi wm wv   -- one width tile's accumulators stay in
#                  registers over all of the filter's kernels (written back per width tile)
#   channels_blocked (n, ho, kb) | jo | ki | p | ji | wo | t hi wm wv
#                  -- a block of filters walks each pattern's kernel list in chunks (the offset-table
#                  order of the same name): the lists are in channel order, so chunk jo reads about
#                  the same slice of the input rows for every filter of the block, and that slice
#                  stays in L2 while the block uses it
# The two other orders win on some layers and machines only: knobs for the tuner, not defaults
# (docs/design.md#per-pattern-orders).
ORDERS = ("kernels_outer", "kernels_inner", "channels_blocked")


def whole_row_tile(out_w_padded: int, isa: x86.Isa) -> bool:
    """A padded row of WHOLE_ROW_VECTORS 16-lane vectors: its default tile is the whole row."""
    lanes = x86.usable_lanes(out_w_padded, isa)[-1]
    return lanes > x86.VECTOR and out_w_padded == WHOLE_ROW_VECTORS * lanes


def preferred(out_w_padded: int, target) -> bool:
    """Whether the build uses this implementation by default: on x86 where a padded output row
    holds one of the widest usable vectors or at least MIN_VECTORS_PER_ROW of them, or two zmm ones."""
    if not x86.is_x86(target):
        return False
    isa = x86.isa_of(target)
    lanes = x86.usable_lanes(out_w_padded, isa)[-1]
    return (out_w_padded == lanes or out_w_padded // lanes >= MIN_VECTORS_PER_ROW
            or whole_row_tile(out_w_padded, isa))


def default_knobs(out_h: int, out_w_padded: int, isa: x86.Isa, stride: int = 1) -> x86.Knobs:
    """The offset-table kernel's default tile, or on a row of two zmm vectors the whole row x the
    most rows up to WHOLE_ROW_ACCUMULATORS / 2 / ``stride`` (the conv's stride down), kernels inner."""
    if not whole_row_tile(out_w_padded, isa):
        return x86.default_knobs(out_h, out_w_padded, isa)
    limit = max(1, WHOLE_ROW_ACCUMULATORS // WHOLE_ROW_VECTORS // stride)
    rows = max(d for d in range(1, limit + 1) if out_h % d == 0)
    return x86.Knobs(rows=rows, vectors=WHOLE_ROW_VECTORS, order="kernels_inner", lanes=x86.usable_lanes(out_w_padded, isa)[-1])


def apply(sch: s_tir.Schedule, block, order: str, knobs: x86.Knobs | None = None, *,
          vector: int = x86.VECTOR, max_accumulators: int = x86.MAX_ACCUMULATORS) -> None:
    """The nest of one loop order (ORDERS); ``knobs`` None samples rows, vectors and unroll (and for
    channels_blocked filter blocks and chunks), otherwise they are the fixed decisions of the same
    instructions (``knobs.order`` is not read: ``order`` is)."""
    if knobs is not None and knobs.lanes != vector:
        raise ValueError(f"knobs of {knobs.lanes} lanes for a {vector}-lane schedule: {knobs}")
    if order not in ORDERS:
        raise ValueError(f"unknown loop order {order!r} of the per-pattern kernel; one of {ORDERS}")
    n, k, h, w, p, j, t = sch.get_loops(block)
    wb = x86.split_pattern_stages(sch, block)
    ho, hi = x86.perfect_tile(sch, h, knobs and knobs.rows, max_accumulators)
    w_, wv = sch.split(w, [None, vector])
    wo, wm = x86.perfect_tile(sch, w_, knobs and knobs.vectors, x86.MAX_VECTORS)
    first = p                 # the outermost reduction loop
    if order == "kernels_outer":
        sch.reorder(n, ho, k, p, j, wo, t, hi, wm, wv)
        outer = sch.fuse(n, ho, k)
    elif order == "kernels_inner":
        sch.reorder(n, ho, k, wo, p, j, t, hi, wm, wv)
        outer = sch.fuse(n, ho, k)
    else:
        kb, ki, first, j = x86.channel_blocks(sch, k, j, knobs)
        sch.reorder(n, ho, kb, first, ki, p, j, wo, t, hi, wm, wv)
        outer = sch.fuse(n, ho, kb)
    sch.reverse_compute_at(wb, wo if order == "kernels_inner" else outer, preserve_unit_loops=True)
    sch.parallel(outer)
    for loop in (p, t, hi, wm):
        sch.unroll(loop)
    sch.vectorize(wv)
    x86.unroll_knob(sch, j, knobs and knobs.unroll)
    sch.decompose_reduction(block, first)
    x86.vectorize_write_back(sch, wb, vector)


def space_points(sch: s_tir.Schedule, target=None) -> list[tuple[int, str]]:
    """(lanes, loop order) of each schedule ``design_space`` returns, in its order."""
    lanes = x86.usable_lanes(x86.padded_width(sch, BY_PATTERN_BLOCK), x86.isa_of(target))
    return [(v, order) for v in lanes for order in ORDERS]


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """One schedule per usable vector width and loop order (``space_points``), tile and unroll
    sampled; the default is one point."""
    isa = x86.isa_of(target)
    return [space for lanes in x86.usable_lanes(x86.padded_width(sch, BY_PATTERN_BLOCK), isa)
            for space in x86.one_space_per_order(sch, BY_PATTERN_BLOCK, ORDERS, apply, vector=lanes,
                                                 max_accumulators=isa.max_accumulators)]


@register_schedule(BY_PATTERN_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: x86.Knobs | None = None) -> None:
    n, k, h, w, *_ = sch.get_loops(block)
    isa = x86.isa_of(target)
    knobs = knobs or default_knobs(int(sch.get(h).extent), int(sch.get(w).extent), isa,
                                  x86.row_stride(sch, block))
    apply(sch, block, knobs.order, knobs, vector=knobs.lanes, max_accumulators=isa.max_accumulators)
