"""Shared pieces of the tuning tests: a tiny pruned model, a fast tuning call, a real RPC tracker."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch
import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

import tvm_patterns as tp
from schedules import pattern_conv2d_nchw_x86 as x86
from tvm_patterns.compress import pattern_prune
from tvm_patterns.tuning import extract_tasks, measure, tune
from tvm_patterns.tuning.database import RECORDS
from tvm_patterns.tuning.tasks import replayed, sampled
from tvm_patterns.tuning.tasks import save_constants

FAST = ms.runner.EvaluatorConfig(number=1, repeat=2, min_repeat_ms=1)


# Columns of the test models' images: rows of 3 of the host's widest vectors, where the host build uses
# the offset-table pattern kernel (1, 2 zmm and 4+ vectors take per-pattern code).
OFFSET_TABLE_WIDTH = 3 * x86.isa_of(tp.targets.host()).lanes[-1]


def tiny_model():
    """A dense first conv (3 input channels are never pruned) and a pattern conv (the offset-table
    kernel): two tasks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()).eval()
    pattern_prune(model)
    x = torch.randn(1, 3, 12, OFFSET_TABLE_WIDTH)
    return model, x, tp.from_pytorch(model, x)


def quick_tune(mod, log_dir, trials=4, verify_rounds=2, **kw):
    return tune(mod, trials=trials, log_dir=str(log_dir), evaluator=FAST, population=16,
                verify_rounds=verify_rounds, **kw)


def built_defaults(mod, tmp_path, picks):
    """The default points of ``mod``'s host tasks at positions ``picks`` (repeats allowed) built for
    the runners, their real inputs saved: (tasks, inputs .npz path, builder results, runner inputs)."""
    target = tp.targets.host()
    tasks, _ = extract_tasks(mod, target)
    inputs = str(tmp_path / "inputs.npz")
    save_constants(tasks, inputs)
    builder = ms.builder.LocalBuilder(max_workers=1, f_build=measure.build_artifact)
    built, runner_inputs, _ = measure.build_inputs(
        builder, [(tasks[i].default_schedule(target), tasks[i]) for i in picks], target, "cpu")
    return tasks, inputs, built, runner_inputs


def write_log(db_dir, target, points, secs=1e-3) -> None:
    """A tuning log under ``db_dir`` with one record per (task, scheduled point), measured ``secs``."""
    os.makedirs(db_dir, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    for task, sch in points:
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.mod), [secs], target, ArgInfo.from_prim_func(task.mod["main"])))


def points_of(spaces, hand, func) -> list:
    """(index, replayed schedule) of each design space that, replayed with the sampling decisions of
    ``hand`` (a hand-scheduled Schedule of ``func``), gives exactly the hand-scheduled function."""
    hand_sampled = sampled(hand.trace)
    found = []
    for n, space in enumerate(spaces):
        if [i.kind.name for i, _ in sampled(space.trace)] != [i.kind.name for i, _ in hand_sampled]:
            continue
        point = replayed(space, [d for _, d in hand_sampled], func)
        if tvm_ffi.structural_equal(point.mod, hand.mod):
            found.append((n, point))
    return found


def record_lines(db_dir) -> list[str]:
    path = os.path.join(db_dir, RECORDS)
    return open(path).read().splitlines() if os.path.exists(path) else []


def tuned_error(model, x, mod, log, **build_kw) -> float:
    ex = tp.build(mod, tuning_log=str(log), **build_kw)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process_group(args: list[str]):
    """A child in a session of its own; the whole group (its PopenWorker children too) is killed at the end."""
    p = subprocess.Popen([sys.executable, *args], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield p
    finally:
        kill_group(p)


def kill_group(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def wait_for_server(tracker_port: int, key: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(Exception):
            summary = tvm.rpc.connect_tracker("127.0.0.1", tracker_port).summary()
            if any(key in str(s.get("key", "")) for s in summary.get("server_info", [])):
                return
        time.sleep(0.5)
    raise TimeoutError(f"no RPC server with key {key!r} registered at the tracker")


@contextlib.contextmanager
def tracker():
    port = free_port()
    with process_group(["-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                        "--port-end", str(port + 1), "--silent"]) as p:
        yield port, p


@contextlib.contextmanager
def rpc_server(tracker_port: int, key: str):
    port = free_port()
    with process_group(["-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                        "--port-end", str(port + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                        "--key", key, "--silent"]) as p:
        wait_for_server(tracker_port, key)
        yield p
