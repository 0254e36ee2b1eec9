"""pattern_conv2d_by_pattern_neon: aarch64 NEON schedule of the per-pattern pattern conv.

The per-pattern nest of the host schedule (``pattern_conv2d_by_pattern_x86.apply``: one kernel loop
per pattern, tap offsets constants, the taps of a pattern that read one input line for several
output rows sharing its load) with NEON's 4 lanes and 24 accumulators; the default tile is the
offset-table NEON schedule's. A build uses it only when asked (``implementation="patterns"``): no
ARM core has timed it against the offset-table kernel here (the emulated device runs under qemu,
whose times are not ARM times), so ``auto`` keeps the offset tables on ARM.
"""
from __future__ import annotations

from tvm import s_tir

from tvm_patterns.computes.pattern_conv2d import BY_PATTERN_BLOCK

from . import pattern_conv2d_by_pattern_x86 as by_pattern
from . import pattern_conv2d_nchw_neon as neon
from .pattern_conv2d_nchw_x86 import Knobs
from .registry import register_schedule

ORDER = "kernels_outer"   # the host's default order; the other is not in this space until timed on an ARM core


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """Tile and unroll sampled (one vector width); ``schedule`` is one point of it."""
    by_pattern.apply(sch, sch.get_sblock(BY_PATTERN_BLOCK), ORDER, **neon.NEON)
    return [sch]


@register_schedule(BY_PATTERN_BLOCK, "arm_cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    n, k, h, w, *_ = sch.get_loops(block)
    knobs = knobs or neon.default_knobs(int(sch.get(h).extent), int(sch.get(w).extent))
    by_pattern.apply(sch, block, ORDER, knobs, **neon.NEON)
