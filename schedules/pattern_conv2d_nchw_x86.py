"""pattern_conv2d_nchw_x86: host CPU (AVX2 / AVX-512) schedule of the pattern conv.

Loop nest of the main block after scheduling:

    parallel (n, h_outer, k)          -- threads split output rows; a row block of input stays in L2
      w_outer
        j < max_len                   -- kernels of filter k (table rows)
          t < taps   (unrolled)       -- one offset + one broadcast weight per tap
            hi (unrolled) x wm (unrolled) x wv (8- or 16-lane vector)   -- register tile of HI*WM vectors
      write-back: crop + fused epilogue (bias, residual add, relu) from the register tile

That is the default order; the design space has three more (ORDERS below). On an AVX-512 CPU the
space has each order twice, with 8-lane (ymm) and 16-lane (zmm) vectors, where the padded output
width is a multiple of 16; the default takes the widest vector that fits.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, sym
from tvm.target import Target, codegen

from tvm_patterns.computes.pattern_conv2d import CROP_BLOCK, MAIN_BLOCK, PAD_BLOCK

from .registry import register_schedule

VECTOR = 8


@dataclass(frozen=True)
class Isa:
    """What a register tile may use: vector widths (float lanes, narrowest first), vector registers,
    and accumulators (the registers less two: a broadcast weight and an input vector)."""

    lanes: tuple
    registers: int

    @property
    def max_accumulators(self) -> int:
        return self.registers - 2


AVX2 = Isa((VECTOR,), 16)
# 32 vector registers (ymm16-31 too, through AVX-512VL); 16 lanes halve a tile's instructions and
# loads even where a zmm FMA runs as two halves (docs/design.md#avx512-lanes).
AVX512 = Isa((VECTOR, 16), 32)
# Bytes of a register tile kept on the stack, where LLVM holds it in registers (32 zmm or NEON q
# registers); TVM makes a CPU buffer of 1 KB or more a workspace unless passes.register_tiles marks it.
REGISTER_TILE_BYTES = 32 * 64
MAX_ACCUMULATORS = AVX2.max_accumulators   # 14: ``apply``'s default, and a whole column of rows by default


def isa_of(target: Target | None) -> Isa:
    """AVX512 when the target's CPU has avx512f, else AVX2 (``None``: the current target)."""
    target = target or Target.current(allow_none=True)
    return AVX512 if target is not None and codegen.target_has_features("avx512f", target) else AVX2


# Loop orders of the register tiles (one design space each; an order is not a sampled value because
# the tuner replays traces, not this Python):
#   kernels_outer  (n, ho, k) | j | wo | t hi wm wv   -- input rows streamed once per kernel
#   kernels_inner  (n, ho, k) | wo | j | t hi wm wv   -- one width tile's accumulators over all kernels
#   filters_inner  (n, ho, wo) | k | j | t hi wm wv   -- the input tile stays in L1 across filters
#   channels_blocked (n, ho, kb) | jo | ki | ji | wo | t hi wm wv
#                    -- a block of filters walks its kernel lists in chunks; kernels are sorted by input
#                       channel, so chunk jo of every filter reads about the same slice of the input
#                       rows, which stays in L2 while the block uses it (the input tile of a row block
#                       of a wide layer is larger than L2)
ORDERS = ("kernels_outer", "kernels_inner", "filters_inner", "channels_blocked")
UNROLL_STEPS = (0, 16, 64)   # pragma_auto_unroll_max_step of the loop inside the parallel one
MAX_VECTORS = 4
MAX_FILTER_BLOCK = 128       # filters of one channel-blocked tile (its accumulators live in L2)
# Scope of a CPU kernel's accumulator tile (its cache_write): TVM 0.27 makes a CPU "local" buffer a
# workspace allocation per parallel iteration, which LLVM keeps partly in memory; a "global" one under
# 1 KB is a stack array that LLVM promotes to registers (docs/design.md#accumulator-scope).
ACCUMULATOR_SCOPE = "global"


