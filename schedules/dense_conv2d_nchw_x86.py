"""dense_conv2d_nchw_x86: the dense baseline, for TVM's legalized conv2d (blocks pad_temp, conv2d_nchw).

Register tile: KI output channels x WM vectors of one output row, so each input vector load
feeds KI FMAs; the (rc, ry, rx) reduction runs outside the tile. Where the conv reads its padded
input with stride 2 along the width, the padded rows are stored deinterleaved (even columns, then
odd ones), so a tap's inputs for consecutive outputs are consecutive (vector loads, not gathers).
A conv whose output channels fill whole vectors and that has MIN_INPUT_CHANNELS or more is
vectorized over its output channels instead (``apply_channel_vectors``): the weights are copied
transposed ([C, KH, KW, K]) once per block of channels, every input pixel is a broadcast scalar, and
a tile is KV vectors of channels x WT pixels of a row (docs/design.md#dense-channel-vectors).
Used for dense layers in every build, so dense-vs-sparse comparisons share it.
"""
from __future__ import annotations

from tvm import s_tir, sym

from .pattern_conv2d_nchw_x86 import (ACCUMULATOR_SCOPE, AVX2, Isa, inline_epilogue, isa_of, one_space_per_order, perfect_tile,
                                      unroll_knob)
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


# With AVX-512 (32 registers, 16 lanes where the row holds whole zmm vectors): tiles of KI_AVX512 output
# channels x up to WM_AVX512 vectors, each input vector load feeding 8 FMAs (docs/design.md#dense-row-vectors).
KI_AVX512 = 8
WM_AVX512 = 2


def row_vector_lanes(W: int, isa: Isa) -> int:
    """Lanes of the row vectors: 16 on AVX-512 where they divide the width, else ``_vector_lanes``."""
    return 16 if 16 in isa.lanes and W % 16 == 0 else _vector_lanes(W)


def row_vector_widths(W: int, isa: Isa) -> list[int]:
    """The vector widths of the row-vector design space (one space each): ``_vector_lanes`` of the
    width, and ``row_vector_lanes`` where that is wider."""
    return sorted({_vector_lanes(W), row_vector_lanes(W, isa)})


