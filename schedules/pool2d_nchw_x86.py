"""pool2d_nchw_x86: host CPU schedule of TVM's legalized 2-D pooling (max and average), NCHW.

Loop nest after scheduling (the padding stage is inlined into the window reads):

    parallel (n, c, h)
      w_outer
        window rows x window columns (unrolled)
          w_inner (vector)            -- a tile of output columns, the accumulator of each in a register
      write-back: epilogue (the average's division) from the tile

The generic fallback ran ResNet-18's 3x3/2 max pool scalar, 1.6 ms of an 11.6 ms network on Zen5.
Knob: the width of the column tile (a perfect tile of the output width, 32 at most).
"""
from __future__ import annotations

from tvm import s_tir

from .pattern_conv2d_nchw_x86 import inline_epilogue, perfect_tile
from .registry import register_schedule

POOL_BLOCKS = ("pool_max", "pool_sum")   # topi's 2-D pooling reductions (average: pool_sum, then a division)
MAX_TILE = 32
TILE = 16


def default_tile(out_w: int) -> int:
    """The largest divisor of the output width up to ``TILE`` columns (one zmm vector or two ymm)."""
    return max(d for d in range(1, TILE + 1) if out_w % d == 0)


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


def apply(sch: s_tir.Schedule, block, tile: int | None = None) -> None:
    """The nest above; ``tile`` None samples the column tile."""
    loops = sch.get_loops(block)
    if len(loops) != 6:
        raise NotImplementedError(f"pooling with {len(loops)} loops (only NCHW 2-D windows have a schedule)")
    n, c, h, w, r0, r1 = loops
    inline_producers(sch, block)
    cw = sch.cache_write(block, 0, "local")
    wb = inline_epilogue(sch, cw)
    wo, wi = perfect_tile(sch, w, tile, MAX_TILE)
    sch.reorder(n, c, h, wo, r0, r1, wi)
    outer = sch.fuse(n, c, h)
    sch.parallel(outer)
    sch.reverse_compute_at(wb, wo, preserve_unit_loops=True)
    sch.unroll(r0)
    sch.unroll(r1)
    sch.vectorize(wi)
    sch.decompose_reduction(block, r0)
    sch.vectorize(sch.get_loops(wb)[-1])


def _pool_block(sch: s_tir.Schedule):
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(b).name_hint in POOL_BLOCKS:
            return b
    raise NotImplementedError("no pooling block")


def design_space(sch: s_tir.Schedule, target=None) -> s_tir.Schedule:
    """MetaSchedule design space of a pooling PrimFunc: the column tile sampled; ``schedule`` is one point."""
    apply(sch, _pool_block(sch))
    return sch


def _schedule(sch: s_tir.Schedule, block, target) -> None:
    try:
        apply(sch, block, default_tile(int(sch.get(sch.get_loops(block)[3]).extent)))
    except NotImplementedError:
        from .generic_x86 import schedule as generic
        generic(sch, block, target)


for _name in POOL_BLOCKS:
    register_schedule(_name, "cpu")(_schedule)
