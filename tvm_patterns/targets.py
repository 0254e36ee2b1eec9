"""Target presets (TVM 0.27 targets are JSON dicts)."""
from __future__ import annotations

import os

from tvm.target import Target

# cpu name -> (mcpu, default core count) for named boards.
ARM_BOARDS = {
    "rasp4b": ("cortex-a72", 4),
    "rk3399": ("cortex-a72", 2),      # the two big cores
    "snapdragon855": ("cortex-a76", 4),  # the 1+3 big/medium A76 cores
}


# x + 0.0 == x only up to the sign of zero: with nsz LLVM drops the additions of zero that a
# guarded reduction leaves behind for skipped table rows, so the j loop really ends at the row's length.
LLVM_FLAGS = {"fast-math-nsz": True}
# Functions start on a 64-byte line, so a hot loop sits at the same offset in a fetch line whether the
# code runs JIT-compiled in this process or from an exported .so (docs/design.md#function-alignment).
HOST_LLVM_FLAGS = {**LLVM_FLAGS, "cl-opt": ["-align-all-functions:int=6"]}


def host(num_cores: int | None = None) -> Target:
    """The machine this runs on, with its real mcpu (``mcpu: native`` is rejected by TVM's LLVM)."""
    detected = Target.from_device("cpu").export()
    cores = num_cores or int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    return Target({"kind": "llvm", "mcpu": detected["mcpu"], "num-cores": cores, **HOST_LLVM_FLAGS})


def arm_cpu(cpu: str = "cortex-a76", cores: int = 4, triple: str = "aarch64-linux-gnu") -> Target:
    """An aarch64 CPU with NEON; ``cpu`` is an LLVM mcpu or one of ``ARM_BOARDS``."""
    if cpu in ARM_BOARDS:
        cpu, default_cores = ARM_BOARDS[cpu]
        cores = cores or default_cores
    return Target({"kind": "llvm", "mtriple": triple, "mcpu": cpu, "mattr": ["+neon"],
                   "keys": ["arm_cpu", "cpu"], "device": "arm_cpu", "num-cores": cores, **LLVM_FLAGS})


def _arm_host(triple: str) -> dict:
    return {"kind": "llvm", "mtriple": triple, "mattr": ["+neon"]}


def mali(max_threads: int = 256, triple: str = "aarch64-linux-gnu") -> Target:
    """An ARM Mali GPU through OpenCL (no tag exists in TVM, so the dict is spelled out)."""
    return Target({"kind": "opencl", "device": "mali", "keys": ["mali", "opencl", "gpu"],
                   "max_num_threads": max_threads, "max_threads_per_block": max_threads,
                   "thread_warp_size": 1, "host": _arm_host(triple)})


def adreno(triple: str = "aarch64-linux-android") -> Target:
    """A Qualcomm Adreno GPU through OpenCL (TVM's own tag; the "adreno" TIR pipeline follows)."""
    return Target({"tag": "qcom/adreno-opencl", "host": _arm_host(triple)})


PRESETS = {"host": host, "arm_cpu": arm_cpu, "mali": mali, "adreno": adreno}


def as_target(target) -> Target:
    """A target as a ``tvm.target.Target``, from a Target, a dict, a preset name (``by_name``) or a
    TVM target string ("llvm -mcpu=znver4"); None is ``host()``."""
    if target is None:
        return host()
    if isinstance(target, Target):
        return target
    if isinstance(target, str) and target in PRESETS:
        return by_name(target)
    if isinstance(target, (str, dict)):
        try:
            return Target(target)
        except Exception as e:  # noqa: BLE001  TVM's own message says what is wrong with it
            raise ValueError(f"target {target!r} is not a TVM target ({str(e).strip().splitlines()[-1]}); "
                             f"give a tvm.target.Target, a dict, one of {sorted(PRESETS)} or a target string") from None
    raise ValueError(f"target must be a tvm.target.Target, a dict or a string, not {type(target).__name__}")


def by_name(name: str) -> Target:
    """``host`` | ``arm_cpu`` | ``mali`` | ``adreno`` -> Target."""
    if name not in PRESETS:
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def target_name(target: Target) -> str:
    """A short, file-system safe name (used for tuning_logs/<name>/)."""
    t = target.export()
    if t["kind"] == "opencl":
        return "adreno" if "adreno" in t.get("keys", []) else "mali"
    if "aarch64" in t.get("mtriple", "") or "arm" in t.get("mtriple", ""):
        return f"arm_cpu-{t.get('mcpu', 'generic')}"
    return f"host-{t.get('mcpu', 'generic')}"
