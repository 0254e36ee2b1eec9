"""docs/results.md and README's results section are what the benchmark CSVs render, never hand-edited."""
from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "render_docs.py"


def render_docs():
    spec = importlib.util.spec_from_file_location("render_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_docs_are_what_the_committed_csvs_render():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_a_demo_csv_renders_as_a_table_of_networks_headed_by_its_machine(tmp_path):
    rd = render_docs()
    path = write(tmp_path / "demo.csv", [
        {"network": "vgg16", "image": "224", "cpu": "Some CPU", "mcpu": "znver4", "threads": "2",
         "pytorch_ms": "200.0", "tvm_dense_ms": "150.0", "tvm_sparse_ms": "50.0",
         "speedup_vs_pytorch": "4.0", "speedup_vs_tvm_dense": "3.0", "mac_ratio": "8.1",
         "max_rel_err": "1.5e-07", "correct": "True"}])
    rows = rd.read(path)
    kind, shown = rd.kind_of(rows, path)
    assert kind == "networks"
    assert rd.machine(rows) == "Some CPU, LLVM mcpu znver4, 2 threads"
    text = rd.table(rows, shown)
    assert text.splitlines()[0].startswith("| network | input | PyTorch ms")
    assert "| vgg16 | 224 | 200 | 150 | 50 | 4 | 3 | 8.1 | 1.50e-07 |" in text


def test_a_csv_of_no_known_benchmark_is_refused_by_name(tmp_path):
    rd = render_docs()
    path = write(tmp_path / "other.csv", [{"a": "1"}])
    with pytest.raises(ValueError, match="other.csv: not a CSV of a known benchmark"):
        rd.kind_of(rd.read(path), path)


def test_the_readme_keeps_exactly_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert text.count("    bash scripts/install.sh && .venv/bin/tvm-patterns demo\n") == 1
    assert text.count("    .venv/bin/python -m pytest -q tests\n") == 1
    assert len(text.splitlines()) <= 175


def test_the_committed_accuracy_table_has_the_tvm_build_as_accurate_as_pytorch_on_every_model():
    """What README says of it: at most one image of the 1,000 apart (a float round-off at a tie)."""
    rows = render_docs().read(ROOT / "docs" / "results" / "accuracy-fashion-mnist.csv")
    assert len(rows) == 2 * (1 + 2 * 6)                       # two networks: dense + 6 methods at 8x and 16x
    assert all(abs(float(r["tvm_accuracy_1k"]) - float(r["torch_accuracy_1k"])) <= 0.1 + 1e-9 for r in rows), rows


def test_an_accuracy_csv_renders_in_short_a_method_a_row(tmp_path):
    rd = render_docs()
    path = write(tmp_path / "acc.csv", [
        {"data": "fashion-mnist", "network": "vgg", "method": "dense", "budget": "", "test_accuracy": "91.0",
         "loss_vs_dense": "0.0", "seed": "0"},
        {"data": "fashion-mnist", "network": "vgg", "method": "admm", "budget": "8", "test_accuracy": "90.5",
         "loss_vs_dense": "0.5", "seed": "0"}])
    rows = rd.read(path)
    assert rd.kind_of(rows, path)[0] == "accuracy" and rd.machine(rows) == "data set fashion-mnist, seed 0"
    assert rd.accuracy_pivot(rows).splitlines()[2:] == ["| dense | 91 |", "| admm | 90.5 (+0.50) |"]
