"""The "pattern" sparse kind: 3x3 conv2d whose kernels each fit one pattern of a library."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from tvm import relax
from tvm.target import Target

from schedules import depthwise_pattern_conv2d_nchw_x86 as depthwise
from schedules import pattern_conv2d_by_pattern_x86 as by_pattern
from schedules import pattern_conv2d_nchw_x86 as x86
from schedules.registry import find_schedule
from tvm_patterns.computes.pattern_conv2d import (BY_PATTERN_BLOCK, DEPTHWISE_BLOCK, MAIN_BLOCK, PatternConvGeometry,
                                                  depthwise_pattern_conv2d, pattern_conv2d, pattern_conv2d_by_pattern)
from tvm_patterns.sparsity import (NotPatternSparse, PatternLibrary, kernel_tables, pack, pattern_tables,
                                   tap_offsets)

from .expand_depthwise import DEPTHWISE_ATTR, geometry_attr
from .registry import (CHECKED_BY_PLAN, LAYER_ATTR, LayerContext, LeaveDense, Plan, constant_weight, number, one_of,
                       register_sparse_kind, static_shape)

DEFAULT_MAX_DENSITY = 0.5   # rewrite when at most half the dense MACs remain
# "offsets": runtime tap offsets (every target); "patterns": per-pattern code with compile-time taps
# (x86 and ARM CPUs); "depthwise": a depthwise conv's taps per channel, its padded plane made per
# channel (CPUs); "auto": depthwise for depthwise convs on x86 (docs/design.md#depthwise-planes), else
# per-pattern where the x86 schedule prefers it (by_pattern.preferred).
IMPLEMENTATIONS = ("auto", "offsets", "patterns", "depthwise")
INDEX_LIMIT = 2 ** 31       # the kernels index their padded input with int32


def is_depthwise(conv_weight: np.ndarray, groups: int) -> bool:
    """A conv whose every filter has one kernel, on its own channel."""
    return groups > 1 and conv_weight.shape[1] == 1 and conv_weight.shape[0] == groups


def implementation(ctx: LayerContext, geom: PatternConvGeometry, depthwise_conv: bool = False) -> str:
    """"offsets", "patterns" or "depthwise" for this layer on the current target (option
    ``implementation``)."""
    choice = ctx.options.get("implementation", "auto")
    target = Target.current(allow_none=True)
    if choice == "patterns" and (target is None or find_schedule(BY_PATTERN_BLOCK, target) is None):
        raise ValueError(f"layer {ctx.name}: the per-pattern implementation has a schedule for x86 and ARM "
                         f"CPUs only, not {target}")
    if choice == "depthwise":
        if not depthwise_conv:
            raise LeaveDense("the depthwise implementation takes depthwise convs only")
        if target is None or find_schedule(DEPTHWISE_BLOCK, target) is None:
            raise ValueError(f"layer {ctx.name}: the depthwise implementation has a schedule for CPUs only, "
                             f"not {target}")
    if choice == "auto":
        if depthwise_conv and x86.is_x86(target):
            return "depthwise"
        return "patterns" if by_pattern.preferred(geom.out_w_padded, target) else "offsets"
    return choice


def depthwise_tables(w: np.ndarray, geom: PatternConvGeometry) -> tuple:
    """(offset, value) [C, taps] of a depthwise weight [C, 1, 3, 3]: each channel's nonzero taps in
    row order (flat offsets in its padded plane), zeros past them; taps = the most of one channel."""
    nonzero = [np.flatnonzero(w[c, 0]) for c in range(w.shape[0])]
    taps = max(1, max(len(n) for n in nonzero))
    offset = np.zeros((w.shape[0], taps), dtype="int32")
    value = np.zeros((w.shape[0], taps), dtype="float32")
    for c, where in enumerate(nonzero):
        offset[c, :len(where)] = (where // 3) * geom.row + np.asarray(geom.columns)[where % 3]
        value[c, :len(where)] = w[c, 0].reshape(-1)[where]
    return offset, value


def check_conv_attrs(attrs, weight_shape, grouped: bool = False) -> tuple:
    """(strides, padding) of a conv2d we can run (``grouped``: any groups, else groups=1 only), or
    LeaveDense naming the unsupported attribute."""
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        raise LeaveDense(f"layout {attrs.data_layout}/{attrs.kernel_layout}/{attrs.out_layout} is not NCHW/OIHW")
    if int(attrs.groups) != 1 and not grouped:
        raise LeaveDense(f"groups={int(attrs.groups)} (only groups=1 is rewritten)")
    dilation = [int(d) for d in attrs.dilation]
    if dilation != [1, 1]:
        raise LeaveDense(f"dilation={dilation} (only 1 is rewritten)")
    strides = tuple(int(s) for s in attrs.strides)
    if any(s not in (1, 2) for s in strides):
        raise LeaveDense(f"strides={list(strides)} (only 1 and 2 are rewritten)")
    if attrs.out_dtype is not None and str(attrs.out_dtype) not in ("", "void", "float32"):
        raise LeaveDense(f"out_dtype={attrs.out_dtype} (only float32)")
    return strides, tuple(int(p) for p in attrs.padding)


def ungrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's weight [K, C / groups, 3, 3] as the block-diagonal weight [K, C, 3, 3] of the
    same conv with groups=1: each filter's kernels on its own group's channels, zeros elsewhere (a
    depthwise conv's filter k has its one kernel on channel k)."""
    if groups == 1:
        return w
    K, cg = w.shape[:2]
    full = np.zeros((K, cg * groups, *w.shape[2:]), dtype=w.dtype)
    for g in range(groups):
        rows = slice(g * K // groups, (g + 1) * K // groups)
        full[rows, g * cg:(g + 1) * cg] = w[rows]
    return full


def pack_with_library(w: np.ndarray, library: PatternLibrary | None):
    """(library, packed weight), or LeaveDense. Without a library: PatDNN's, else the patterns the
    weight itself uses (a model pruned with a library fitted to its weights, as ``oneshot_prune``
    and ``ADMMPruner`` fit one, is recognised without being told it)."""
    try:
        lib = library or PatternLibrary.patdnn()
        return lib, pack(w, lib)
    except NotPatternSparse as e:
        reason = e
    own = None if library is not None else PatternLibrary.of_weight(w)
    if own is not None:
        try:
            return own, pack(w, own)
        except NotPatternSparse:
            pass
    raise LeaveDense(f"not pattern-sparse: {reason}")


@dataclasses.dataclass(frozen=True)
class PatternConv:
    """A pattern-sparse 3x3 conv2d call as the pattern kinds see it."""

    weight: np.ndarray             # [K, C / groups, 3, 3], as imported
    groups: int
    library: PatternLibrary
    packed: object                 # PackedPatternConv of the block-diagonal [K, C, 3, 3] weight
    geom: PatternConvGeometry      # vector width and row alignment of the current target


def pattern_conv_of(call: relax.Call, ctx: LayerContext, grouped: bool) -> PatternConv:
    """The call's pattern-sparse weight packed with its library and its geometry on the current
    target (``grouped``: grouped and depthwise convs too), or LeaveDense with the reason."""
    w = constant_weight(call)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise LeaveDense(f"kernel {tuple(w.shape[2:])} is not 3x3")
    if w.dtype != np.float32:
        raise LeaveDense(f"weight dtype {w.dtype} (only float32)")
    strides, padding = check_conv_attrs(call.attrs, w.shape, grouped)
    N, C, H, W = static_shape(call.args[0])
    if call.args[0].ty.dtype != "float32":
        raise LeaveDense(f"input dtype {call.args[0].ty.dtype} (only float32)")
    groups = int(call.attrs.groups)
    library, packed = pack_with_library(ungrouped(w, groups), ctx.options.get("library"))
    target = Target.current(allow_none=True)
    geom = PatternConvGeometry(N, C, H, W, w.shape[0], strides, padding)
    geom = dataclasses.replace(geom, vector_width=x86.row_lanes(geom.out_hw[1], target),
                               align=x86.row_alignment(geom.out_hw[1], strides, target))
    return PatternConv(w, groups, library, packed, geom)


def check_index_limit(geom: PatternConvGeometry) -> None:
    if geom.N * geom.pad_size >= INDEX_LIMIT:
        raise LeaveDense(f"padded input of {geom.N * geom.pad_size} elements needs 64-bit indices (int32 only)")


@register_sparse_kind("pattern", ["relax.nn.conv2d"],
                      options={"library": CHECKED_BY_PLAN, "max_density": number(0),
                               "implementation": one_of(*IMPLEMENTATIONS)})
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    conv = pattern_conv_of(call, ctx, grouped=True)
    w, groups, library, packed, geom = conv.weight, conv.groups, conv.library, conv.packed, conv.geom
    max_density = ctx.options.get("max_density", DEFAULT_MAX_DENSITY)
    density = packed.mac_density() * groups           # of the grouped conv's own MACs
    if density > max_density:
        raise LeaveDense(f"MAC density {density:.2f} is above {max_density:.2f}: dense is faster")
    check_index_limit(geom)
    N, C = geom.N, geom.C
    impl = implementation(ctx, geom, is_depthwise(w, groups))
    if impl == "depthwise":
        geom = dataclasses.replace(geom, align=0, row_tile=depthwise.ROWS)
        compute = functools.partial(depthwise_pattern_conv2d, geom=geom)
        arrays, name = depthwise_tables(w, geom), DEPTHWISE_BLOCK
    elif impl == "patterns":
        tables = pattern_tables(packed, geom.plane)
        compute = functools.partial(pattern_conv2d_by_pattern, geom=geom, taps=tap_offsets(library, geom.row, geom.columns))
        arrays, name = (tables.length, tables.channel, tables.value), BY_PATTERN_BLOCK
    else:
        tables = kernel_tables(packed, geom.plane, geom.row, geom.columns)
        compute = functools.partial(pattern_conv2d, geom=geom)
        arrays, name = (tables.length, tables.offset, tables.value), MAIN_BLOCK
    ho, wo = geom.out_hw
    macs_dense = N * w.shape[0] * (C // groups) * 9 * ho * wo

    attrs = {"op_pattern": 4}          # kOutEWiseFusable: bias/relu fuse after it
    if impl == "depthwise":             # what ExpandDepthwiseFusion needs to fuse a 1x1 conv into it
        attrs.update({DEPTHWISE_ATTR: geometry_attr(geom), LAYER_ATTR: ctx.name})

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return bb.call_te(compute, call.args[0], *(relax.const(a) for a in arrays), primfunc_name_hint=name,
                          primfunc_attrs=attrs)

    return Plan(emit=emit,
                summary=f"{library.size}x{library.taps} patterns, {packed.nnz_kernels}/{w.shape[0] * C // groups} kernels"
                        f"{f' ({groups} groups)' if groups > 1 else ''}, "
                        f"{1 / max(density, 1e-9):.1f}x fewer MACs, {impl} implementation",
                macs_dense=macs_dense, macs_sparse=int(round(macs_dense * density)),
                weight_bytes_packed=sum(a.nbytes for a in arrays))
