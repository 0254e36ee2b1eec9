"""Running a built model on a device behind an RPC tracker: export with the target's linker,
upload, check against a reference, time on the device.

    device = RemoteDevice("10.0.0.2:9190", "rk3399", tp.targets.arm_cpu("rk3399"))
    seconds = device.time(tp.build(mod, target), x, reference_output)
"""
from __future__ import annotations

import os
import socket
import tempfile

import numpy as np
import torch
import tvm
from tvm import relax

from .timing import median
from .export import export_library

RTOL = 1e-3   # the device's output against the reference (relative max error)


def parse_tracker(text: str) -> tuple[str, int]:
    """"HOST:PORT" -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an RPC tracker is HOST:PORT, got {text!r}")
    return host, int(port)


def check_tracker(tracker: str, key: str, timeout: float = 5.0) -> None:
    """Raise ``ConnectionError`` unless the tracker at "HOST:PORT" answers within ``timeout`` seconds
    and a server with ``key`` is registered there (the tracker drops a server whose process died
    at once). Called before long work and between tuning batches: TVM's own connect retries for a
    minute, and a request to a dead device waits out the whole session timeout."""
    host, port = parse_tracker(tracker)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"no RPC tracker answers at {tracker} ({e.strerror or e}): start one with "
                              "python -m tvm.exec.rpc_tracker, or check --rpc-tracker") from None
    servers = tvm.rpc.connect_tracker(host, port).summary().get("server_info", [])
    keys = sorted({str(s.get("key", "")).removeprefix("server:") for s in servers})
    if key not in keys:
        raise ConnectionError(f"no RPC server with key {key!r} at the tracker {tracker} "
                              f"(registered: {', '.join(keys) or 'none'})")


def load_vm(session, library: str | os.PathLike, dev) -> relax.VirtualMachine:
    """Upload a Relax VM library to an RPC session and load it there, on ``dev``."""
    session.upload(str(library))
    return relax.VirtualMachine(session.load_module(os.path.basename(library)), dev)


class RemoteDevice:
    """Models built for ``target``, run on the device behind a tracker (one session each)."""

    def __init__(self, tracker: str, key: str, target, rounds: int = 5, session_timeout: int = 600):
        self.tracker, self.key, self.target = parse_tracker(tracker), key, target
        self.rounds, self.session_timeout = rounds, session_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="tvm_patterns_remote_")
        self._count = 0

    def time(self, executable, x: torch.Tensor, ref: np.ndarray, path: str | None = None) -> float:
        """Median seconds of ``main`` on the device; raises if its output differs from ``ref``.
        ``path``: where the exported library goes (default: a temporary file)."""
        self._count += 1
        path = path or os.path.join(self._tmp.name, f"model{self._count}.so")
        export_library(executable, path, self.target)
        session = tvm.rpc.connect_tracker(*self.tracker).request(self.key, session_timeout=self.session_timeout)
        dev = session.cl(0) if self.target.kind.name == "opencl" else session.cpu(0)
        vm = load_vm(session, path, dev)
        xt = tvm.runtime.tensor(x.numpy(), dev)
        out = vm["main"](xt).numpy()
        err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
        if not err < RTOL:
            raise RuntimeError(f"output on the device {self.key!r} differs from PyTorch (relative max error {err:.1e})")
        return median(vm.time_evaluator("main", dev, number=1, repeat=self.rounds)(xt).results)
