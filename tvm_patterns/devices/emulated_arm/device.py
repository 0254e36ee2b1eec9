"""An emulated aarch64 TVM RPC device: the cross-built server under ``qemu-aarch64``.

The host talks to it with plain ``tvm.rpc`` exactly as it would to a board or a phone::

    with EmulatedDevice() as dev:
        remote = dev.connect()
        remote.upload("kernel_aarch64.so")
        f = remote.load_module("kernel_aarch64.so")["main"]

or, for a whole run in one line, ``dev.run(lib_path, *numpy_arrays)``. With an ``RPCTracker`` the
server registers under a key and clients get it through ``tracker.request(key)`` (what
MetaSchedule's ``RPCRunner`` does). Timings under emulation are not ARM timings.
"""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..remote import load_vm
from .build import build_runtime, missing_tools

QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"  # the cross toolchain's libc / libstdc++ for qemu's -L
DEFAULT_KEY = "emulated-aarch64"


def missing_packages() -> list[str]:
    """Debian packages the emulated device needs that are not installed (empty: it can run)."""
    missing = set(missing_tools())
    if shutil.which(QEMU) is None:
        missing.add("qemu-user")
    if not Path(SYSROOT, "lib").is_dir():
        missing.add("g++-aarch64-linux-gnu")
    return sorted(missing)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not accept connections on {host}:{port} within {timeout} s")


