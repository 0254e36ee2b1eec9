"""An emulated aarch64 TVM RPC device, so cross-compiled ARM code really runs on this machine.

    from tvm_patterns.devices.emulated_arm import emulated_device
    tp.export_library(tp.build(mod, tp.targets.arm_cpu()), "m.so", tp.targets.arm_cpu())
    with emulated_device() as dev:
        out = dev.run_model("m.so", x)

``build_runtime()`` cross-builds the TVM runtime and an RPC server from the wheels' sources (once,
cached); ``EmulatedDevice`` runs it under ``qemu-aarch64``; ``RPCTracker`` provides a local
tracker for the tuning flow. Needs Debian's g++-aarch64-linux-gnu, qemu-user and make.
"""
from .build import build_runtime, default_cache_dir
from .device import (DEFAULT_KEY, EmulatedDevice, RPCTracker, elf_machine, emulated_device,
                     missing_packages)

__all__ = ["build_runtime", "default_cache_dir", "EmulatedDevice", "RPCTracker",
           "emulated_device", "elf_machine", "missing_packages", "DEFAULT_KEY"]
