"""dense_conv2d_nchw_x86: the dense baseline, for TVM's legalized conv2d (blocks pad_temp, conv2d_nchw).

Register tile: KI output channels x WM vectors of one output row, so each input vector load
feeds KI FMAs; the (rc, ry, rx) reduction runs outside the tile. Used for dense layers in every
build, so dense-vs-sparse comparisons share it.
"""
from __future__ import annotations

from tvm import s_tir

from .pattern_conv2d_nchw_x86 import inline_epilogue
from .registry import register_schedule

KI = 4            # output channels per tile
MAX_VECTORS = 3   # vectors per tile row (KI * WM accumulators <= 12)


def _vector_lanes(width: int) -> int:
    for lanes in (8, 4, 2):
        if width % lanes == 0:
            return lanes
    return 1


@register_schedule("conv2d_nchw", "cpu")
def schedule(sch: s_tir.Schedule, block, target) -> None:
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith("pad_temp"):
            loops = sch.get_loops(p)
            sch.parallel(sch.fuse(*loops[:2]))
    n, k, h, w, rc, ry, rx = sch.get_loops(block)
    K, W = int(sch.get(k).extent), int(sch.get(w).extent)
    ki = KI if K % KI == 0 else 1
    lanes = _vector_lanes(W)
    wm = max(d for d in range(1, MAX_VECTORS + 1) if (W // lanes) % d == 0)
    cw = sch.cache_write(block, 0, "local")
    wb = inline_epilogue(sch, cw)
    ko, kin = sch.split(k, [None, ki])
    wo, wmm, wv = sch.split(w, [None, wm, lanes])
    sch.reorder(n, ko, h, wo, rc, ry, rx, kin, wmm, wv)
    sch.parallel(sch.fuse(n, ko, h))
    sch.reverse_compute_at(wb, wo)
    sch.unroll(ry)
    sch.unroll(rx)
    sch.unroll(kin)
    sch.unroll(wmm)
    if lanes > 1:
        sch.vectorize(wv)
    sch.decompose_reduction(block, rc)
