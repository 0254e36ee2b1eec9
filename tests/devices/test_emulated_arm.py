"""Cross-compiled aarch64 code runs on the emulated ARM device (qemu-user + TVM RPC).

The first test builds the aarch64 runtime through the cache (a few minutes, once per machine);
afterwards the whole file takes well under a minute.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import te

from tvm_patterns import export_library, targets
from tvm_patterns.devices.emulated_arm import EmulatedDevice, RPCTracker, build_runtime, elf_machine

from ..conftest import require_emulated_arm

FMLA_4S = re.compile(r"fmla\s+v\d+\.4s")


@pytest.fixture(scope="module")
def server():
    require_emulated_arm()
    return build_runtime()


@pytest.fixture(scope="module")
def matmul_lib(tmp_path_factory):
    """C = A @ B (64x32 @ 32x48) for arm_cpu(), j vectorised by 4 (one NEON register)."""
    M, K, N = 64, 32, 48
    a = te.placeholder((M, K), name="A")
    b = te.placeholder((K, N), name="B")
    k = te.reduce_axis((0, K), name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b, c]))
    blk = sch.get_sblock("C")
    i, j, kk = sch.get_loops(blk)
    jo, ji = sch.split(j, [None, 4])
    sch.reorder(i, jo, kk, ji)
    sch.vectorize(ji)
    sch.decompose_reduction(blk, kk)
    ex = tvm.compile(sch.mod, target=targets.arm_cpu())
    path = export_library(ex, tmp_path_factory.mktemp("arm") / "matmul_aarch64.so", targets.arm_cpu())
    return path, ex, (M, K, N)


def _inputs(M, K, N):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((M, K), dtype=np.float32),
            rng.standard_normal((K, N), dtype=np.float32), np.zeros((M, N), np.float32))


def test_library_is_aarch64_with_neon_fma(matmul_lib):
    path, ex, _ = matmul_lib
    assert elf_machine(path) == "aarch64"
    assert FMLA_4S.search(ex.mod.inspect_source("asm"))
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:  # the shipped binary itself, not only the compiler's listing
        assert FMLA_4S.search(subprocess.run([objdump, "-d", str(path)], capture_output=True,
                                             text=True, check=True).stdout)


def test_kernel_runs_on_emulated_device(server, matmul_lib):
    path, _, shape = matmul_lib
    a, b, c = _inputs(*shape)
    with EmulatedDevice(server=server) as dev:
        remote = dev.connect()
        remote.upload(str(path))
        mod = remote.load_module(path.name)
        rdev = remote.cpu(0)
        ra, rb, rc = (tvm.runtime.tensor(x, rdev) for x in (a, b, c))
        mod["main"](ra, rb, rc)
        np.testing.assert_allclose(rc.numpy(), a @ b, rtol=1e-5, atol=1e-5)
        # time_evaluator runs on the device too (numbers are emulation, not ARM, timings)
        assert mod.time_evaluator("main", rdev, number=2, repeat=1)(ra, rb, rc).mean > 0


def test_kernel_runs_through_tracker(server, matmul_lib):
    path, _, shape = matmul_lib
    a, b, c = _inputs(*shape)
    with RPCTracker() as tracker, EmulatedDevice(tracker=tracker, key="arm-test",
                                                 server=server) as dev:
        assert "arm-test" in tracker.connect().summary()["queue_info"]
        for _ in range(2):  # the server offers itself again after each session
            remote = tracker.connect().request("arm-test", session_timeout=120)
            out = dev.run(path, a, b, c, session=remote)[-1]
            np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
            del remote


def test_relax_vm_over_rpc(server, tmp_path):
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Model:
        @R.function
        def main(x: R.Tensor((8, 16), "float32"), w: R.Tensor((16, 12), "float32"),
                 bias: R.Tensor((12,), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.add(R.matmul(x, w), bias))
                R.output(y)
            return y

    ex = tvm.compile(Model, target=targets.arm_cpu())
    path = export_library(ex, tmp_path / "model_aarch64.so", targets.arm_cpu())
    rng = np.random.default_rng(1)
    x, w, bias = (rng.standard_normal(s, dtype=np.float32) for s in ((8, 16), (16, 12), (12,)))
    with EmulatedDevice(server=server) as dev:
        out = dev.run_model(path, x, w, bias)
    np.testing.assert_allclose(out, np.maximum(x @ w + bias, 0), rtol=1e-5, atol=1e-5)


def test_build_command_exports_a_network_and_runs_it_on_the_device(server, tmp_path, capsys):
    from tvm_patterns.apps import deploy

    out = tmp_path / "resnet18_aarch64.so"
    with RPCTracker() as tracker, EmulatedDevice(tracker=tracker, key="build-a76", server=server):
        assert deploy.main(["--model", "resnet18", "--image-size", "32", "--target", "arm_cpu", "--out", str(out),
                            "--rounds", "2", "--rpc-tracker", f"127.0.0.1:{tracker.port}",
                            "--rpc-key", "build-a76"]) == 0
    assert elf_machine(out) == "aarch64"
    printed = capsys.readouterr().out
    assert "layers sparse" in printed and "on build-a76: matches PyTorch" in printed


def test_a_cached_runtime_build_forgets_its_objects_when_the_sources_moved(tmp_path):
    """make's dependency files and include shim name the sources' absolute paths: after the package
    moved (reinstalled elsewhere, a new venv) they would stop the next build, so they are dropped."""
    from tvm_patterns.devices.emulated_arm.build import forget_objects_of_moved_sources

    obj = tmp_path / "obj"
    obj.mkdir()
    (obj / "a.d").write_text("a.o: /old/place/a.cc\n")
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "support").symlink_to("/old/place/support")
    assert forget_objects_of_moved_sources(tmp_path, [tmp_path / "old"])       # no recorded origin: dropped
    assert not obj.exists() and not (tmp_path / "inc").exists()
    obj.mkdir()                                                                 # built from "old"
    assert not forget_objects_of_moved_sources(tmp_path, [tmp_path / "old"])   # same place: objects kept
    assert obj.exists()
    assert forget_objects_of_moved_sources(tmp_path, [tmp_path / "new"])       # moved: objects dropped
    assert not obj.exists()


def test_an_emulated_cortex_a72_runs_plain_neon_and_refuses_dot_product_instructions(server, matmul_lib, tmp_path):
    """What the int8 tests' Cortex-A72 device stands for: a core without dot product (Raspberry Pi 4)."""
    from tvm.script import tirx as T

    @T.prim_func
    def sdot(a: T.Buffer((16,), "int8"), out: T.Buffer((4,), "int32")):
        T.func_attr({"global_symbol": "main", "tir.noalias": True})
        out[T.ramp(0, 1, 4)] = T.call_llvm_pure_intrin("int32x4", "llvm.aarch64.neon.sdot.v4i32.v16i8",
                                                       T.broadcast(T.int32(0), 4), a[T.ramp(0, 1, 16)],
                                                       a[T.ramp(0, 1, 16)])

    target = targets.arm_cpu("cortex-a76")
    lib = export_library(tvm.compile(tvm.IRModule({"main": sdot}), target=target), tmp_path / "sdot.so", target)
    a = np.arange(16, dtype="int8")
    with EmulatedDevice(server=server) as dev:        # qemu's "max" CPU has dot product
        np.testing.assert_array_equal(dev.run(lib, a, np.zeros(4, "int32"))[-1],
                                      (a.astype(np.int32) ** 2).reshape(4, 4).sum(1))
    with EmulatedDevice(server=server, cpu="cortex-a72") as dev:
        path, _, shape = matmul_lib
        x, y, z = _inputs(*shape)
        np.testing.assert_allclose(dev.run(path, x, y, z)[-1], x @ y, rtol=1e-5, atol=1e-5)
        with pytest.raises(Exception):
            dev.run(lib, a, np.zeros(4, "int32"))


def test_an_unknown_emulated_cpu_is_refused_with_qemus_reason(server):
    with pytest.raises(RuntimeError, match="unable to find CPU model 'cortex-z9'"):
        with EmulatedDevice(server=server, cpu="cortex-z9"):
            pass
