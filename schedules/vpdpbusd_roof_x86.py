"""vpdpbusd_roof_x86: the machine's int8 roof on AVX-512 VNNI, as the int8 kernels' benchmarks report it.

A TIR kernel written out: each of ``threads`` parallel tasks runs ``steps`` x 16 independent
``vpdpbusd`` on 16 zmm accumulators (enough to cover the instruction's latency), with no load in the
loop, then stores them. GOP/s = threads x steps x 16 x 128 / seconds (64 u8 x s8 MACs an instruction).
The codes multiplied change every step (the step's 4 bytes), so nothing folds; the weights are ones.
"""
from __future__ import annotations

from tvm.script import tirx as T

ACCUMULATORS = 16
LANES = 16
OPS_PER_INSTRUCTION = 2 * 4 * LANES


def vpdpbusd_roof_x86(threads: int, steps: int):
    """PrimFunc(out int32 [threads, 16, 16]): out[t, a] = t + a + the sum over s < steps of the 4 bytes of s."""

    @T.prim_func(private=True)
    def roof(out: T.Buffer((threads, ACCUMULATORS, LANES), "int32")):
        T.func_attr({"tir.noalias": True})
        for t in T.parallel(threads):
            acc = T.decl_buffer((ACCUMULATORS * LANES,), "int32", scope="local")
            for a in T.unroll(ACCUMULATORS):
                acc[T.ramp(a * LANES, 1, LANES)] = T.broadcast(t + a, LANES)
            for s in T.serial(steps):
                codes: T.uint8x64 = T.reinterpret(T.broadcast(s, LANES), dtype="uint8x64")
                for a in T.unroll(ACCUMULATORS):
                    acc[T.ramp(a * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                        "int32x16", "llvm.x86.avx512.vpdpbusd.512", acc[T.ramp(a * LANES, 1, LANES)], codes,
                        T.reinterpret(T.broadcast(T.int32(0x01010101), LANES), dtype="int8x64"))
            for a in T.unroll(ACCUMULATORS):
                out[t, a, T.ramp(0, 1, LANES)] = acc[T.ramp(a * LANES, 1, LANES)]

    return roof
