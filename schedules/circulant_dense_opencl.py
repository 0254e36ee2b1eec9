"""circulant_dense on Mali and Adreno (OpenCL): the frequency-domain block-circulant linear layer
(``tvm_patterns.computes.circulant``), three kernels, one work item per output element of each:

    spectrum  (m, t, f, j)   the input block's DFT bin: b MACs on the twiddle table
    product   (m, t, f, i)   q complex MACs over the input blocks; neighbouring items take neighbouring
                             output blocks i, so their spectra loads [f, j, i] coalesce and the input
                             bin [m, t, f, j] is one uniform load per work-group
    samples   (m, o)         2F MACs of the inverse DFT, then the fused epilogue (bias, activation)

Each item accumulates in private memory. A layer this shape is bound by reading the spectra once.
"""
from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from tvm_patterns.computes.circulant import CIRCULANT_DENSE, SAMPLES, SPECTRUM

from .block_sparse_opencl import thread_limit
from .pattern_conv2d_nchw_x86 import inline_epilogue
from .registry import register_schedule

WORK_GROUP = 64


def _one_item_each(sch: s_tir.Schedule, block, group: int, epilogue: bool = False) -> None:
    """Bind the block's spatial loops, fused, one work item an element; accumulate in private memory
    (with ``epilogue``: the elementwise consumers written from it)."""
    cw = sch.cache_write(block, 0, "local")
    last = inline_epilogue(sch, cw) if epilogue else cw
    loops = sch.get_loops(block)
    spatial = sch.fuse(*loops[:-1])
    bx, tx = sch.split(spatial, [None, min(group, int(sch.get(spatial).extent))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.reverse_compute_at(last, tx)


def schedule_opencl(sch: s_tir.Schedule, block, target: Target) -> None:
    group = min(WORK_GROUP, thread_limit(target))
    _one_item_each(sch, sch.get_sblock(SPECTRUM), group)
    _one_item_each(sch, block, group)
    _one_item_each(sch, sch.get_sblock(SAMPLES), group, epilogue=True)


register_schedule(CIRCULANT_DENSE, "mali")(schedule_opencl)
register_schedule(CIRCULANT_DENSE, "adreno")(schedule_opencl)
