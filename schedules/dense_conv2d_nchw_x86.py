"""dense_conv2d_nchw_x86: the dense baseline, for TVM's legalized conv2d (blocks pad_temp, conv2d_nchw).

Register tile: KI output channels x WM vectors of one output row, so each input vector load
feeds KI FMAs; the (rc, ry, rx) reduction runs outside the tile. Where the conv reads its padded
input with stride 2 along the width, the padded rows are stored deinterleaved (even columns, then
odd ones), so a tap's inputs for consecutive outputs are consecutive (vector loads, not gathers).
Used for dense layers in every build, so dense-vs-sparse comparisons share it.
"""
from __future__ import annotations

from tvm import s_tir, sym

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


def width_stride(sch: s_tir.Schedule, block, buffer) -> int | None:
    """The conv's stride along the width of ``buffer`` (its input), from the block's read index."""
    w_var = sch.get(block).iter_vars[3].var
    for region in sch.get(block).reads:
        if region.source.same_as(buffer):
            coef = sym.detect_linear_equation(region.region[-1].min, [w_var])
            return int(coef[0]) if coef else None
    return None


def deinterleave_rows(sch: s_tir.Schedule, block, pad) -> None:
    """Store the padded rows of a stride-2 conv as their even columns, then their odd ones."""
    buffer = sch.get(pad).writes[0].source
    width = int(buffer.shape[-1])
    if width_stride(sch, block, buffer) == 2 and width % 2 == 0:
        sch.transform_layout(pad, ("write", 0), lambda n, c, y, x: (n, c, y, x % 2, x // 2))


def apply(sch: s_tir.Schedule, block, knobs: dict | None = None) -> None:
    """``knobs`` {"ki", "wm", "unroll"}: the fixed decisions; None leaves them to the tuner (sampled)."""
    knobs = knobs or {}
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith("pad_temp"):
            deinterleave_rows(sch, block, p)
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
