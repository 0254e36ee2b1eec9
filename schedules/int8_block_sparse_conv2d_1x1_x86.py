"""int8_block_sparse_conv2d_1x1_x86: int8 block-punched 1x1 conv for x86 with AVX-512 VNNI, or AVX2.

A TIR kernel written out. The input is the layer's uint8 codes at its output positions, [N, C, Ho, Wo]
(the stride taken by the quantization), read as a row of P = Ho * Wo positions per channel. A lane is one output position and its 4 bytes
the codes of 4 kept input channels of the block (a quad of ``sparsity/int8_block``'s tables) at that
position, interleaved from 4 channel rows in registers; a row's 4 weights of the quad are one int32,
broadcast:

    parallel (n, position tiles, block)   -- blocks inner: the input tiles stay in L1 across them
      position tile (several where the layer has few quads; the last one ends at P, overlapping)
      q < quads
        v < V:  xv = x[c0, p:p+L] | x[c1, ...] << 8 | x[c2, ...] << 16 | x[c3, ...] << 24   (4 vpmovzxbd)
                r < R:  acc[r, v] = vpdpbusd(acc[r, v], xv, broadcast(w[b, q, r]))          -- 4L MACs
      out[n, bR + r, tile] = acc[r] + bias        (or, with ``requantize``, the next layer's uint8 codes;
                                                    with ``residual``, the float epilogue: scale, bias,
                                                    residual add (a float one or codes), ReLU; it writes
                                                    the sum, the next layer's codes of it, or both)

VNNI: L = 16 (zmm), R = 4, 8 or 16, R x V = 16 accumulators (fewer on layers of few positions).
AVX2 (``vnni=False``): L = 8 (ymm), a ``vpdpbusd`` becomes ``vpmaddubsw`` + ``vpmaddwd`` by ones + add, exact for weights of at most 64
(``vpmaddubsw`` saturates beyond), as the AVX2 conv's; R = 4 or 8, R x V = 8. One interleave feeds R
multiplies.
"""
from __future__ import annotations

from tvm.script import tirx as T

from tvm_patterns.computes.int8_quantization import quantized, requantized_codes

from .int8_block_sparse_dense_x86 import AVX2_BLOCK_ROWS, BLOCK_ROWS

TASK_QUADS = 32             # quads x tiles a parallel task takes at least: a layer of few channels
                            # takes several position tiles a task
VECTOR = {8: T.int32x8, 16: T.int32x16}   # int32 vectors of a ymm, a zmm
FLOAT_VECTOR = {8: T.float32x8, 16: T.float32x16}


def lanes(vnni: bool) -> int:
    """Positions a vector: int32 lanes of a zmm (VNNI) or a ymm (AVX2)."""
    return 16 if vnni else 8


