"""depthwise_pattern_conv2d_nchw_x86: host CPU schedule of the depthwise pattern conv.

Loop nest after scheduling:

    parallel (n, c)                        -- a channel per task
      padded plane of channel c            -- made here, not copied for the whole input first
      h_outer, w_outer
        t < taps (unrolled) x hi (unrolled) x wv (8- or 16-lane vector)   -- a tile of ROWS rows
        write-back: crop + fused epilogue (bias, ReLU6) from the tile

A depthwise conv makes few MACs per byte: the global padded (for stride 2 deinterleaved) copy of
its input that the pattern conv makes costs more than the conv where the input is larger than a
core's L2. The plane's loops carry the loop-partition hint, so the zero borders are split off and
the copy of the rows is a plain loop LLVM vectorizes (docs/design.md#depthwise-planes).
"""
from __future__ import annotations

from tvm import s_tir

from tvm_patterns.computes.expand_depthwise import ACTIVATION_BLOCK, EXPAND_BLOCK
from tvm_patterns.computes.pattern_conv2d import DEPTHWISE_BLOCK, DEPTHWISE_PAD_BLOCK

from . import pattern_conv2d_nchw_x86 as x86
from .registry import register_schedule

ROWS = 4   # output rows of a register tile (the compute rounds the height up to them: ``row_tile``)
PARTITION_HINT = "pragma_loop_partition_hint"


def plane_block(sch: s_tir.Schedule, block):
    return next(p for p in sch.get_producers(block) if sch.get(p).name_hint.startswith(DEPTHWISE_PAD_BLOCK))


def schedule_expand(sch: s_tir.Schedule, expand, widest: int) -> None:
    """The fused 1x1 conv (``computes.expand_depthwise``) of a block of channels: a vector of positions
    (the widest divisor of the plane up to ``widest`` lanes) of the block's channels, one accumulator
    each, over the input columns, each input vector loaded once for the block; the sums go to the
    block's planes (L1 or L2)."""
    c, p, j = sch.get_loops(expand)[-3:]
    positions = int(sch.get(p).extent)
    po, pi = sch.split(p, [None, max(v for v in range(1, widest + 1) if positions % v == 0)])
    sch.reorder(po, j, c, pi)
    sch.unroll(c)
    sch.vectorize(pi)
    sch.decompose_reduction(expand, j)


@register_schedule(DEPTHWISE_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target) -> None:
    n, c, h, w, t = sch.get_loops(block)
    lanes = x86.usable_lanes(int(sch.get(w).extent), x86.isa_of(target))[-1]
    rows = max(d for d in range(1, ROWS + 1) if int(sch.get(h).extent) % d == 0)
    plane = plane_block(sch, block)
    activation = next((p for p in sch.get_producers(plane) if sch.get(p).name_hint == ACTIVATION_BLOCK), None)
    expand = None
    if activation is not None:
        expand = next(p for p in sch.get_producers(activation) if sch.get(p).name_hint == EXPAND_BLOCK)
        sch.compute_inline(activation)
    wb = x86.split_pattern_stages(sch, block)
    ho, hi = sch.split(h, [None, rows])
    wo, wv = sch.split(w, [None, lanes])
    if expand is None:
        sch.reorder(n, c, ho, wo, t, hi, wv)
        task = sch.fuse(n, c)
        sch.parallel(task)
        sch.compute_at(plane, task)
    else:   # a task per block of channels of the fused 1x1 conv, its planes made first
        cb, ci = sch.split(c, [None, int(sch.get(expand).annotations["block_rows"])])
        sch.reorder(n, cb, ci, ho, wo, t, hi, wv)
        task = sch.fuse(n, cb)
        sch.parallel(task)
        sch.compute_at(plane, ci)
        sch.compute_at(expand, task)
        schedule_expand(sch, expand, x86.isa_of(target).lanes[-1])
    sch.reverse_compute_at(wb, wo, preserve_unit_loops=True)
    sch.unroll(t)
    sch.unroll(hi)
    sch.vectorize(wv)
    sch.decompose_reduction(block, t)
    *_, y, x = sch.get_loops(plane)
    if int(sch.get(plane).annotations["deinterleaved"]):
        _, x = sch.split(x, [2, None])    # the rows' two halves: even columns, odd ones
    for loop in (y, x):
        sch.annotate(loop, PARTITION_HINT, 1)
    *_, last = sch.get_loops(wb)
    if int(sch.get(last).extent) == lanes:
        sch.vectorize(last)
