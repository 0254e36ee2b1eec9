"""circulant_dense on CPUs (x86 AVX2 / AVX-512, aarch64 NEON): the frequency-domain block-circulant
linear layer (``tvm_patterns.computes.circulant``).

Loop nest of the product after scheduling:

    parallel (f, i_outer)               -- a bin and a tile of output blocks per task: the task
                                           streams its slice of the spectra once per row tile
      m_outer
        j < q                           -- input blocks: load real, imag vectors [f, j, i tile]
          m_inner x t x i_vectors (unrolled) x lanes   -- 4 FMAs per weight pair and row, each
                                           on a broadcast bin of the input's spectrum

The real and imaginary weights of a vector feed both output parts and every row of the tile, so
the spectra (the layer's only large operand) are read once per ``m_inner`` rows. The two small
transforms run as plain parallel loops, the inverse vectorised along the samples of a block.
"""
from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from tvm_patterns.computes.circulant import CIRCULANT_DENSE, SAMPLES, SPECTRUM

from . import pattern_conv2d_nchw_x86 as x86
from .pattern_conv2d_nchw_opencl import largest_divisor
from .pattern_conv2d_nchw_x86 import ACCUMULATOR_SCOPE, inline_epilogue
from .registry import register_schedule

NEON = x86.Isa((4,), 32)
MAX_ROWS = 8         # rows of x sharing one read of the spectra
MAX_VECTORS = 4


def widest_lanes(n: int, isa: x86.Isa) -> int:
    """The widest vector of the ISA that divides n (1: scalar)."""
    return (x86.usable_lanes(n, isa) or [1])[-1]


def tile(M: int, p: int, isa: x86.Isa) -> tuple[int, int, int]:
    """(lanes, rows, vectors) of the register tile: the widest lanes dividing p, the most rows (the
    spectra read once per row tile), then the most vectors, within the accumulators."""
    lanes = widest_lanes(p, isa)
    rows = largest_divisor(M, min(MAX_ROWS, isa.max_accumulators // 2))
    vectors = largest_divisor(p // lanes, min(MAX_VECTORS, isa.max_accumulators // (2 * rows)))
    return lanes, rows, vectors


def apply(sch: s_tir.Schedule, block, isa: x86.Isa) -> None:
    m, t, f, i, j = sch.get_loops(block)
    M, p = int(sch.get(m).extent), int(sch.get(i).extent)
    lanes, rows, vectors = tile(M, p, isa)
    cw = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    io, iv, il = sch.split(i, [None, vectors, lanes])
    mo, mi = sch.split(m, [None, rows])
    sch.reorder(f, io, mo, j, mi, t, iv, il)
    sch.parallel(sch.fuse(f, io))
    sch.reverse_compute_at(cw, mo)
    for loop in (mi, t, iv):
        sch.unroll(loop)
    sch.vectorize(il)
    sch.decompose_reduction(block, j)
    wb = sch.get_loops(cw)
    sch.vectorize(sch.split(wb[-1], [None, lanes])[-1])

    spectrum = sch.get_sblock(SPECTRUM)
    sm, st, *_ = sch.get_loops(spectrum)
    sch.parallel(sch.fuse(sm, st))

    samples = sch.get_sblock(SAMPLES)
    scw = sch.cache_write(samples, 0, ACCUMULATOR_SCOPE)
    last = inline_epilogue(sch, scw)       # the reshape, bias and activation after the layer
    om, oo, tf = sch.get_loops(samples)
    b = int(sch.get(block).annotations["circulant_block"])
    olanes = widest_lanes(b, isa)
    o_, ol = sch.split(oo, [None, olanes])
    sch.reorder(om, o_, tf, ol)
    outer = sch.fuse(om, o_)
    sch.parallel(outer)
    sch.reverse_compute_at(last, outer)
    sch.vectorize(ol)
    sch.decompose_reduction(samples, tf)


@register_schedule(CIRCULANT_DENSE, "cpu")
def schedule_x86(sch: s_tir.Schedule, block, target: Target) -> None:
    apply(sch, block, x86.isa_of(target))


@register_schedule(CIRCULANT_DENSE, "arm_cpu")
def schedule_neon(sch: s_tir.Schedule, block, target: Target) -> None:
    apply(sch, block, NEON)
