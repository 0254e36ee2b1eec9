"""The int8 roof kernel the benchmarks report fractions of (schedules/vpdpbusd_roof_x86)."""
import numpy as np
import tvm

from schedules.vpdpbusd_roof_x86 import ACCUMULATORS, LANES, vpdpbusd_roof_x86
from tvm_patterns.passes.register_tiles import tir_pipeline

from .test_int8_filter_block_conv import HOST, VNNI, require_vnni


def build(threads, steps, target):
    f = vpdpbusd_roof_x86(threads, steps)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target))


def test_every_accumulator_sums_the_bytes_of_every_step_so_no_instruction_is_folded_away():
    require_vnni()
    threads, steps = 2, 1000
    out = tvm.runtime.tensor(np.zeros((threads, ACCUMULATORS, LANES), "int32"))
    build(threads, steps, HOST)["main"](out)
    s = np.arange(steps)
    step_bytes = sum(((s >> (8 * k)) & 255).sum() for k in range(4))
    expected = np.arange(threads)[:, None, None] + np.arange(ACCUMULATORS)[None, :, None] + step_bytes
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(expected, out.shape))


def test_the_roof_loop_is_register_resident_vpdpbusd():
    asm = build(1, 1000, VNNI).mod.inspect_source("asm")
    loop = [line for line in asm.splitlines() if "vpdpbusd" in line]
    assert len(loop) >= ACCUMULATORS
    assert not [line for line in loop if "(" in line]                    # no operand from memory
    assert "vmovdqu64\t%zmm" not in asm.split("vpdpbusd", 1)[1].split("jne", 1)[0]   # no spill in the loop
