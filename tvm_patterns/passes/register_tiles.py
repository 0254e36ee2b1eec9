"""The TIR pipeline of CPU builds: TVM's default one, with register tiles kept on the stack.

TVM turns every CPU buffer of 1 KB or more into a ``TVMBackendAllocWorkspace`` allocation, which
LLVM cannot promote to registers: a register tile of that size (16 AVX-512 accumulators) is then
loaded and stored around every FMA. Before the host finalization lowers allocations, this marks the
constant-size CPU buffers up to ``REGISTER_TILE_BYTES`` (the 32 registers of AVX-512 or NEON) to stay
stack allocations, as smaller ones always do; a stack of that size is well within a thread's.
"""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.tirx.compilation_pipeline import get_tir_pipeline, register_tir_pipeline
from tvm_ffi.structural import structural_map

from schedules.pattern_conv2d_nchw_x86 import REGISTER_TILE_BYTES

PIPELINE = "tvm_patterns"
KEEP_ON_STACK = "disable_lower_builtin"   # LowerTVMBuiltin leaves an allocation so marked as it is


def buffer_bytes(buffer) -> int | None:
    """Bytes of a buffer of constant shape (None if a dimension is symbolic)."""
    size = 1
    for dim in buffer.shape:
        if not isinstance(dim, tirx.IntImm):
            return None
        size *= int(dim)
    dtype = tvm.runtime.DataType(str(buffer.dtype))
    return size * dtype.bits * dtype.lanes // 8


def keep_register_tiles_on_stack(mod: tvm.IRModule) -> tvm.IRModule:
    def mark(node: tirx.AllocBuffer):
        nbytes = buffer_bytes(node.buffer)
        if nbytes is None or nbytes > REGISTER_TILE_BYTES or KEEP_ON_STACK in node.annotations:
            return node
        return tirx.AllocBuffer(node.buffer, {**node.annotations, KEEP_ON_STACK: tirx.IntImm("bool", 1)}, node.span)

    return structural_map(mod, [(tirx.AllocBuffer, mark)])


def _pipeline():
    lower, finalize_host, finalize_device = get_tir_pipeline("s_tir")

    def host():
        keep = tvm.transform.module_pass(lambda mod, _ctx: keep_register_tiles_on_stack(mod), opt_level=0,
                                         name="KeepRegisterTilesOnStack")
        return tvm.transform.Sequential([keep, finalize_host()])

    return lower, host, finalize_device


register_tir_pipeline(PIPELINE, _pipeline)


def tir_pipeline(target: tvm.target.Target) -> str:
    """The TIR pipeline ``tvm.compile`` gets for ``target``: ours on CPUs, TVM's default elsewhere."""
    return PIPELINE if target.kind.name == "llvm" else "default"
