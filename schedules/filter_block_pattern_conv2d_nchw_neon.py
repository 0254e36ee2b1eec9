"""filter_block_pattern_conv2d_nchw_neon: aarch64 NEON schedule of the filter-block pattern conv.

The x86 loop nest (``filter_block_pattern_conv2d_nchw_x86``) with 4-lane vectors: the four weights a
tap has for a block of four filters are one q-register (``value[b, j, t, 0:4]``), so each loaded
input vector feeds ``fmla vA.4s, vIn.4s, vW.s[f]`` for f = 0..3: one load per four FMAs. 32
q-registers leave room for 4 x 7 accumulators beside the weights and one input vector.
"""
from __future__ import annotations

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import FILTER_BLOCK_BLOCK

from . import filter_block_pattern_conv2d_nchw_x86 as fb_x86
from .registry import register_schedule

VECTOR = 4
REGISTERS = 32


def weight_registers(filters: int) -> int:
    return -(-filters // VECTOR)   # the block's weights: one q-register for four filters


def register_tile(filters: int, out_h: int, row_vectors: int) -> tuple[int, int]:
    return fb_x86.register_tile(filters, VECTOR, REGISTERS, out_h, row_vectors, weight_registers(filters))


@register_schedule(FILTER_BLOCK_BLOCK, "arm_cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: fb_x86.Knobs | None = None) -> None:
    knobs = knobs or fb_x86.default_knobs(sch, block, VECTOR, REGISTERS,
                                          weight_registers(fb_x86.filters_of(sch, block)))
    fb_x86.apply(sch, block, knobs, vector_weights=True)
