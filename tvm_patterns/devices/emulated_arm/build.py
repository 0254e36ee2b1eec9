"""Cross-build the aarch64 TVM runtime + RPC server once, into a cache directory.

The apache-tvm / apache-tvm-ffi wheels ship the runtime's C++ sources but no build files for them
and no RPC server program; ``cpp/`` holds the missing pieces (support headers, the server's
``main``, a Makefile). The result is one executable, ``tvm_rpc_server``, linked ``-rdynamic``
so that uploaded kernels resolve the runtime's symbols from it.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

CPP_DIR = Path(__file__).resolve().parent / "cpp"
CROSS_CXX = "aarch64-linux-gnu-g++"
SERVER_NAME = "tvm_rpc_server"
# What the build needs on PATH, and the Debian package that brings it.
TOOLS = {CROSS_CXX: "g++-aarch64-linux-gnu", "make": "make"}


def _versions() -> tuple[str, str]:
    return metadata.version("apache-tvm-ffi"), metadata.version("apache-tvm")


def default_cache_dir() -> Path:
    """``$TVM_PATTERNS_ARM_RUNTIME_DIR`` or ``~/.cache/tvm-patterns/aarch64-runtime-<tvm-ffi version>``."""
    env = os.environ.get("TVM_PATTERNS_ARM_RUNTIME_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "tvm-patterns" / f"aarch64-runtime-{_versions()[0]}"


def _source_roots() -> tuple[Path, Path]:
    import tvm
    import tvm_ffi

    return Path(tvm.__file__).resolve().parent, Path(tvm_ffi.__file__).resolve().parent


def _fingerprint() -> str:
    """Changes when our C++ files or the wheels' versions change (then the build is refreshed)."""
    h = hashlib.sha256()
    h.update(repr(_versions()).encode())
    for p in sorted(CPP_DIR.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(CPP_DIR)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def forget_objects_of_moved_sources(cache: Path, roots: list[Path]) -> bool:
    """Remove the cache's object files and include shim when the sources they were built from lie
    elsewhere now (the package reinstalled at another path, a new venv): make's dependency files and
    the shim's links name the old paths and would stop the build ("No rule to make target", a missing
    header). Outputs of no recorded origin go too. Returns whether it removed them."""
    stamp = cache / "source_roots"
    text = "\n".join(str(r) for r in roots)
    outputs = [cache / "obj", cache / "inc"]   # the Makefile's object tree and include shim
    moved = any(p.exists() for p in outputs) and not (stamp.exists() and stamp.read_text() == text)
    if moved:
        for p in outputs:
            shutil.rmtree(p, ignore_errors=True)
    stamp.write_text(text)
    return moved


def missing_tools() -> list[str]:
    """Debian packages whose tools the build lacks (empty when it can run)."""
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})


def build_runtime(cache_dir: str | os.PathLike | None = None, jobs: int = 2,
                  verbose: bool = False) -> Path:
    """Path of the aarch64 ``tvm_rpc_server``, building it first if the cache lacks it.

    A lock file serialises concurrent callers: the second waits and then finds the build done.
    The first build takes a few minutes on 2 cores; later calls return at once.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    server = cache / SERVER_NAME
    stamp = cache / "fingerprint"
    fingerprint = _fingerprint()
    if server.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return server

    missing = missing_tools()
    if missing:
        raise RuntimeError("building the aarch64 TVM runtime needs the Debian packages "
                           f"{', '.join(missing)} (apt-get install {' '.join(missing)})")
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if server.exists() and stamp.exists() and stamp.read_text() == fingerprint:
            return server  # another process built it while we waited
        tvm_root, ffi_root = _source_roots()
        forget_objects_of_moved_sources(cache, [CPP_DIR, tvm_root, ffi_root])
        cmd = ["make", "-f", str(CPP_DIR / "Makefile"), f"-j{jobs}", f"CXX={CROSS_CXX}",
               f"TVM_ROOT={tvm_root}", f"FFI_ROOT={ffi_root}", f"BUILD={cache}"]
        log = cache / "build.log"
        with open(log, "w") as out:
            proc = subprocess.run(cmd, cwd=cache, stdout=None if verbose else out,
                                  stderr=subprocess.STDOUT if not verbose else None)
        if proc.returncode != 0 or not server.exists():
            (cache / "source_roots").unlink(missing_ok=True)   # the next attempt starts from clean objects
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise RuntimeError(f"building the aarch64 TVM runtime failed (log: {log}):\n{tail}")
        stamp.write_text(fingerprint)
    return server
