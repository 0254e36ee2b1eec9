"""Tuning through a real RPC tracker and server on 127.0.0.1 (``python -m tvm.exec.rpc_*``)."""
import json
import os
import threading
import time

import numpy as np
import pytest
import torch

import tvm_patterns as tp
from tvm_patterns.tuning import load_database, rpc_runner

from ..tuning_helpers import (kill_group, quick_tune, record_lines, rpc_server, tiny_model, tracker,
                             tuned_error)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def tracker_port():
    with tracker() as (port, _):
        yield port


def test_tuning_through_the_rpc_tracker_writes_records_and_the_tuned_build_matches_torch(tiny, tracker_port, tmp_path):
    model, x, mod = tiny
    with rpc_server(tracker_port, "tiny-cpu"):
        lines = []
        result = quick_tune(mod, tmp_path, trials=2, runner=rpc_runner(f"127.0.0.1:{tracker_port}", "tiny-cpu"),
                            out=lines.append)
    assert not result.stopped and not result.interrupted
    assert any(ln.startswith("verifying:") and ln.endswith("through the runner") for ln in lines), lines
    assert len(result.rows) == 2 and all(r["best_ms"] and r["default_ms"] for r in result.rows)
    assert all(r["best_ms"] <= r["default_ms"] for r in result.rows)     # the default point is a record
    assert all(r["verified"] for r in result.rows)                      # re-measured side by side
    assert len(record_lines(os.path.join(result.log_dir, "best"))) == 2   # one verified pick per kernel
    lines = record_lines(result.log_dir)
    assert len(lines) >= 2 + 4                                         # defaults + 2 trials per task
    assert len(load_database(result.log_dir, _host()).get_all_tuning_records()) == 2   # the verified picks
    assert tuned_error(model, x, mod, tmp_path) < 1e-4


def test_a_server_killed_mid_tuning_is_noticed_in_seconds_stops_cleanly_and_keeps_the_records(tiny, tracker_port, tmp_path):
    model, x, mod = tiny
    with rpc_server(tracker_port, "dying-cpu") as server:
        seen = {}

        def kill_after_first_batch():
            deadline = time.time() + 240
            while time.time() < deadline:
                lines = [ln for d in tmp_path.glob("*") for ln in record_lines(d)]
                if len(lines) >= 2 + 2:                      # the defaults and one measured batch
                    seen["before_kill"] = len(lines)
                    kill_group(server)
                    seen["killed_at"] = time.time()
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_after_first_batch, daemon=True)
        killer.start()
        result = quick_tune(mod, tmp_path, trials=12, trials_per_iter=2,
                            runner=rpc_runner(f"127.0.0.1:{tracker_port}", "dying-cpu"))
        stopped_after = time.time() - seen["killed_at"]
        killer.join()
    assert stopped_after < 20        # the health check between batches, not the 30 s session timeout per candidate
    assert result.stopped.startswith("stopping: no measurement succeeded")
    lines = record_lines(result.log_dir)
    failed = [ln for ln in lines if json.loads(ln)[1][1] == [1e10] or json.loads(ln)[1][1] == [1e10, 1e10]]
    assert len(lines) > seen["before_kill"] and failed               # the failures are recorded too
    db = load_database(result.log_dir, _host())
    assert len(db.get_all_tuning_records()) == len(lines)
    assert tuned_error(model, x, mod, tmp_path) < 1e-4                 # the records kept still build


def _host():
    from tvm_patterns.targets import host

    return host()


def test_tuning_for_arm_on_the_emulated_aarch64_device_through_the_tracker(tiny, tmp_path):
    """The real-board flow, with qemu-user standing in for the board: tune through the tracker
    (builds cross-linked for aarch64), build with the records, export, run on the device."""
    from tvm_patterns import export_library
    from tvm_patterns.devices.emulated_arm import EmulatedDevice, RPCTracker
    from tvm_patterns.targets import arm_cpu, target_name

    model, x, mod = tiny
    target = arm_cpu()
    with RPCTracker() as arm_tracker, EmulatedDevice(tracker=arm_tracker, key="emulated-a76") as dev:
        runner = rpc_runner(f"127.0.0.1:{arm_tracker.port}", "emulated-a76", session_timeout_sec=120)
        result = quick_tune(mod, tmp_path, trials=2, target=target, runner=runner)
        assert not result.stopped and not result.interrupted, result.stopped
        assert all(r["default_ms"] and r["best_ms"] <= r["default_ms"] for r in result.rows)
        assert result.log_dir.endswith(target_name(target))
        assert len(record_lines(result.log_dir)) >= 2 + 4 and all(r["verified"] for r in result.rows)

        lib = export_library(tp.build(mod, target, tuning_log=str(tmp_path)), tmp_path / "tiny.so", target)
        out = dev.run_model(lib, x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4