def _kill_group(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it forked."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class RPCTracker:
    """``python -m tvm.exec.rpc_tracker`` on a free local port, for the duration of a ``with``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60):
        self.host, self.port, self.timeout = host, port, timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "RPCTracker":
        self.port = self.port or _free_port(self.host)
        # The tracker's PopenWorker children outlive a plain terminate(): own process group.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", self.host,
             "--port", str(self.port), "--port-end", str(self.port + 1), "--silent"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(self.host, self.port, self.proc, self.timeout, "rpc_tracker")
        except BaseException:
            _kill_group(self.proc)
            raise
        return self

    def __exit__(self, *exc) -> None:
        _kill_group(self.proc)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self):
        """A ``tvm.rpc.TrackerSession``: ``.request(key)``, ``.summary()``, ..."""
        from tvm import rpc

        return rpc.connect_tracker(self.host, self.port)


class EmulatedDevice:
    """The aarch64 RPC server under qemu-user, on a free 127.0.0.1 port.

    tracker: an ``RPCTracker``, a ``(host, port)`` pair or None. With a tracker the server
    registers under ``key``; ``connect()`` then goes through the tracker as a tuner would.
    server: path of ``tvm_rpc_server`` (default: ``build_runtime()``, built once and cached).
    cpu: the CPU qemu emulates (``qemu-aarch64 -cpu help``; default qemu's "max", which has every
    extension): e.g. "cortex-a72" to run code on a core without dot product, as a Raspberry Pi 4's.
    """

    def __init__(self, tracker: RPCTracker | tuple[str, int] | None = None,
                 key: str = DEFAULT_KEY, host: str = "127.0.0.1",
                 server: str | os.PathLike | None = None, start_timeout: float = 120, cpu: str | None = None):
        self.tracker_addr = tracker.address if isinstance(tracker, RPCTracker) else tracker
        self.key, self.host = key, host
        self.server = Path(server) if server is not None else None
        self.start_timeout = start_timeout
        self.cpu = cpu
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def log_path(self) -> Path | None:
        """The server's stderr (sessions, loaded modules, errors)."""
        return Path(self._tmp.name, "server.log") if self._tmp else None

    def log(self) -> str:
        p = self.log_path
        return p.read_text(errors="replace") if p and p.exists() else ""

    def __enter__(self) -> "EmulatedDevice":
        missing = missing_packages()
        if missing:
            raise RuntimeError(f"the emulated aarch64 device needs: apt-get install {' '.join(missing)}")
        server = self.server or build_runtime()
        self._tmp = tempfile.TemporaryDirectory(prefix="tvm-patterns-arm-")
        cmd = [QEMU, *(["-cpu", self.cpu] if self.cpu else []), "-L", SYSROOT, str(server), "--host", self.host,
               "--port", "0", "--work-dir", self._tmp.name]
        if self.tracker_addr is not None:
            cmd += ["--tracker", f"{self.tracker_addr[0]}:{self.tracker_addr[1]}", "--key", self.key]
        else:
            cmd += ["--key", self.key]
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        try:
            self.port = self._read_port()
            _wait_port(self.host, self.port, self.proc, self.start_timeout, "emulated RPC server")
            if self.tracker_addr is not None:
                self._wait_registered()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_port(self) -> int:
        # The server prints "listening <host>:<port>" once its socket listens.
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"emulated RPC server did not start; log:\n{self.log()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    raise RuntimeError(f"emulated RPC server exited; log:\n{self.log()}")
                line += chunk
        words = line.decode().split()
        if len(words) != 2 or words[0] != "listening":
            raise RuntimeError(f"unexpected output from the RPC server: {line!r}")
        return int(words[1].rsplit(":", 1)[1])

    def _wait_registered(self) -> None:
        """Wait until the tracker offers this server under its key."""
        from tvm import rpc

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                summary = rpc.connect_tracker(*self.tracker_addr).summary()
                if summary["queue_info"].get(self.key, {}).get("free", 0) > 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulated RPC server exited; log:\n{self.log()}")
            time.sleep(0.2)
        raise TimeoutError(f"server did not register with the tracker; log:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        _kill_group(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def connect(self, session_timeout: float = 0):
        """A ``tvm.rpc.RPCSession`` on the device (through the tracker when there is one).

        The device serves one session at a time, like a board: a second ``connect()`` waits until
        the first session is closed (pass ``session=`` to ``run`` to reuse one).
        """
        from tvm import rpc

        if self.tracker_addr is not None:
            return rpc.connect_tracker(*self.tracker_addr).request(
                self.key, session_timeout=session_timeout)
        return rpc.connect(self.host, self.port, key=self.key, session_timeout=session_timeout)

    def run(self, library: str | os.PathLike, *args: np.ndarray, func: str = "main",
            session=None) -> list[np.ndarray]:
        """Upload an aarch64 library, call ``func`` on copies of ``args`` on the device.

        Returns every argument read back after the call (TVM kernels write their outputs into
        arguments); for a Relax VM library use ``connect()`` and ``relax.VirtualMachine``.
        """
        import tvm

        remote = session or self.connect()
        library = Path(library)
        remote.upload(str(library))
        mod = remote.load_module(library.name)
        dev = remote.cpu(0)
        tensors = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in args]
        mod[func](*tensors)
        return [t.numpy() for t in tensors]

    def run_model(self, library: str | os.PathLike, *inputs: np.ndarray, func: str = "main",
                  session=None) -> np.ndarray:
        """Upload a Relax VM library (``tvm_patterns.build`` + ``export_library``), run ``func``."""
        import tvm


        remote = session or self.connect()
        dev = remote.cpu(0)
        vm = load_vm(remote, library, dev)
        out = vm[func](*(tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs))
        return out.numpy()


@contextlib.contextmanager
def emulated_device(tracker: RPCTracker | tuple[str, int] | None = None,
                    key: str = DEFAULT_KEY) -> Iterator[EmulatedDevice]:
    """``with emulated_device() as dev: out = dev.run(lib, a, b, c)[-1]`` (a pytest fixture body)."""
    with EmulatedDevice(tracker=tracker, key=key) as dev:
        yield dev


def elf_machine(path: str | os.PathLike) -> str:
    """'aarch64', 'x86_64', ... from an ELF header's e_machine field."""
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return {183: "aarch64", 62: "x86_64", 40: "arm", 3: "x86"}.get(machine, str(machine))


__all__ = ["EmulatedDevice", "RPCTracker", "emulated_device", "elf_machine", "missing_packages"]