def default_knobs(K: int, W: int, isa: Isa = AVX2) -> dict:
    lanes = row_vector_lanes(W, isa)
    if lanes == 16:
        ki = next(d for d in (KI_AVX512, KI, 1) if K % d == 0)
        return {"ki": ki, "wm": max(d for d in range(1, WM_AVX512 + 1) if (W // lanes) % d == 0), "unroll": 0,
                "lanes": 16}
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


MIN_INPUT_CHANNELS = 16    # fewer (a first conv): row vectors, each load feeding the whole tile
# The default channel-vector tile: the most accumulators up to CHANNEL_ACCUMULATORS (half the
# registers with AVX2's 16, which also hold the weight vectors and the broadcast pixel), then the most
# channel vectors up to CHANNEL_VECTORS: 2 x 7 pixels where the width allows, as tuning picked
# (docs/design.md#dense-default-tile).
CHANNEL_ACCUMULATORS = 14
CHANNEL_VECTORS = 2


def channel_accumulator_limit(isa: Isa) -> int:
    """CHANNEL_ACCUMULATORS, or half the ISA's vector registers where that is fewer (AVX2: 8)."""
    return min(CHANNEL_ACCUMULATORS, isa.registers // 2)


# A channel-vector conv with fewer (image, channel vector) pairs than this runs its rows in parallel
# too, its weights copied once per call: 16 channels in one block ran on one thread. (Of the shape,
# not of the sampled tile: a trace must replay with any decisions.)
MIN_PARALLEL = 4


def padded_input(sch: s_tir.Schedule, block):
    """The conv's ``pad_temp`` producer block, or None."""
    return next((p for p in sch.get_producers(block) if sch.get(p).name_hint.startswith("pad_temp")), None)


def channel_vectors(sch: s_tir.Schedule, block, lanes: int) -> bool:
    """Whether the build uses ``apply_channel_vectors``: output channels fill vectors and there are
    MIN_INPUT_CHANNELS input channels or more."""
    n, k, h, w, rc, ry, rx = sch.get_loops(block)
    return int(sch.get(k).extent) % lanes == 0 and int(sch.get(rc).extent) >= MIN_INPUT_CHANNELS


def channel_vector_knobs(K: int, W: int, isa: Isa) -> dict:
    """The tile (kv vectors of the ISA's widest lanes x wt pixels, both dividing their extents) with
    the most accumulators up to ``channel_accumulator_limit``, then the most vectors up to CHANNEL_VECTORS."""
    lanes, limit = isa.lanes[-1], channel_accumulator_limit(isa)
    tiles = [(kv * wt, kv, wt) for kv in range(1, min(CHANNEL_VECTORS, K // lanes) + 1) if (K // lanes) % kv == 0
             for wt in range(1, W + 1) if W % wt == 0 and kv * wt <= limit]
    _, kv, wt = max(tiles)
    return {"kv": kv, "wt": wt, "unroll": 0}


# Where the channel-vector nest reads its input pixels (one design space each: a trace replays one
# structure, so the layout is not a sampled value):
#   nchw           -- broadcast from the NCHW input, padding inlined (the default)
#   channels_last  -- the padded input copied once per call to [N, H, W, C], so that the pixels of a
#                     tile are read along consecutive channels: whole cache lines, where an NCHW row of
#                     a narrow layer fills part of one and a stride-2 conv uses every other pixel
# channels_last wins on narrow layers of small-L2 machines only: a knob for the tuner, not the
# default (docs/design.md#dense-channels-last).
INPUT_LAYOUTS = ("nchw", "channels_last")


def channels_last_input(sch: s_tir.Schedule, pad) -> None:
    """Store the padded input (the ``pad_temp`` block) as [N, H, W, C], written along C, parallel over rows."""
    sch.transform_layout(pad, ("write", 0), lambda n, c, y, x: (n, y, x, c))
    n, c, y, x = sch.get_loops(pad)
    sch.reorder(n, y, x, c)
    sch.parallel(sch.fuse(n, y))


def apply_channel_vectors(sch: s_tir.Schedule, block, knobs: dict | None, lanes: int, max_accumulators: int,
                          layout: str = "nchw") -> None:
    """Output channels as vectors: ``knobs`` {"kv", "wt", "unroll"} fixed, or None (sampled); ``layout``
    one of INPUT_LAYOUTS."""
    if layout not in INPUT_LAYOUTS:
        raise ValueError(f"unknown input layout {layout!r} of the channel-vector conv; one of {INPUT_LAYOUTS}")
    knobs = knobs or {}
    pad = padded_input(sch, block)
    if layout == "channels_last":
        channels_last_input(sch, pad)
    elif pad is not None:
        sch.compute_inline(pad)        # its pixels are read one at a time (broadcast): no copy needed
    n, k, h, w, rc, ry, rx = sch.get_loops(block)
    narrow = int(sch.get(n).extent) * (int(sch.get(k).extent) // lanes) < MIN_PARALLEL
    cw = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    wb = inline_epilogue(sch, cw)
    weights = sch.cache_read(block, 1, "global")
    k_, kv = sch.split(k, [None, lanes])
    ko, kvo = perfect_tile(sch, k_, knobs.get("kv"), max(1, max_accumulators // 2))
    wo, wi = perfect_tile(sch, w, knobs.get("wt"), max_accumulators)
    if narrow:
        sch.reorder(n, h, ko, wo, rc, ry, rx, kvo, wi, kv)
        sch.parallel(sch.fuse(n, h, ko))
    else:
        sch.reorder(n, ko, h, wo, rc, ry, rx, kvo, wi, kv)
        outer = sch.fuse(n, ko)
        sch.parallel(outer)
        sch.compute_at(weights, outer)
    sch.transform_layout(weights, ("write", 0), lambda k, c, y, x: (c, y, x, k))
    sch.transform_layout(block, ("write", 0), lambda n, k, y, x: (n, y, x, k))
    sch.reverse_compute_at(wb, wo)
    for loop in (ry, rx, kvo, wi):
        sch.unroll(loop)
    sch.vectorize(kv)
    unroll_knob(sch, rc, knobs.get("unroll"))
    sch.decompose_reduction(block, rc)


def apply(sch: s_tir.Schedule, block, knobs: dict | None = None) -> None:
    """Row vectors of ``knobs["lanes"]`` lanes (default ``_vector_lanes`` of the width). ``knobs``
    {"ki", "wm", "unroll"}: the fixed decisions; those missing are left to the tuner (sampled)."""
    knobs = knobs or {}
    pad = padded_input(sch, block)
    if pad is not None:
        deinterleave_rows(sch, block, pad)
        sch.parallel(sch.fuse(*sch.get_loops(pad)[:2]))
    n, k, h, w, rc, ry, rx = sch.get_loops(block)
    lanes = knobs.get("lanes") or _vector_lanes(int(sch.get(w).extent))
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


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """MetaSchedule design space of a PrimFunc holding a legalized conv2d: channel tile, vectors per
    row and unroll sampled (the channel-vector nest once per input layout, INPUT_LAYOUTS);
    ``schedule`` (the default knobs) is one point of it."""
    block, isa = sch.get_sblock(MAIN_BLOCK), isa_of(target)
    if not channel_vectors(sch, block, isa.lanes[-1]):     # row vectors: one space per vector width
        widths = row_vector_widths(int(sch.get(sch.get_loops(block)[3]).extent), isa)
        return one_space_per_order(sch, MAIN_BLOCK, widths, lambda s, b, lanes: apply(s, b, {"lanes": lanes}))
    return one_space_per_order(sch, MAIN_BLOCK, INPUT_LAYOUTS, lambda s, b, layout: apply_channel_vectors(
        s, b, None, isa.lanes[-1], isa.max_accumulators, layout))


@register_schedule(MAIN_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: dict | None = None) -> None:
    _, k, _, w, *_ = sch.get_loops(block)
    K, W, isa = int(sch.get(k).extent), int(sch.get(w).extent), isa_of(target)
    if channel_vectors(sch, block, isa.lanes[-1]):
        knobs = knobs or channel_vector_knobs(K, W, isa)
        apply_channel_vectors(sch, block, knobs, isa.lanes[-1], isa.max_accumulators)
    else:
        apply(sch, block, knobs or default_knobs(K, W, isa))