def vectors_per_tile(block_rows: int, vnni: bool, positions: int) -> int:
    """V: position vectors a tile, R x V accumulators (fewer where the layer has fewer positions)."""
    return max(1, min((16 if vnni else 8) // block_rows, positions // lanes(vnni)))


def int8_block_sparse_conv2d_1x1_x86(n: int, channels: int, out_hw: tuple, out_features: int, blocks: int,
                                     block_rows: int, quads: int, vnni: bool, requantize: bool = False,
                                     residual: str | None = None, relu: bool = False, out_float: bool = True,
                                     codes: bool = False, patches: bool = False):
    """PrimFunc(x u8 [N, C, Ho, Wo], col u16 [B, 4Q], value int32 [B, Q, R], bias int32 [B*R]) -> out int32
    [N, F, Ho, Wo] = weight codes @ x codes + bias; P = Ho * Wo at least ``lanes(vnni)``.
    ``requantize``: two more inputs, scale float32 [B*R, 2] and grid float32 [3], and out uint8: the sums
    requantized onto the next layer's grid in the write-back (``requantized_codes``).
    ``residual`` ("float" or "codes"): the float epilogue y = sums * scale[k, 0] + scale[k, 1] + residual (then
    max(., 0) with ``relu``), PrimFunc(x, col, value, bias, scale float32 [B*R, 2], residual float32 [N, F, Ho,
    Wo], residual codes uint8 [N, F, Ho, Wo] and their grid float32 [2] = (scale, zero point), grid float32
    [2] = (1 / scale, zero point)) -> (y float32 [N, F, Ho, Wo] if ``out_float``, y's codes on grid uint8 [N,
    F, Ho, Wo] if ``codes``); the residual is the float one or the codes' (code - zero point) * scale, and
    what a variant does not read or write is a buffer of one element.
    ``patches``: x is a dense conv's patches with each quad's 4 codes interleaved a position, u8 [N, Q, Ho, Wo * 4]
    (``int8_quantize_im2col_x86``): a vector of positions is one load, and every block reads every quad (col
    unused)."""
    if requantize and residual:
        raise ValueError("the int8 1x1 kernel writes requantized codes or a residual sum, not both")
    if residual not in (None, "float", "codes") or (residual and not (out_float or codes)):
        raise ValueError(f"residual {residual!r} (None, 'float' or 'codes') writing {'float' if out_float else ''}"
                         f"{' and ' if out_float and codes else ''}{'codes' if codes else ''}: nothing to write")
    rows = BLOCK_ROWS if vnni else AVX2_BLOCK_ROWS
    if block_rows not in rows:
        raise NotImplementedError(f"the int8 1x1 kernel{'' if vnni else ' on AVX2'} runs blocks of {rows} rows, "
                                  f"not {block_rows}")
    ho, wo = out_hw
    positions = ho * wo
    R, V, L = block_rows, vectors_per_tile(block_rows, vnni, positions), lanes(vnni)
    TL = L * V
    if positions < L:
        raise ValueError(f"{positions} positions: the int8 1x1 kernel{'' if vnni else ' on AVX2'} takes at least {L}")
    tiles = -(-positions // TL)
    span = min(tiles, max(1, TASK_QUADS // max(quads, 1)))      # position tiles a task
    tasks = -(-tiles // span)
    i32, u8, f32 = f"int32x{L}", f"uint8x{4 * L}", f"float32x{L}"

    def mac(acc, xv, w):
        if vnni:
            return T.call_llvm_pure_intrin(i32, "llvm.x86.avx512.vpdpbusd.512", acc, T.reinterpret(xv, dtype=u8),
                                           T.reinterpret(T.broadcast(w, L), dtype="int8x64"))
        return acc + T.call_llvm_pure_intrin(
            i32, "llvm.x86.avx2.pmadd.wd",
            T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", T.reinterpret(xv, dtype="int8x32"),
                                    T.reinterpret(T.broadcast(w, L), dtype="int8x32")),
            T.broadcast(T.int16(1), 16))

    def interleaved(x, col, i, b, q, p):
        """The L positions from p, lane bytes the 4 codes of quad q of block b: one load of patches, or 4 channel
        rows' codes widened and shifted into place."""
        if patches:
            return T.reinterpret(x[i, q, T.ramp(p * 4, 1, 4 * L)], dtype=i32)
        rows = [T.Cast(i32, x[i, T.Cast("int32", col[b, 4 * q + t]), T.ramp(p, 1, L)]) for t in range(4)]
        return (rows[0] | T.shift_left(rows[1], T.broadcast(8, L)) | T.shift_left(rows[2], T.broadcast(16, L))
                | T.shift_left(rows[3], T.broadcast(24, L)))

    def residual_sum(sums, scale, res, res_codes, res_grid, i, k, p):
        """sums * scale[k, 0] + scale[k, 1] + the residual, then the ReLU: the float epilogue's operations."""
        if residual == "float":
            r = res[i, k, T.ramp(p, 1, L)]
        else:
            r = (T.Cast(f32, res_codes[i, k, T.ramp(p, 1, L)]) - T.broadcast(res_grid[1], L)) * T.broadcast(res_grid[0], L)
        y = T.Cast(f32, sums) * T.broadcast(scale[k, 0], L) + T.broadcast(scale[k, 1], L) + r
        return T.max(y, T.broadcast(T.float32(0), L)) if relu else y

    @T.macro
    def body(x, col, value, bias, scale, grid, res, res_codes, res_grid, out, codes_out):
        for it in T.parallel(n * tasks * blocks):
            for ts in T.serial(span):
                i: T.int32 = it // (tasks * blocks)
                tile: T.int32 = it // blocks % tasks * span + ts
                p0: T.int32 = T.min(tile * TL, positions - TL)     # the last tile ends at P; extra tiles redo it
                b: T.int32 = it % blocks
                acc = T.decl_buffer((R * V * L,), "int32", scope="local")
                for a in T.unroll(R * V):
                    acc[T.ramp(a * L, 1, L)] = T.broadcast(T.int32(0), L)
                for q in T.serial(quads):
                    for v in T.unroll(V):
                        xv: VECTOR[L] = interleaved(x, col, i, b, q, p0 + v * L)
                        for r in T.unroll(R):
                            acc[T.ramp((r * V + v) * L, 1, L)] = mac(acc[T.ramp((r * V + v) * L, 1, L)], xv, value[b, q, r])
                for r in T.unroll(R):
                    if b * R + r < out_features:
                        for v in T.unroll(V):
                            sums = acc[T.ramp((r * V + v) * L, 1, L)] + T.broadcast(bias[b * R + r], L)
                            if residual is None:
                                out[i, b * R + r, T.ramp(p0 + v * L, 1, L)] = (
                                    requantized_codes(sums, scale, grid, b * R + r, L) if requantize else sums)
                            else:
                                y: FLOAT_VECTOR[L] = residual_sum(sums, scale, res, res_codes, res_grid, i, b * R + r,
                                                                  p0 + v * L)
                                if out_float:
                                    out[i, b * R + r, T.ramp(p0 + v * L, 1, L)] = y
                                if codes:
                                    codes_out[i, b * R + r, T.ramp(p0 + v * L, 1, L)] = quantized(y, grid, L)

    # Each [N, C, Ho, Wo] buffer is read and written as [N, C, P]: a channel's positions, row-major.
    flat_in, flat_out = (n, channels, positions), (n, out_features, positions)
    x_shape = (n, channels, ho, wo)
    if patches:
        if channels != 4 * quads:
            raise ValueError(f"patches of {channels} codes a position in {quads} quads: they hold 4 a quad")
        x_shape, flat_in = (n, quads, ho, wo * 4), (n, quads, positions * 4)
    if requantize:
        @T.prim_func(private=True)
        def kernel(x: T.Buffer(x_shape, "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
                   value: T.Buffer((blocks, quads, R), "int32"), bias: T.Buffer((blocks * R,), "int32"),
                   scale: T.Buffer((blocks * R, 2), "float32"), grid: T.Buffer((3,), "float32"),
                   out: T.Buffer((n, out_features, ho, wo), "uint8")):
            T.func_attr({"tir.noalias": True})
            xf = T.decl_buffer(flat_in, "uint8", data=x.data)
            outf = T.decl_buffer(flat_out, "uint8", data=out.data)
            body(xf, col, value, bias, scale, grid, None, None, None, outf, None)
    elif residual:
        full, one = (n, out_features, ho, wo), (1,)
        res_f, res_c = (full, one) if residual == "float" else (one, full)
        out_f, out_c = full if out_float else one, full if codes else one
        flat_res_f, flat_res_c = (flat_out, one) if residual == "float" else (one, flat_out)
        flat_f, flat_c = flat_out if out_float else one, flat_out if codes else one

        @T.prim_func(private=True)
        def kernel(x: T.Buffer(x_shape, "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
                   value: T.Buffer((blocks, quads, R), "int32"), bias: T.Buffer((blocks * R,), "int32"),
                   scale: T.Buffer((blocks * R, 2), "float32"), res: T.Buffer(res_f, "float32"),
                   res_codes: T.Buffer(res_c, "uint8"), res_grid: T.Buffer((2,), "float32"),
                   grid: T.Buffer((2,), "float32"), out: T.Buffer(out_f, "float32"), codes_out: T.Buffer(out_c, "uint8")):
            T.func_attr({"tir.noalias": True})
            xf = T.decl_buffer(flat_in, "uint8", data=x.data)
            resf = T.decl_buffer(flat_res_f, "float32", data=res.data)
            rescf = T.decl_buffer(flat_res_c, "uint8", data=res_codes.data)
            outf = T.decl_buffer(flat_f, "float32", data=out.data)
            codesf = T.decl_buffer(flat_c, "uint8", data=codes_out.data)
            body(xf, col, value, bias, scale, grid, resf, rescf, res_grid, outf, codesf)
    else:
        @T.prim_func(private=True)
        def kernel(x: T.Buffer(x_shape, "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
                   value: T.Buffer((blocks, quads, R), "int32"), bias: T.Buffer((blocks * R,), "int32"),
                   out: T.Buffer((n, out_features, ho, wo), "int32")):
            T.func_attr({"tir.noalias": True})
            xf = T.decl_buffer(flat_in, "uint8", data=x.data)
            outf = T.decl_buffer(flat_out, "int32", data=out.data)
            body(xf, col, value, bias, None, None, None, None, None, outf, None)

    return kernel
