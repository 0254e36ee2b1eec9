"""column_combine_conv2d_1x1_nhwc_x86: a column-combined 1x1 conv for x86 with AVX-512, vectors along
the output channels and each group's input channels picked by a register permute.

A TIR kernel written out, on the layer's input [N, C, H, W] (a strided conv's input is sliced first).
Row o of the weight keeps one value in group j of g input channels, at channel j*g + offset[j, o]; a
vector of 16 output channels takes its inputs from one load of the group's channels (a 128-bit
broadcast for g = 4), each lane picking its own with ``vpermps`` (g <= 16):

    parallel (n, tile of 16 positions)          -- positions outer
      pack: xt[16, Cp] = the tile's positions a row of channels (16 x 16 in-register transposes)
      channel tile of F vectors, position tile of P (8):
        j < G
          f < F:  idx[f] = offset[j, o_f : o_f + 16]                       -- kept in registers
          p < P, f < F (unrolled):
            acc[f, p] += vpermps(broadcast(xt[p, j*g : j*g + g]), idx[f]) * values[j, o_f : o_f + 16]
        out[n, o_f + c, p0 : p0 + P] = transpose(acc[f])                   -- in registers

One permute and one FMA per 16 MACs, both inputs from L1. Positions inner (where the weights are the
larger operand) packs the whole input first and runs a channel tile over every position. The output
is NCHW, written with the bias (and a residual add and a ReLU where
``passes.column_combine_epilogue`` folds them in) (docs/design.md#column-combine).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T
from tvm.target import Target, codegen

KERNEL = "column_combine_conv2d_1x1_nhwc_x86"
GEOMETRY_ATTR = "column_combine_conv"   # [n, c, h, w, k, group, F, P, positions inner] of a kernel
# Fewer groups a row than this and the rows-of-one kernel can be faster: the pack and the write-back's
# transposes cost about what 8 groups of the loop do; at batch > 1 under MIN_GROUPS_BATCHED, whose
# output (4x the input at C = 64) it writes in whole rows (docs/design.md#column-combine)
MIN_GROUPS, MIN_GROUPS_BATCHED = 16, 32
LANES = 16      # output channels a vector
PERMUTE = "llvm.x86.avx512.permvar.sf.512"


def runs_on(target: Target | None) -> bool:
    """Whether ``target`` is an x86 CPU with AVX-512. With AVX2 (8 lanes, 16 registers) the same kernel
    was slower than the rows-of-one one on some layers (docs/design.md#column-combine): AVX2 keeps rows
    of one."""
    return (target is not None and target.kind.name == "llvm" and "arm_cpu" not in [str(k) for k in target.keys]
            and codegen.target_has_features("avx512f", target))


@dataclass(frozen=True)
class Knobs:
    filters: int            # F: vectors of output channels a register tile
    positions: int          # P: positions a register tile (a power of two from 4 to the lanes)
    positions_inner: bool   # channel tiles outer, position tiles inner (the weights stay in L2)


def default_knobs(out_channels: int, positions: int, channels_padded: int, groups: int) -> Knobs:
    """Positions inner where the weights (values and offsets) are more bytes than the input, so that
    they are the operand kept in cache: there (few positions) tiles of 2 vectors of output channels x
    8 positions; positions outer, 1 x 16, so that a channel's 16 positions are one cache line (faster
    at batch 8, as fast at batch 1). 16 accumulators, their permute indices and temporaries in 32
    registers."""
    F = 2 if out_channels > LANES else 1
    weights = groups * -(-out_channels // (F * LANES)) * F * LANES * 8
    if weights > positions * channels_padded * 4:
        return Knobs(F, 8, True)
    return Knobs(1, 16, False)


def padded_out_channels(out_channels: int, knobs: Knobs) -> int:
    tile = knobs.filters * LANES
    return -(-out_channels // tile) * tile


def padded_positions(positions: int) -> int:
    """Whole tiles of 16 positions (the pack's transposes; a multiple of any register tile's)."""
    return -(-positions // LANES) * LANES


def padded_channels(channels: int, groups: int, group: int) -> int:
    """Cp: whole vectors, and room for a vector loaded at the last group's first channel."""
    return -(-max(channels, (groups - 1) * group + LANES) // LANES) * LANES


@T.macro
def butterfly(src, src_at, dst, dst_at, b, lanes, vectors):
    """One stage of an in-register transpose: vector v of ``dst`` (from ``dst_at``) takes the lanes of
    ``src`` vectors v and v ^ b that swap bit b of the vector index with bit b of the lane index."""
    for v in T.unroll(vectors):
        dst[T.ramp((dst_at + v) * lanes, 1, lanes)] = T.Shuffle(
            [src[T.ramp((src_at + v - T.floormod(T.floordiv(v, b), 2) * b) * lanes, 1, lanes)],
             src[T.ramp((src_at + v + (1 - T.floormod(T.floordiv(v, b), 2)) * b) * lanes, 1, lanes)]],
            [T.Select(T.floormod(T.floordiv(v, b), 2) == 0, lanes + (lane & ~b) if lane & b else lane,
                      lanes + lane if lane & b else lane | b) for lane in range(lanes)])


@T.macro
def transpose(src, src_at, tmp, lanes, vectors):
    """log2(vectors) butterflies of ``vectors`` vectors of ``src`` (from ``src_at``), ping-ponging in
    ``tmp`` (two regions of ``vectors``; the result in region ``result_region(vectors)``). Lane
    c * V + p of result vector v is lane c * V + v of source vector p (V = vectors): for V = lanes the
    transpose, for fewer, V x V transposes side by side."""
    butterfly(src, src_at, tmp, 0, vectors // 2, lanes, vectors)
    if vectors >= 4:   # (the script parses a stage it drops: its bit stays nonzero)
        butterfly(tmp, 0, tmp, vectors, max(1, vectors // 4), lanes, vectors)
    if vectors >= 8:
        butterfly(tmp, vectors, tmp, 0, max(1, vectors // 8), lanes, vectors)
    if vectors >= 16:
        butterfly(tmp, 0, tmp, vectors, max(1, vectors // 16), lanes, vectors)


def result_region(vectors: int) -> int:
    """Where ``transpose`` leaves its result in ``tmp``: stages alternate regions 0 and 1."""
    return (vectors.bit_length() - 2) % 2 * vectors


@dataclass(frozen=True)
class Geometry:
    """input [N, C, H, W] -> output [N, K, H, W] of a 1x1 conv, stride 1 (a strided conv's input is
    sliced first), whose weight keeps one value a row in each of G groups of g input channels."""

    n: int
    c: int
    h: int
    w: int
    k: int
    group: int

    @property
    def groups(self) -> int:
        return -(-self.c // self.group)


@dataclass(frozen=True)
class Epilogue:
    """What the write-back adds to the sums (the bias always, zeros where the layer has none): the
    layer's residual input, then a ReLU."""

    residual: bool = False
    relu: bool = False


def finish(sums, bias, residual, relu: bool, k, at, lanes: int):
    """The output value(s) of channel ``k`` at flat output index ``at``: sums + bias[k] (+ residual)
    (ReLU'd); ``lanes`` values from ``at`` (1: a scalar)."""
    value = sums + (T.broadcast(bias[k], lanes) if lanes > 1 else bias[k])
    if residual is not None:
        value = value + residual[T.ramp(at, 1, lanes) if lanes > 1 else at]
    if relu:
        value = T.max(value, T.broadcast(T.float32(0), lanes) if lanes > 1 else T.float32(0))
    return value


def column_combine_conv2d_1x1_nhwc_x86(geom: Geometry, knobs: Knobs, epilogue: Epilogue = Epilogue()):
    """PrimFunc(x [N, C, H, W], values [G, K'], offset int32 [G, K'], bias [K'] (, residual [N, K, H, W]))
    -> out [N, K, H, W] float32 = act(conv + bias (+ residual)); K' = ``padded_out_channels``.

    The input is packed into rows of channels, a tile of ``lanes`` positions at a time, each tile
    transposed in registers: positions outer, a task packs its tile into a buffer of its own and
    runs every output channel over it (the input is read once, the packed tile stays in cache);
    positions inner, the whole input is packed first and a task runs one channel tile over every
    position (its weights stay in cache). The write-back transposes each register tile in
    registers and adds the epilogue: one store of P positions per output channel (element by
    element past the last whole tile)."""
    lanes, permute = LANES, PERMUTE
    F, P = knobs.filters, knobs.positions
    n, c, h, w, k, G, g = geom.n, geom.c, geom.h, geom.w, geom.k, geom.groups, geom.group
    if g > lanes:
        raise NotImplementedError(f"groups of {g} channels: the permute picks among {lanes}")
    if P & (P - 1) or not 4 <= P <= lanes:   # (2 trips an analysis of TVM's on the permute's source)
        raise ValueError(f"a tile of {P} positions: the write-back transposes a power of two from 4 to {lanes}")
    count = h * w
    positions, channels = padded_positions(count), padded_channels(c, G, g)
    out_channels = padded_out_channels(k, knobs)
    tiles_k, pack_tiles, channel_tiles = out_channels // (F * lanes), positions // lanes, channels // lanes
    vec = f"float32x{lanes}"
    span = 1 << (g - 1).bit_length()   # a group's channels, loaded as the smallest vector that holds them
    relu = epilogue.relu

    @T.macro
    def pack_tile(x, i, pt, xt, at):
        """xt[at + r, ch] = x at position pt * lanes + r of channel ch (r < lanes); zeros past the
        last position and past C."""
        flat = T.decl_buffer((n * c * h * w,), "float32", data=x.data)
        for ct in T.serial(channel_tiles):
            if pt * lanes + lanes <= count and ct * lanes + lanes <= c:
                rows = T.decl_buffer((lanes * lanes,), "float32", scope="local")
                tmp = T.decl_buffer((2 * lanes * lanes,), "float32", scope="local")
                for v in T.unroll(lanes):
                    rows[T.ramp(v * lanes, 1, lanes)] = flat[T.ramp((i * c + ct * lanes + v) * h * w
                                                                    + pt * lanes, 1, lanes)]
                transpose(rows, 0, tmp, lanes, lanes)
                for v in T.unroll(lanes):
                    xt[at + v, T.ramp(ct * lanes, 1, lanes)] = tmp[T.ramp((result_region(lanes) + v) * lanes, 1, lanes)]
            else:
                for v, lane in T.grid(lanes, lanes):
                    xt[at + v, ct * lanes + lane] = T.if_then_else(
                        pt * lanes + v < count and ct * lanes + lane < c,
                        flat[(i * c + T.min(ct * lanes + lane, c - 1)) * count + T.min(pt * lanes + v, count - 1)],
                        T.float32(0))

    @T.macro
    def register_tile(xt, at, values, offset, bias, res, out, i, kt, p0):
        """out[i, channel tile kt, positions p0 .. p0 + P) from rows at .. at + P of xt."""
        acc = T.decl_buffer((F * P * lanes,), "float32", scope="local")
        idx = T.decl_buffer((F * lanes,), "int32", scope="local")
        tmp = T.decl_buffer((2 * P * lanes,), "float32", scope="local")
        flat = T.decl_buffer((n * k * count,), "float32", data=out.data)
        for a in T.unroll(F * P):
            acc[T.ramp(a * lanes, 1, lanes)] = T.broadcast(T.float32(0), lanes)
        for j in T.serial(G):
            for f in T.unroll(F):
                idx[T.ramp(f * lanes, 1, lanes)] = offset[j, T.ramp((kt * F + f) * lanes, 1, lanes)]
            for p in T.unroll(P):
                for f in T.unroll(F):
                    acc[T.ramp((f * P + p) * lanes, 1, lanes)] = acc[T.ramp((f * P + p) * lanes, 1, lanes)] + (
                        T.call_llvm_pure_intrin(vec, permute, T.Shuffle([xt[at + p, T.ramp(j * g, 1, span)]] * (lanes // span),
                                                                        [lane % span for lane in range(lanes)]),
                                                idx[T.ramp(f * lanes, 1, lanes)])
                        * values[j, T.ramp((kt * F + f) * lanes, 1, lanes)])
        for f in T.unroll(F):
            transpose(acc, f * P, tmp, lanes, P)
            for v in T.unroll(P):
                for ch in T.unroll(lanes // P):
                    o: T.int32 = (kt * F + f) * lanes + ch * P + v
                    if o < k:
                        if p0 + P <= count:
                            flat[T.ramp((i * k + o) * count + p0, 1, P)] = finish(
                                tmp[T.ramp((result_region(P) + v) * lanes + ch * P, 1, P)], bias, res, relu, o,
                                (i * k + o) * count + p0, P)
                        else:
                            for e in T.serial(count - p0):
                                flat[(i * k + o) * count + p0 + e] = finish(
                                    tmp[(result_region(P) + v) * lanes + ch * P + e], bias, res, relu, o,
                                    (i * k + o) * count + p0 + e, 1)

    @T.macro
    def positions_inner(x, values, offset, bias, res, out):
        tiles_p = -(-count // P)      # the last pack tile's positions past the last tile of P are not computed
        xh = T.decl_buffer((n * positions, channels), "float32")
        for q in T.parallel(n * pack_tiles):
            pack_tile(x, q // pack_tiles, q % pack_tiles, xh, q * lanes)
        for q in T.parallel(n * tiles_p * tiles_k):
            register_tile(xh, q // tiles_p % n * positions + q % tiles_p * P, values, offset, bias, res, out,
                          q // tiles_p % n, q // (n * tiles_p), q % tiles_p * P)

    @T.macro
    def positions_outer(x, values, offset, bias, res, out):
        for q in T.parallel(n * pack_tiles):
            xt = T.decl_buffer((lanes, channels), "float32")
            pack_tile(x, q // pack_tiles, q % pack_tiles, xt, 0)
            for kt in T.serial(tiles_k):
                for s in T.serial(T.min(lanes // P, (count - q % pack_tiles * lanes + P - 1) // P)):
                    register_tile(xt, s * P, values, offset, bias, res, out, q // pack_tiles, kt,
                                  q % pack_tiles * lanes + s * P)

    body = positions_inner if knobs.positions_inner else positions_outer

    if epilogue.residual:
        @T.prim_func(private=True)
        def kernel(x: T.Buffer((n, c, h, w), "float32"), values: T.Buffer((G, out_channels), "float32"),
                   offset: T.Buffer((G, out_channels), "int32"), bias: T.Buffer((out_channels,), "float32"),
                   residual: T.Buffer((n, k, h, w), "float32"), out: T.Buffer((n, k, h, w), "float32")):
            T.func_attr({"tir.noalias": True})
            res = T.decl_buffer((n * k * count,), "float32", data=residual.data)
            body(x, values, offset, bias, res, out)
    else:
        @T.prim_func(private=True)
        def kernel(x: T.Buffer((n, c, h, w), "float32"), values: T.Buffer((G, out_channels), "float32"),
                   offset: T.Buffer((G, out_channels), "int32"), bias: T.Buffer((out_channels,), "float32"),
                   out: T.Buffer((n, k, h, w), "float32")):
            T.func_attr({"tir.noalias": True})
            body(x, values, offset, bias, None, out)

    return kernel.with_attr(GEOMETRY_ATTR, [n, c, h, w, k, g, F, P, int(knobs.positions_inner)])


