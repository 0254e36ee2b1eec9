"""dense_conv2d_nchw_x86: the dense baseline, for TVM's legalized conv2d (blocks pad_temp, conv2d_nchw).

Register tile: KI output channels x WM vectors of one output row, so each input vector load
feeds KI FMAs; the (rc, ry, rx) reduction runs outside the tile. Used for dense layers in every
build, so dense-vs-sparse comparisons share it.
"""
from __future__ import annotations

from tvm import s_tir

from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, perfect_tile, unroll_knob, inline_epilogue
from .registry import register_schedule

KI = 4            # output channels per tile
MAX_VECTORS = 3   # vectors per tile row (KI * WM accumulators <= 12)
MAX_KI = 16       # the tuner may try up to this many channels per tile
MAIN_BLOCK = "conv2d_nchw"


def _vector_lanes(width: int) -> int:
    for lanes in (8, 4, 2):
        if width % lanes == 0:
            return lanes
    return 1


def default_knobs(K: int, W: int) -> dict:
    lanes = _vector_lanes(W)
    return {"ki": KI if K % KI == 0 else 1,
            "wm": max(d for d in range(1, MAX_VECTORS + 1) if (W // lanes) % d == 0), "unroll": 0}


def apply(sch: s_tir.Schedule, block, knobs: dict | None = None) -> None:
    """``knobs`` {"ki", "wm", "unroll"}: the fixed decisions; None leaves them to the tuner (sampled)."""
    knobs = knobs or {}
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith("pad_temp"):
            loops = sch.get_loops(p)
            sch.parallel(sch.fuse(*loops[:2]))
    n, k, h, w, rc, ry, rx = sch.get_loops(block)
    lanes = _vector_lanes(int(sch.get(w).extent))
    cw = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    wb = inline_epilogue(sch, cw)
    ko, kin = perfect_tile(sch, k, knobs.get("ki"), MAX_KI)
    w_, wv = sch.split(w, [None, lanes])
    wo, wmm = perfect_tile(sch, w_, knobs.get("wm"), MAX_VECTORS + 1)
    sch.reorder(n, ko, h, wo, rc, ry, rx, kin, wmm, wv)
    sch.parallel(sch.fuse(n, ko, h))
    sch.reverse_compute_at(wb, wo)
    sch.unroll(ry)
    sch.unroll(rx)
    sch.unroll(kin)
    sch.unroll(wmm)
    if lanes > 1:
        sch.vectorize(wv)
    unroll_knob(sch, rc, knobs.get("unroll"))
    sch.decompose_reduction(block, rc)


def design_space(sch: s_tir.Schedule, target=None) -> s_tir.Schedule:
    """MetaSchedule design space of a PrimFunc holding a legalized conv2d: channel tile, vectors per
    row and unroll sampled; ``schedule`` (the default knobs) is one point of it."""
    apply(sch, sch.get_sblock(MAIN_BLOCK))
    return sch


@register_schedule(MAIN_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: dict | None = None) -> None:
    _, k, _, w, *_ = sch.get_loops(block)
    apply(sch, block, knobs or default_knobs(int(sch.get(k).extent), int(sch.get(w).extent)))
