"""block_dense_opencl / block_conv2d_1x1_opencl: Mali and Adreno (OpenCL) schedules of the
block-punched computes (``tvm_patterns.computes.block_sparse``), one registration per target key.

Up to two kernels per layer (conv; the linear layer has no h):

    pack kernel:  one work item per element of the strided / transposed input ``xp`` (when there is one)
    main kernel:  work-group = one register-tile of rows (RT of the R rows of a block) of one image x
                  ``work_group`` items along the output plane (h x w / 4)
                  work item  = RT output channels x 4 output pixels (one float4 of ``xp`` per j)
        j < width            -- kept input channels of the block: the same trip count and the same
                                ``col_idx[block, j]`` for the whole work-group (a uniform scalar load)
          r (unrolled) x 4 lanes (float4)   -- RT float4 accumulators in private memory; each input
                                               float4 feeds RT FMAs with one scalar weight each
        write-back: crop / transpose + fused epilogue (bias, residual add, relu); vstore4 when the
                    output is neither cropped nor transposed

The work-group size and RT are sampling instructions (``sample_categorical`` over powers of two not
above the target's ``max_num_threads``, ``sample_perfect_tile`` over the divisors of R): the hand
schedules fix them to the presets, ``design_space`` leaves them to MetaSchedule. A group that does
not divide the plane (e.g. 16 items for 5x2 float4s) predicates every statement of the tile and keeps
the accumulators in a private array; groups that divide it are often tiny (7x7 outputs: 2 items):
which one wins is the tuner's to measure.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import tvm
from tvm import s_tir

from tvm_patterns.computes.block_sparse import CONV_BLOCK, DENSE_BLOCK, MAIN_BLOCKS, PACK_SUFFIX

from .block_sparse_x86 import block_loops, write_back
from .pattern_conv2d_nchw_opencl import bind_flat
from .pattern_conv2d_nchw_x86 import categorical_knob, perfect_tile, unroll_knob
from .registry import register_schedule

VECTOR = 4          # float4: Wp (the padded output width / token count) is a multiple of 8
MAX_ROWS = 8        # RT: private float4 accumulators per work item
MIN_GROUP = 8       # the smallest work-group the space samples (when the plane allows it)
PACK_GROUP = 64     # work items per work-group of the pack kernel


@dataclass(frozen=True)
class Knobs:
    rows: int             # RT: output channels of a block per work item (divides R; at most the largest divisor)
    work_group: int       # work items per work-group of the main kernel (a power of two)
    pack_group: int = PACK_GROUP   # work items per work-group of the pack kernel (not sampled)
    unroll: int = 0       # pragma_auto_unroll_max_step of the j loop (one of UNROLL_STEPS)


# Mali (Bifrost/Valhall): 128-bit vector ALUs want float4; 64-item groups keep registers per item high.
MALI = Knobs(rows=4, work_group=64)
# Adreno: waves of 64/128 lanes; fewer registers per item for more items in flight, larger groups.
ADRENO = Knobs(rows=2, work_group=128)


def thread_limit(target) -> int:
    if target is None:
        target = tvm.target.Target.current(allow_none=True)
    if target is None:
        raise ValueError("the OpenCL block-sparse schedules need a target (for max_num_threads)")
    return int(target.attrs.get("max_num_threads", 256))


def _pow2_ceil(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def group_sizes(plane: int, limit: int) -> list[int]:
    """Work-group sizes of the space: powers of two from MIN_GROUP up to the limit, none larger than
    the plane needs (an item per float4 of it)."""
    cap = 1 << (min(limit, _pow2_ceil(plane)).bit_length() - 1)
    low = min(MIN_GROUP, cap)
    return [1 << i for i in range(low.bit_length() - 1, cap.bit_length())]


def _bound(sch: s_tir.Schedule, block) -> bool:
    return any(sch.get(loop).thread_binding is not None for loop in sch.get_loops(block))


def apply(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    """``knobs`` None samples RT, the work-group size and the unroll step; otherwise they are the
    fixed decisions of the same sampling instructions."""
    limit = thread_limit(target)
    R = int(sch.get(block).annotations["block_rows"])
    pack_group = min(knobs.pack_group if knobs else PACK_GROUP, limit)
    for p in sch.get_producers(block):
        if sch.get(p).name_hint.endswith(PACK_SUFFIX):
            bind_flat(sch, p, pack_group)
    conv, (n, k, h, w, j) = block_loops(sch, block, VECTOR)

    wb, plain = write_back(sch, block, "local")   # private memory (registers) of a work-item
    kb, kr = sch.split(k, [None, R])
    kro, kri = perfect_tile(sch, kr, knobs and knobs.rows, MAX_ROWS)
    wo, wv = sch.split(w, [None, VECTOR])
    if conv:
        sch.reorder(n, kb, kro, h, wo, j, kri, wv)
        plane = sch.fuse(h, wo)
    else:
        sch.reorder(n, kb, kro, wo, j, kri, wv)
        plane = wo
    sizes = group_sizes(int(sch.get(plane).extent), limit)
    wanted = None if knobs is None else min(knobs.work_group, sizes[-1])
    if wanted is not None and wanted not in sizes:
        raise ValueError(f"work_group {knobs.work_group}: not a power of two in {sizes} "
                         f"(max_num_threads {limit})")
    group = categorical_knob(sch, sizes, wanted, "work_group")
    po, tx = sch.split(plane, [None, group])
    bx = sch.fuse(n, kb, kro, po)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    # Unit loops kept: the write-back's loop count must not depend on the sampled tiles.
    sch.reverse_compute_at(wb, tx, preserve_unit_loops=True)
    sch.unroll(kri)
    sch.vectorize(wv)
    unroll_knob(sch, j, knobs and knobs.unroll)
    sch.decompose_reduction(block, j)
    wb_loops = sch.get_loops(wb)
    if plain:   # [RT, 1, 4] (conv) straight to the output: vstore4
        for loop in wb_loops[2:-1]:
            sch.unroll(loop)
        sch.vectorize(wb_loops[-1])
    else:       # cropped (predicated) or transposed write-back: scalar, unrolled
        for loop in wb_loops[2:]:
            sch.unroll(loop)
    # Elementwise stages that could not be fused (several consumers): kernels of their own.
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        if not _bound(sch, b):
            bind_flat(sch, b, pack_group)


def design_space(sch: s_tir.Schedule, target=None) -> list[s_tir.Schedule]:
    """MetaSchedule design space of a PrimFunc holding a block-punched conv or linear layer for an
    OpenCL target (default: the current one): RT, work-group size and unroll sampled."""
    name = next(sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
                if sch.get(b).name_hint in MAIN_BLOCKS)
    s = sch.copy()
    apply(s, s.get_sblock(name), target)
    return [s]


def knobs_for(sch: s_tir.Schedule, block, target, base: Knobs) -> Knobs:
    """The preset with RT at most the block's rows (the largest divisor of R not above it) and groups
    never above the target's thread limit."""
    R = int(sch.get(block).annotations["block_rows"])
    rows = max(d for d in range(1, min(base.rows, R) + 1) if R % d == 0)
    limit = thread_limit(target)
    return replace(base, rows=rows, work_group=min(base.work_group, limit), pack_group=min(base.pack_group, limit))


@register_schedule(CONV_BLOCK, "mali")
@register_schedule(DENSE_BLOCK, "mali")
def schedule_mali(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, target, knobs or knobs_for(sch, block, target, MALI))


@register_schedule(CONV_BLOCK, "adreno")
@register_schedule(DENSE_BLOCK, "adreno")
def schedule_adreno(sch: s_tir.Schedule, block, target, knobs: Knobs | None = None) -> None:
    apply(sch, block, target, knobs or knobs_for(sch, block, target, ADRENO))
