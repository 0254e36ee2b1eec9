"""block_dense_x86 / block_conv2d_1x1_x86: host CPU (AVX2, 8 float lanes; AVX-512 1x1 convs: 16 where
the rows allow, ``isa_params``) schedules of the block-punched computes
(``tvm_patterns.computes.block_sparse``).

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
scalar load per RT*HI*WM vector FMAs; tiles of 8..12 accumulators hide the FMA latency
(docs/design.md#block-sparse-tile).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from tvm_patterns.computes.block_sparse import CONV_BLOCK, DENSE_BLOCK, MAIN_BLOCKS, OUT_SUFFIX, PACK_SUFFIX

from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, isa_of, one_space_per_order, perfect_tile, unroll_knob
from .registry import register_schedule

VECTOR = 8
TARGET_ACCUMULATORS = 12   # of AVX2's 16 ymm registers: the rest hold the broadcast and the loads
MAX_TILE_ROWS = 8
# The ISA parameters of ``apply`` / ``design_space`` / ``default_knobs`` (block_sparse_neon passes its own).
AVX2 = {"vector": VECTOR, "max_accumulators": TARGET_ACCUMULATORS, "max_tile_rows": MAX_TILE_ROWS,
        "max_h_rows": TARGET_ACCUMULATORS, "max_vectors": TARGET_ACCUMULATORS}

# Loop orders (one design space each: the tuner replays traces, so an order is not a sampled value):
#   tiles_inner  (n, ho, block) | w_outer | r_outer | j | tile   -- a block's weights stay in L1
#   tiles_outer  (n, ho, w_outer, block) | r_outer | j | tile   -- the input tile stays in L1 across blocks
ORDERS = ("tiles_inner", "tiles_outer")


@dataclass(frozen=True)
class Knobs:
    rows: int        # RT: output channels per register tile (divides R)
    h_rows: int      # HI: output rows per register tile (conv; divides Ho); 1 for linear
    vectors: int     # WM: vectors along w / tokens per register tile row
    tiles_outer: bool = False  # w / token tiles outside the blocks (input tile reused across blocks);
                               # a knob, no better default (docs/design.md#block-sparse-tile)
    unroll: int = 0  # pragma_auto_unroll_max_step of the loop under the parallel one (UNROLL_STEPS)

    @property
    def order(self) -> str:
        return "tiles_outer" if self.tiles_outer else "tiles_inner"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_knobs(block_rows: int, out_h: int, width_vectors: int, *, max_accumulators: int = TARGET_ACCUMULATORS,
                  max_tile_rows: int = MAX_TILE_ROWS, max_h_rows: int = TARGET_ACCUMULATORS,
                  max_vectors: int = TARGET_ACCUMULATORS, **_) -> Knobs:
    """The most accumulators up to ``max_accumulators``; among equals the squarest tile (fewest
    loads + broadcasts per FMA), then the most rows of the block: each pass over the block's channels
    re-reads the input tile, so more rows per tile means fewer passes (docs/design.md#block-sparse-tile)."""
    best = None
    for rt in (d for d in _divisors(block_rows) if d <= max_tile_rows):
        for hi in (d for d in _divisors(out_h) if d <= max_h_rows):
            for wm in (d for d in _divisors(width_vectors) if d <= max_vectors):
                acc = rt * hi * wm
                if acc > max_accumulators:
                    continue
                key = (acc, -(rt + hi * wm), rt, wm)
                if best is None or key > best[0]:
                    best = (key, Knobs(rt, hi, wm))
    return best[1]


def knobs_for(sch: s_tir.Schedule, block, **isa) -> Knobs:
    """``default_knobs`` of the block's shape."""
    isa = {**AVX2, **isa}
    loops = sch.get_loops(block)
    out_h = int(sch.get(loops[2]).extent) if len(loops) == 5 else 1
    return default_knobs(int(sch.get(block).annotations["block_rows"]), out_h,
                         int(sch.get(loops[-2]).extent) // isa["vector"], **isa)


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


def write_back(sch: s_tir.Schedule, block, scope: str = ACCUMULATOR_SCOPE):
    """cache_write the accumulators (in ``scope``); fold the crop / transpose stage and the elementwise
    consumers into the write-back block; returns (write-back block, whether it is a plain copy)."""
    cw = sch.cache_write(block, 0, scope)
    consumers = sch.get_consumers(cw)
    plain = True
    if len(consumers) == 1 and sch.get(consumers[0]).name_hint.endswith(OUT_SUFFIX):
        sch.compute_inline(cw)
        cw = consumers[0]
        plain = False
    return _inline_epilogue(sch, cw), plain


def block_loops(sch: s_tir.Schedule, block, lanes: int):
    """(is a conv, (n, k, h, w, j)) of a block-punched main block (h None for a linear layer); the
    padded width must hold whole vectors of ``lanes``."""
    loops = sch.get_loops(block)
    conv = len(loops) == 5
    n, k, h, w, j = loops if conv else (loops[0], loops[1], None, loops[2], loops[3])
    if int(sch.get(w).extent) % lanes:
        raise NotImplementedError(f"padded width {sch.get(w).extent} is not a multiple of {lanes} lanes")
    return conv, (n, k, h, w, j)


def apply(sch: s_tir.Schedule, block, order: str, knobs: Knobs | None = None, **isa) -> None:
    """The schedule of one loop order; ``knobs`` None samples the tiles and the unroll step,
    otherwise they are the fixed decisions of the same sampling instructions. ``isa``: ``AVX2``'s
    keys (vector lanes, tile limits) for another vector ISA."""
    if order not in ORDERS:
        raise ValueError(f"unknown loop order {order!r}; one of {ORDERS}")
    isa = {**AVX2, **isa}
    vector = isa["vector"]
    tiles_outer = order == "tiles_outer"
    R = int(sch.get(block).annotations["block_rows"])
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.endswith(PACK_SUFFIX):
            _schedule_pack(sch, p)
    conv, (n, k, h, w, j) = block_loops(sch, block, vector)

    wb, plain = write_back(sch, block)
    kb, kr = sch.split(k, [None, R])
    kro, kri = perfect_tile(sch, kr, knobs and knobs.rows, isa["max_tile_rows"])
    w_, wv = sch.split(w, [None, vector])
    wo, wm = perfect_tile(sch, w_, knobs and knobs.vectors, isa["max_vectors"])
    if conv:
        ho, hi = perfect_tile(sch, h, knobs and knobs.h_rows, isa["max_h_rows"])
        if tiles_outer:
            sch.reorder(n, ho, wo, kb, kro, j, kri, hi, wm, wv)
            outer = sch.fuse(n, ho, wo, kb)
        else:
            sch.reorder(n, ho, kb, wo, kro, j, kri, hi, wm, wv)
            outer = sch.fuse(n, ho, kb)
        sch.unroll(hi)
    elif tiles_outer:
        sch.reorder(n, wo, kb, kro, j, kri, wm, wv)
        outer = sch.fuse(n, wo, kb)
    else:
        sch.reorder(n, kb, wo, kro, j, kri, wm, wv)
        outer = sch.fuse(n, kb)
    sch.parallel(outer)
    # Unit loops are kept so that the write-back's loop count does not depend on the sampled tiles
    # (a trace must replay with any decisions).
    sch.reverse_compute_at(wb, kro, preserve_unit_loops=True)
    sch.unroll(kri)
    sch.unroll(wm)
    sch.vectorize(wv)
    unroll_knob(sch, kro if tiles_outer else wo, knobs and knobs.unroll)
    sch.decompose_reduction(block, j)
    wb_loops = sch.get_loops(wb)
    if plain:   # [RT, HI, WM * lanes] straight to the output: vector stores
        _, lane = sch.split(wb_loops[-1], [None, vector])
        sch.vectorize(lane)
    else:       # cropped (predicated) or transposed write-back: scalar, unrolled
        for loop in wb_loops[2 if tiles_outer else 3:]:   # loops above it: outer, [w_outer,] r_outer
            sch.unroll(loop)


def design_space(sch: s_tir.Schedule, target=None, **isa) -> list[s_tir.Schedule]:
    """MetaSchedule design space of a PrimFunc holding a block-punched conv or linear layer: one
    schedule per loop order, tiles and unroll sampled (``isa``: another ISA's keys, else the target's,
    ``isa_params``). ``schedule`` is one point of it."""
    name = next(sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
                if sch.get(b).name_hint in MAIN_BLOCKS)
    isa = isa or isa_params(sch, sch.get_sblock(name), target)
    return one_space_per_order(sch, name, ORDERS, apply, **isa)


# Rows of one (column-combined weights) on a CPU with 32 vector registers: tiles of up to 28 accumulators
# (docs/design.md#column-combine).
ROWS_OF_ONE_AVX512 = {"max_accumulators": 28, "max_h_rows": 28, "max_vectors": 28}
# Blocks of rows of a 1x1 conv on a CPU with 32 vector registers: tiles of up to 24 accumulators (the
# rest hold a tile's input vectors and broadcasts), 16-lane vectors where the rows (padded to 8 lanes by
# the compute) hold whole ones (docs/design.md#block-sparse-avx512).
BLOCKS_AVX512 = {"max_accumulators": 24, "max_h_rows": 24, "max_vectors": 24}


def isa_params(sch: s_tir.Schedule, block, target) -> dict:
    """``apply``'s ISA keys for the block's shape on ``target``: AVX2's, or on AVX-512 the wider tiles
    above for 1x1 convs whose rows hold whole 16-lane vectors or one 8-lane one (a linear layer keeps
    AVX2's)."""
    if isa_of(target).registers < 32:
        return {}
    if int(sch.get(block).annotations["block_rows"]) == 1:
        return ROWS_OF_ONE_AVX512
    if sch.get(block).name_hint != CONV_BLOCK:
        return {}
    width = int(sch.get(sch.get_loops(block)[-2]).extent)
    if width % 16 == 0:
        return {**BLOCKS_AVX512, "vector": 16}
    return BLOCKS_AVX512 if width == VECTOR else {}   # rows of several ymm (56): AVX2's tiles measured as fast


@register_schedule(CONV_BLOCK, "cpu")
@register_schedule(DENSE_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    """The hand schedule: ``knobs`` (default: ``default_knobs`` of the shape) as decisions of the space."""
    isa = isa_params(sch, block, target)
    knobs = knobs or knobs_for(sch, block, **isa)
    apply(sch, block, knobs.order, knobs, **isa)
