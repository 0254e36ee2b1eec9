"""Shared libraries for the machine a target runs on: the host's compiler, Debian's aarch64 cross
g++, or the Android NDK's clang (``$TVM_NDK_CC``, as ``tvm.support.ndk`` expects).

    tp.export_library(tp.build(mod, tp.targets.arm_cpu()), "model_aarch64.so", tp.targets.arm_cpu())

Only tvm is imported here: MetaSchedule's builder workers run ``LibraryExport`` by value.
"""
from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

AARCH64_LINUX_CXX = "aarch64-linux-gnu-g++"
NDK = "ndk"


def linker_for(target) -> str | None:
    """How to link code for ``target``'s host: None (this machine's compiler),
    ``"aarch64-linux-gnu-g++"`` or ``"ndk"``."""
    from tvm.target import Target

    target = Target(target) if not isinstance(target, Target) else target
    host = target.host if target.host is not None else target
    triple = str(host.attrs.get("mtriple", "") or "")
    if not triple or triple.split("-")[0] == platform.machine():
        return None
    if triple.startswith("aarch64") and "android" in triple:
        return NDK
    if triple.startswith("aarch64") and "linux" in triple:
        return AARCH64_LINUX_CXX
    raise NotImplementedError(f"no linker known for mtriple {triple!r}: export the library yourself "
                              "(executable.export_library(path, fcompile=...))")


def fcompile_for(linker: str | None):
    """``export_library``'s ``fcompile`` for a ``linker_for`` answer (None: TVM's default)."""
    if linker is None:
        return None
    if linker == NDK:
        if not os.environ.get("TVM_NDK_CC"):
            raise RuntimeError("exporting for Android needs TVM_NDK_CC set to the NDK's clang++ "
                               "(e.g. .../bin/aarch64-linux-android28-clang++)")
        from tvm.support import ndk

        return ndk.create_shared
    from tvm.support import cc

    # A fresh compiler per export: cross_compiler's option list accumulates across calls.
    return cc.cross_compiler(linker)


def export_library(executable, path: str | os.PathLike, target) -> Path:
    """Export what ``tvm_patterns.build`` (or ``tvm.compile``) made for ``target`` as a .so for
    the machine that target runs on."""
    return _export(executable, Path(path), linker_for(target))


def _export(executable, path: Path, linker: str | None) -> Path:
    fcompile = fcompile_for(linker)
    if fcompile is None:
        executable.export_library(str(path))
    else:
        executable.export_library(str(path), fcompile=fcompile)
    return path


class LibraryExport:
    """MetaSchedule ``LocalBuilder``'s ``f_export``: a .so linked for the device (the default is a
    tar, which only a device with its own compiler can load)."""

    def __init__(self, linker: str | None):
        self.linker = linker

    def __call__(self, mod) -> str:
        return str(_export(mod, Path(tempfile.mkdtemp(), "tvm_tmp_mod.so"), self.linker))