@dataclass(frozen=True)
class Knobs:
    rows: int      # output rows per register tile (HI); divides the output height
    vectors: int   # vectors per tile row (WM); divides the padded output width / lanes
    order: str = "kernels_inner"  # one of ORDERS
    unroll: int = 0               # one of UNROLL_STEPS
    filter_block: int = 0         # channels_blocked: filters per block (divides K)
    chunks: int = 0               # channels_blocked: chunks of each kernel list (divides max_len)
    lanes: int = VECTOR           # float lanes of a vector (one of the ISA's; divides the padded width)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def usable_lanes(out_w_padded: int, isa: Isa) -> list[int]:
    """The ISA's vector widths that divide the padded output width (8 always does)."""
    return [lanes for lanes in isa.lanes if out_w_padded % lanes == 0]


def is_x86(target: Target | None) -> bool:
    """An LLVM target for an x86 CPU (the host schedules' targets)."""
    if target is None or target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "") or "")
    return not triple or triple.startswith(("x86_64", "i686", "i386"))


def row_lanes(out_w: int, target: Target | None) -> int:
    """The vector width a pattern conv's output rows are padded to (the compute's ``vector_width``):
    on x86 the ISA's width that covers a row with the fewest vectors (ties: the narrower, less
    padding), 8 elsewhere: on AVX-512 a 56-wide row becomes 4 zmm vectors instead of 7 ymm ones
    (docs/design.md#avx512-lanes)."""
    if not is_x86(target):
        return VECTOR
    return min(isa_of(target).lanes, key=lambda lanes: -(-out_w // lanes))


# Input rows are aligned to the vector (the compute's ``align``) where an output row holds two or more
# vectors, so the middle tap column loads aligned vectors; one-vector rows stay packed, since padding
# them costs more in cache than it gains (docs/design.md#row-alignment).
MIN_VECTORS_TO_ALIGN = 2


def row_alignment(out_w: int, strides: tuple, target: Target | None) -> int:
    """The compute's ``align`` for a pattern conv on ``target``: the row vector width on x86 where an
    output row (width stride 1 or 2) holds at least MIN_VECTORS_TO_ALIGN of them, else 0 (packed)."""
    lanes = row_lanes(out_w, target)
    if not is_x86(target) or strides[1] not in (1, 2) or -(-out_w // lanes) < MIN_VECTORS_TO_ALIGN:
        return 0
    return lanes


def default_knobs(out_h: int, out_w_padded: int, isa: Isa = AVX2) -> Knobs:
    """One vector column of up to 8 rows (the whole column when it is 14 rows or fewer), kernels
    outside the width tiles, the widest vector that fits: taller single-vector tiles read fewer
    distinct input lines per tap, and kernels-outer streams each input row once
    (docs/design.md#pattern-default-tile)."""
    rows = out_h if out_h <= MAX_ACCUMULATORS else max(d for d in _divisors(out_h) if d <= 8)
    return Knobs(rows=rows, vectors=1, order="kernels_outer", lanes=usable_lanes(out_w_padded, isa)[-1])


def inline_epilogue(sch: s_tir.Schedule, block):
    """Reverse-inline the elementwise consumers of ``block`` into it; returns the last block."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return block
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001  not injective / several producers: stays a stage
            return block


def schedule_pad(sch: s_tir.Schedule, pad) -> None:
    """Parallel over (image, channel), or over (image, row) where rows are aligned with a lead (the
    buffer is not a whole number of planes then); rows of the padded plane split out so x is
    contiguous (deinterleaved rows: their two halves)."""
    ann = sch.get(pad).annotations
    row, plane = int(ann["row"]), int(ann["plane"])
    n, i = sch.get_loops(pad)
    if int(ann["lead"]):
        r, x = sch.split(i, [None, row])
        sch.parallel(sch.fuse(n, r))
        return
    halves = [2, row // 2] if int(ann["deinterleaved"]) else [row]
    c, *_ = sch.split(i, [None, plane // row, *halves])
    sch.parallel(sch.fuse(n, c))


def row_stride(sch: s_tir.Schedule, block) -> int:
    """The stride down of a pattern conv: input rows between consecutive output rows, from the
    block's read index into its padded input (``row`` elements a row)."""
    pad = next(p for p in sch.get_producers(block) if sch.get(p).name_hint.startswith(PAD_BLOCK))
    buffer, row = sch.get(pad).writes[0].source, int(sch.get(pad).annotations["row"])
    h_var = sch.get(block).iter_vars[2].var
    region = next(r for r in sch.get(block).reads if r.source.same_as(buffer))
    coef = sym.detect_linear_equation(region.region[-1].min, [h_var])
    return max(1, int(coef[0]) // row) if coef else 1


def split_pattern_stages(sch: s_tir.Schedule, block):
    """Schedule the padding producer; return the write-back block (crop + epilogue) of ``block``."""
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.startswith(PAD_BLOCK):
            schedule_pad(sch, p)
    cw = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    consumers = sch.get_consumers(cw)
    if len(consumers) == 1 and sch.get(consumers[0]).name_hint.startswith(CROP_BLOCK):
        sch.compute_inline(cw)
        cw = consumers[0]
    return inline_epilogue(sch, cw)


def perfect_tile(sch: s_tir.Schedule, loop, factor: int | None, max_inner: int) -> list:
    """Split ``loop`` in two by a perfect tile: sampled (factor None) or the fixed decision."""
    extent = int(sch.get(loop).extent)
    if factor is not None and extent % factor:
        raise ValueError(f"tile factor {factor} does not divide the loop extent {extent}")
    decision = None if factor is None else [extent // factor, factor]
    return sch.split(loop, sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max(max_inner, factor or 1),
                                                   decision=decision))


def categorical_knob(sch: s_tir.Schedule, candidates, value: int | None, what: str = "value"):
    """``sample_categorical`` over ``candidates`` (uniform): sampled when ``value`` is None, else the
    fixed decision of the same instruction."""
    candidates = list(candidates)
    if value is not None and value not in candidates:
        raise ValueError(f"{what} {value} is not one of {tuple(candidates)}")
    decision = None if value is None else candidates.index(value)
    return sch.sample_categorical(candidates, [1 / len(candidates)] * len(candidates), decision=decision)


def unroll_knob(sch: s_tir.Schedule, loop, steps: int | None) -> None:
    sch.annotate(loop, "pragma_auto_unroll_max_step", categorical_knob(sch, UNROLL_STEPS, steps, "unroll"))


def channel_blocks(sch: s_tir.Schedule, k, j, knobs: Knobs | None) -> tuple:
    """(kb, ki, jo, ji): the filter loop ``k`` split into blocks of ``knobs.filter_block`` and the
    kernel-list loop ``j`` into ``knobs.chunks`` chunks (both sampled where ``knobs`` is None)."""
    max_len = int(sch.get(j).extent)
    if knobs is not None:
        if not (knobs.filter_block and knobs.chunks):
            raise ValueError(f"the channels_blocked order needs filter_block and chunks, got {knobs}")
        if max_len % knobs.chunks:
            raise ValueError(f"{knobs.chunks} chunks do not divide the kernel lists ({max_len} rows)")
    kb, ki = perfect_tile(sch, k, knobs and knobs.filter_block, MAX_FILTER_BLOCK)
    jo, ji = perfect_tile(sch, j, knobs and max_len // knobs.chunks, max_len)
    return kb, ki, jo, ji


def apply(sch: s_tir.Schedule, block, order: str, knobs: Knobs | None = None, *, vector: int = VECTOR,
          max_accumulators: int = MAX_ACCUMULATORS) -> None:
    """The schedule of one loop order; ``knobs`` None leaves tiles and unroll to the tuner (sampled),
    otherwise they are the fixed decisions of the same sampling instructions. ``vector`` (lanes) and
    ``max_accumulators`` are the ISA's (the NEON schedule reuses this nest with 4 and 24)."""
    if knobs is not None and knobs.lanes != vector:
        raise ValueError(f"knobs of {knobs.lanes} lanes for a {vector}-lane schedule: {knobs}")
    n, k, h, w, j, t = sch.get_loops(block)
    wb = split_pattern_stages(sch, block)
    ho, hi = perfect_tile(sch, h, knobs and knobs.rows, max_accumulators)
    w_, wv = sch.split(w, [None, vector])
    wo, wm = perfect_tile(sch, w_, knobs and knobs.vectors, MAX_VECTORS)
    if order == "kernels_outer":
        sch.reorder(n, ho, k, j, wo, t, hi, wm, wv)
        outer = sch.fuse(n, ho, k)
        sch.reverse_compute_at(wb, outer, preserve_unit_loops=True)
        inner = j
    elif order == "filters_inner":
        sch.reorder(n, ho, wo, k, j, t, hi, wm, wv)
        outer = sch.fuse(n, ho, wo)
        sch.reverse_compute_at(wb, k, preserve_unit_loops=True)
        inner = k
    elif order == "kernels_inner":
        sch.reorder(n, ho, k, wo, j, t, hi, wm, wv)
        outer = sch.fuse(n, ho, k)
        sch.reverse_compute_at(wb, wo, preserve_unit_loops=True)
        inner = wo
    elif order == "channels_blocked":
        kb, ki, jo, ji = channel_blocks(sch, k, j, knobs)
        sch.reorder(n, ho, kb, jo, ki, ji, wo, t, hi, wm, wv)
        outer = sch.fuse(n, ho, kb)
        sch.reverse_compute_at(wb, outer, preserve_unit_loops=True)
        inner = j = jo      # the reduction is decomposed at its outer loop
    else:
        raise ValueError(f"unknown loop order {order!r}; one of {ORDERS}")
    sch.parallel(outer)
    sch.unroll(t)
    sch.unroll(hi)
    sch.unroll(wm)
    sch.vectorize(wv)
    unroll_knob(sch, inner, knobs and knobs.unroll)
    sch.decompose_reduction(block, j)
    vectorize_write_back(sch, wb, vector)


def vectorize_write_back(sch: s_tir.Schedule, wb, vector: int) -> None:
    """Vectorize the innermost loop of a pattern conv's write-back block by ``vector`` lanes.
    Unit loops are kept above it so that its loop count does not depend on the sampled tiles (a
    trace must replay with any decisions); a cropped write-back is predicated (w < Wo) and stays scalar."""
    last = sch.get_loops(wb)[-1]
    if not sch.get(wb).name_hint.startswith(CROP_BLOCK) and int(sch.get(last).extent) % vector == 0:
        _, lane = sch.split(last, [None, vector])
        sch.vectorize(lane)


def padded_width(sch: s_tir.Schedule, block_name: str = MAIN_BLOCK) -> int:
    """The output width of a pattern conv's main block, padded to the compute's vector width."""
    return int(sch.get(sch.get_loops(sch.get_sblock(block_name))[3]).extent)


def space_points(sch: s_tir.Schedule, target=None) -> list[tuple[int, str]]:
    """(lanes, loop order) of each schedule ``design_space`` returns, in its order."""
    return [(lanes, order) for lanes in usable_lanes(padded_width(sch), isa_of(target)) for order in ORDERS]


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """MetaSchedule design space of a PrimFunc holding a pattern conv: one schedule per vector width
    and loop order (``space_points``), register tile and unroll sampled. ``schedule`` (the default
    knobs) is one point of it."""
    isa = isa_of(target)
    return [space for lanes in usable_lanes(padded_width(sch), isa)
            for space in one_space_per_order(sch, MAIN_BLOCK, ORDERS, apply, vector=lanes,
                                             max_accumulators=isa.max_accumulators)]


def one_space_per_order(sch: s_tir.Schedule, block_name: str, orders, apply_order, **kw) -> list[s_tir.Schedule]:
    """A design space of one schedule per loop order: ``apply_order(copy, block, order, **kw)`` with
    its knobs sampled (a trace replays one order, so the order is not itself a sampled value)."""
    spaces = []
    for order in orders:
        s = sch.copy()
        apply_order(s, s.get_sblock(block_name), order, **kw)
        spaces.append(s)
    return spaces


@register_schedule(MAIN_BLOCK, "cpu")
def schedule(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    n, k, h, w, j, t = sch.get_loops(block)
    isa = isa_of(target)
    knobs = knobs or default_knobs(int(sch.get(h).extent), int(sch.get(w).extent), isa)
    apply(sch, block, knobs.order, knobs, vector=knobs.lanes, max_accumulators=isa.max_accumulators)
