"""The TIR pipeline of CPU builds keeps register tiles up to 2 KB on the stack (TVM alone makes every
CPU buffer of 1 KB or more a workspace allocation, which LLVM cannot hold in registers)."""
import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from tvm_patterns.passes.register_tiles import PIPELINE, REGISTER_TILE_BYTES, tir_pipeline
from tvm_patterns.targets import host


def reverse_through(elements: int):
    @T.prim_func
    def f(A: T.Buffer((elements,), "float32"), B: T.Buffer((elements,), "float32")):
        tile = T.alloc_buffer((elements,), "float32")
        for i in range(elements):
            tile[i] = A[i] * 2.0
        for i in range(elements):
            B[i] = tile[i] + tile[elements - 1 - i]
    return tvm.IRModule({"main": f})


@pytest.mark.parametrize("nbytes,on_stack", [(REGISTER_TILE_BYTES, True), (2 * REGISTER_TILE_BYTES, False)])
def test_a_cpu_buffer_up_to_the_register_tile_size_stays_on_the_stack(nbytes, on_stack):
    n = nbytes // 4
    ex = tvm.compile(reverse_through(n), host(), tir_pipeline=PIPELINE)
    assert ("TVMBackendAllocWorkspace" not in ex.mod.inspect_source("ll")) == on_stack
    a = np.random.default_rng(0).standard_normal(n).astype("float32")
    b = tvm.runtime.tensor(np.zeros(n, "float32"))
    ex["main"](tvm.runtime.tensor(a), b)
    np.testing.assert_allclose(b.numpy(), 2 * a + 2 * a[::-1], rtol=1e-6)


def test_tvm_alone_makes_the_same_tile_a_workspace_allocation():
    ex = tvm.compile(reverse_through(REGISTER_TILE_BYTES // 4), host())
    assert "TVMBackendAllocWorkspace" in ex.mod.inspect_source("ll")


def test_cpu_builds_take_the_pipeline_and_gpu_builds_tvms_default():
    assert tir_pipeline(host()) == PIPELINE
    assert tir_pipeline(tvm.target.Target({"kind": "opencl"})) == "default"
