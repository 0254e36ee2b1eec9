"""block_dense_neon / block_conv2d_1x1_neon: aarch64 NEON (4 float lanes, 32 q-registers) schedules of
the block-punched computes (``tvm_patterns.computes.block_sparse``).

Loop nest of the main block after scheduling (conv; the linear layer has no h loops):

    parallel (n, h_outer, block)       -- cores split blocks of R output channels
      w_outer                          -- (order "tiles_outer": w_outer goes above the blocks)
        r_outer                        -- R rows of a block in register tiles of RT rows
          j < width                    -- kept input channels of the block: one index load
            r_inner (unrolled) x hi (unrolled) x wm (unrolled) x 4-lane vector
                                       -- RT*HI*WM ``fmla vN.4s, vX.4s, vW.s[0]`` per j
          write-back: crop / transpose + fused epilogue (bias, residual, relu) from the registers

The loop nest and design space are ``block_sparse_x86``'s (``apply``); what changes is the register file: 32 q-registers hold up to
24 accumulators (AVX2's 16 ymm: 12), the rest the RT weights and the WM*HI input vectors of one j.
The gathered row ``col_idx[block, j]`` costs one scalar load per RT*HI*WM FMAs.

The tiles (RT, HI, WM) and the unroll step of the loop under the parallel one are sampling
instructions: ``design_space`` leaves them to MetaSchedule, ``schedule`` fixes them to
``default_knobs`` (one point of the same space).
"""
from __future__ import annotations

from tvm import s_tir

from tvm_patterns.computes.block_sparse import CONV_BLOCK, DENSE_BLOCK

from . import block_sparse_x86 as x86
from .block_sparse_x86 import Knobs
from .registry import register_schedule

VECTOR = 4
MAX_ACCUMULATORS = 24   # of 32 q-registers; the rest hold the RT weights and the input vectors of one j
NEON = {"vector": VECTOR, "max_accumulators": MAX_ACCUMULATORS, "max_tile_rows": 8, "max_h_rows": 8,
        "max_vectors": 4}
ORDERS = x86.ORDERS


def default_knobs(block_rows: int, out_h: int, width_vectors: int) -> Knobs:
    """The most accumulators up to MAX_ACCUMULATORS; among equals the squarest tile (fewest loads +
    broadcasts per FMA), then the most rows of the block (fewer passes over the block's input rows)."""
    return x86.default_knobs(block_rows, out_h, width_vectors, **NEON)


def knobs_for(sch: s_tir.Schedule, block) -> Knobs:
    """``default_knobs`` of the block's shape."""
    return x86.knobs_for(sch, block, **NEON)


def apply(sch: s_tir.Schedule, block, order: str, knobs: Knobs | None = None) -> None:
    """``block_sparse_x86.apply`` with NEON's lanes and register budget."""
    x86.apply(sch, block, order, knobs, **NEON)


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """MetaSchedule design space of a PrimFunc holding a block-punched conv or linear layer: one
    schedule per loop order, tiles and unroll sampled. ``schedule`` is one point of it."""
    return x86.design_space(sch, target, **NEON)


@register_schedule(CONV_BLOCK, "arm_cpu")
@register_schedule(DENSE_BLOCK, "arm_cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    """The hand schedule: ``knobs`` (default: ``default_knobs`` of the shape) as decisions of the space."""
    knobs = knobs or knobs_for(sch, block)
    apply(sch, block, knobs.order, knobs)
