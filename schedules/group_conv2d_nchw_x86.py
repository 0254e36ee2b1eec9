"""group_conv2d_nchw_x86: TVM's legalized grouped and depthwise conv2d (blocks pad_temp,
group_conv2d_nchw), left dense. The loop nest is the dense conv's (n, k, h, w, rc, ry, rx), so the
dense conv's row-vector register tile serves: KI output channels x WM vectors of one output row,
the padded rows of a stride-2 conv deinterleaved; for a depthwise conv rc is 1 and the 3x3 taps
unrolled around the tile. Without it such convs fell to ``generic_x86`` (parallel, not vectorized).
"""
from __future__ import annotations

from .dense_conv2d_nchw_x86 import apply, default_knobs
from .registry import register_schedule

MAIN_BLOCK = "group_conv2d_nchw"


@register_schedule(MAIN_BLOCK, "cpu")
def schedule(sch, block, target, knobs: dict | None = None) -> None:
    _, k, _, w, *_ = sch.get_loops(block)
    apply(sch, block, knobs or default_knobs(int(sch.get(k).extent), int(sch.get(w).extent)))
