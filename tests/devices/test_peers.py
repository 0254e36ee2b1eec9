"""The peers benchmark: every engine's output checked, missing peers reported as rows, disturbed
rounds told apart (scripts/bench_peers.py, tvm_patterns.devices.peers, devices.timing)."""
from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tvm_patterns.devices import peers
from tvm_patterns.devices.timing import Rounds, measure_rounds

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_peers.py"
IN_PROCESS = [name for name, e in peers.ENGINES.items() if not e.venv_packages]
IN_VENVS = [name for name, e in peers.ENGINES.items() if e.venv_packages]


def bench_peers():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def installed(name: str) -> bool:
    return importlib.util.find_spec(peers.ENGINES[name].module) is not None


def test_every_engine_on_a_small_network_is_a_checked_row_or_says_why_not(tmp_path):
    out = tmp_path / "peers.csv"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--nets", "resnet18", "--image-size", "32", "--rounds", "3",
                           "--threads", "1", "--csv", str(out)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TVM_PATTERNS_PEERS_DIR": str(tmp_path / "no-venvs")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["network", "variant", "engine", "version", "median_ms", "p10_ms", "p90_ms",
                             "speedup_vs_pytorch", "max_rel_err", "rounds", "disturbed_rounds", "cpu", "threads",
                             "error"]
    got = {(r["variant"], r["engine"]): r for r in rows}
    ours = [("dense", "pytorch"), ("dense", "tvm-dense"), ("compressed", "pytorch"), ("compressed", "tvm-dense"),
            ("compressed", "tvm-patterns"), ("compressed", "tvm-patterns-int8")]
    for key in ours + [(v, e) for v in ("dense", "compressed") for e in IN_PROCESS if installed(e)]:
        r = got[key]
        assert r["error"] == "", (key, r["error"])
        # bfloat16 and int8 engines: within the demo's tolerance of int8 grids; float ones: round-off
        limit = 5e-2 if key[1] == "openvino-default" or key[1].endswith("-int8") else 1e-4
        assert float(r["max_rel_err"]) < limit, (key, r["max_rel_err"])
        assert float(r["p10_ms"]) <= float(r["median_ms"]) <= float(r["p90_ms"]) and float(r["speedup_vs_pytorch"]) > 0
    # nothing to rewrite: the same build as tvm-dense
    assert ("dense", "tvm-patterns") not in got and ("dense", "tvm-patterns-int8") not in got
    for v in ("dense", "compressed"):
        for e in IN_PROCESS:
            if not installed(e):
                assert got[(v, e)]["error"] == "not installed (pip install -e .[peers])"
        for e in IN_VENVS:
            assert got[(v, e)]["error"].startswith("no venv at ") and "--make-venvs" in got[(v, e)]["error"]


def test_a_worker_times_its_engine_beside_pytorch_in_another_process(tmp_path):
    """The path of the peers with venvs of their own, run here with this venv's python."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(5 * 9 * 7, 4)).eval()
    x = torch.randn(1, 3, 9, 7)
    files = peers.export_model(model, x, str(tmp_path))
    engine = next((peers.ENGINES[e] for e in IN_PROCESS if installed(e)), None)
    if engine is None:   # no peer here: the worker's failure comes back as an error naming it
        with pytest.raises(RuntimeError, match="No module named"):
            peers.run_worker(peers.ENGINES["onnxruntime"], files, x.numpy(), 3, 1, str(tmp_path), python=sys.executable)
        return
    result = peers.run_worker(engine, files, x.numpy(), 3, 1, str(tmp_path), python=sys.executable)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(result["output"] - ref).max() <= 1e-5 * np.abs(ref).max() + 1e-6
    assert set(result["samples"]) == {"engine", "pytorch"} and all(len(v) == 3 for v in result["samples"].values())
    assert len(result["foreign"]) == 3 and result["version"]


def test_a_round_that_another_process_keeps_busy_is_flagged_disturbed():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        time.sleep(0.5)
        rounds = measure_rounds({"sleep": lambda: time.sleep(0.05)}, rounds=3, min_time=0.2)
    finally:
        busy.kill()
        busy.wait()
    assert rounds.disturbed() == [0, 1, 2], rounds.foreign


def test_disturbed_rounds_are_dropped_only_while_three_quiet_ones_remain():
    samples = {"a": [1.0, 9.0, 1.1, 1.2, 1.0], "b": [2.0, 2.5, 2.1, 2.0, 2.2]}
    assert Rounds(samples, [0.0, 0.5, 0.0, None, 0.05]).quiet() == {"a": [1.0, 1.1, 1.2, 1.0],
                                                                     "b": [2.0, 2.1, 2.0, 2.2]}
    assert Rounds(samples, [0.5, 0.5, 0.5, 0.0, 0.0]).quiet() == samples   # too few quiet rounds: all kept


@pytest.mark.parametrize("args,message", [
    (["--engines", "onnxruntme"], "--engines: unknown engine(s) onnxruntme"),
    (["--nets", ""], "--nets: no network given"),
    (["--rounds", "2"], "--rounds must be >= 3, got 2"),
])
def test_bench_peers_refuses_bad_arguments_before_any_work(tmp_path, args, message):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--csv", str(tmp_path / "p.csv"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "p.csv").exists()


def test_the_filter_block_variant_runs_beside_the_compressed_one(tmp_path):
    out = tmp_path / "peers.csv"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--nets", "resnet18", "--image-size", "32", "--rounds", "3",
                           "--threads", "1", "--engines", "pytorch,tvm-patterns", "--filter-block", "4",
                           "--csv", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(out, newline="") as f:
        got = {(r["variant"], r["engine"]): r for r in csv.DictReader(f)}
    for variant in ("compressed", "filter_block"):
        r = got[(variant, "tvm-patterns")]
        assert r["error"] == "" and float(r["max_rel_err"]) < 1e-4, r


def test_a_negative_filter_block_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--filter-block", "-4", "--csv", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--filter-block must be >= 0" in proc.stderr


def test_an_int8_engine_reads_the_quantized_model_and_names_what_is_missing_without_it():
    files = peers.Files("m.onnx", "m.pt2")
    assert files.for_engine(peers.ENGINES["onnxruntime"]) is files
    with pytest.raises(ValueError, match="onnxruntime-int8 runs the ONNX model quantized by ONNX Runtime's quantizer"):
        files.for_engine(peers.ENGINES["onnxruntime-int8"])
    quantized = peers.Files("m.onnx", "m.pt2", "m-int8.onnx")
    assert quantized.for_engine(peers.ENGINES["deepsparse-int8"]) == peers.Files("m-int8.onnx", "m.pt2")


def test_the_quantized_model_has_int8_weights_and_only_the_opsets_deepsparse_loads(tmp_path):
    if not installed("onnxruntime"):
        pytest.skip("ONNX Runtime's quantizer is not installed (pip install -e .[peers])")
    import onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 5, 4)).eval()
    x = torch.randn(1, 3, 6, 5)
    files = peers.quantize_onnx(peers.export_model(model, x, str(tmp_path)), [torch.randn(1, 3, 6, 5).numpy()])
    quantized = onnx.load(files.onnx_int8)
    assert quantized.ir_version == 7 and [(o.domain, o.version) for o in quantized.opset_import] == [("", 13)]
    int8_weights = [t for t in quantized.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1]
    assert len(int8_weights) == 2   # the conv's and the linear layer's
    assert files.onnx == str(tmp_path / "model.onnx") and files.pt2 == str(tmp_path / "model.pt2")
