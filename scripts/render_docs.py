"""Render the results tables of docs/results.md (and README's results section) from the CSVs that the
benchmark scripts wrote, so a new run updates the docs instead of someone rewriting prose.

    python scripts/render_docs.py [--check]

Reads ``docs/results/*.csv`` and ``docs/sweep/sweep.csv``; each CSV's kind is known by its columns:
``tvm-patterns demo --csv`` (whole networks), ``scripts/bench_layers.py --csv`` (per layer) and
``tvm-patterns sweep`` (TOTAL rows), ``scripts/bench_peers.py``, ``scripts/bench_structured.py`` and
``scripts/compress_accuracy.py``. README.md shows each CSV named
in a marker line ``<!-- results: docs/results/FILE.csv -->`` up to ``<!-- /results -->``. ``--check`` exits 1 when
a file is not what the CSVs render (the tests run it).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
SWEEP = ROOT / "docs" / "sweep" / "sweep.csv"
OUT = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- results: ", "<!-- /results -->"

# (kind, a column only that kind has, the columns shown with their headers)
KINDS = [
    ("networks", "tvm_sparse_ms",
     [("network", "network"), ("dtype", "dtype"), ("filter_block", "filter block"), ("image", "input"),
      ("pytorch_ms", "PyTorch ms"),
      ("pytorch_p10_ms", "PyTorch p10"), ("pytorch_p90_ms", "PyTorch p90"), ("tvm_dense_ms", "TVM dense ms"),
      ("tvm_sparse_ms", "ours ms"), ("tvm_sparse_p10_ms", "ours p10"), ("tvm_sparse_p90_ms", "ours p90"),
      ("speedup_vs_pytorch", "x PyTorch"), ("speedup_vs_tvm_dense", "x TVM dense"),
      ("mac_ratio", "MAC ratio"), ("weight_ratio", "weight bytes ratio"), ("layers_rewritten", "sparse layers"),
      ("layers_total", "layers"), ("max_rel_err", "max rel. error"), ("disturbed_rounds", "disturbed rounds")]),
    ("layers", "ratio_to_mac_ratio",
     [("layer", "layer"), ("cin", "C"), ("cout", "K"), ("hw", "HxW"), ("stride", "stride"), ("kind", "kind"),
      ("mac_ratio", "MAC ratio"), ("ours_ms", "ours ms"), ("pytorch_ms", "PyTorch ms"), ("tvm_dense_ms", "TVM dense ms"),
      ("speedup_vs_pytorch", "x PyTorch"), ("ratio_to_mac_ratio", "x PyTorch / MAC ratio"),
      ("ours_gflops_nonzero", "ours GFLOP/s (nonzero)"), ("filter_block_ms", "filter-block ms"),
      ("filter_block_speedup_vs_pytorch", "filter-block x PyTorch"),
      ("filter_block_ratio_to_mac_ratio", "filter-block x PyTorch / MAC ratio"),
      ("filter_block_gflops_nonzero", "filter-block GFLOP/s (nonzero)"), ("int8_isa", "int8 ISA"),
      ("int8_ms", "int8 ms"), ("int8_speedup_vs_filter_block", "int8 x filter-block"),
      ("int8_vs_torch_int8_ratio_to_mac_ratio", "int8 x torch.ao int8 / MAC ratio"),
      ("int8_gops_nonzero", "int8 GOP/s (nonzero)"), ("int8_fraction_of_roof", "int8 of vpdpbusd roof"), ("sgemm_gflops", "SGEMM roof GFLOP/s"),
      ("deepsparse_speedup_vs_pytorch", "DeepSparse x its PyTorch"), ("ours_vs_deepsparse", "ours / DeepSparse")]),
    ("peers", "engine",
     [("network", "network"), ("variant", "variant"), ("engine", "engine"), ("version", "version"),
      ("median_ms", "median ms"), ("p10_ms", "p10 ms"), ("p90_ms", "p90 ms"), ("speedup_vs_pytorch", "x PyTorch"),
      ("max_rel_err", "max rel. error"), ("disturbed_rounds", "disturbed rounds"), ("error", "error")]),
    ("quantization", "weight_bits_ratio_3x3",
     [("network", "network"), ("method", "method"), ("scheme", "grid"), ("bits", "bits"), ("budget", "budget"),
      ("reduction_3x3", "3x3 reduction"), ("weight_bits_ratio_3x3", "3x3 weight bits ratio"),
      ("test_accuracy", "test accuracy %"), ("loss_vs_dense", "loss vs dense"), ("torch_accuracy_1k", "PyTorch 1k %"),
      ("tvm_accuracy_1k", "TVM build 1k %"), ("train_seconds", "train s")]),
    ("int8", "int8_top1_agreement_1k",
     [("network", "network"), ("method", "method"), ("budget", "budget"), ("reduction_3x3", "3x3 reduction"),
      ("test_accuracy", "test accuracy %"), ("torch_accuracy_1k", "PyTorch 1k %"), ("tvm_accuracy_1k", "TVM build 1k %"),
      ("tvm_int8_accuracy_1k", "TVM int8 build 1k %"), ("int8_top1_agreement_1k", "int8 top-1 as PyTorch's %"),
      ("tvm_int8_layers", "int8 layers")]),
    ("structured_accuracy", "reduction_layers",
     [("network", "network"), ("method", "method"), ("budget", "b or g"), ("reduction_layers", "layers' reduction"),
      ("reduction_total", "total reduction"), ("test_accuracy", "test accuracy %"), ("loss_vs_dense", "loss vs dense"),
      ("torch_accuracy_1k", "PyTorch 1k %"), ("tvm_accuracy_1k", "TVM build 1k %"),
      ("tvm_sparse_layers", "layers the build rewrote"), ("train_seconds", "train s")]),
    ("structured", "params_ratio",
     [("layer", "layer"), ("shape", "shape"), ("kind", "kind"), ("param", "b or g"), ("batch", "batch"),
      ("params_ratio", "weights ratio"), ("macs_ratio", "MAC ratio"), ("ours_ms", "ours ms"),
      ("pytorch_dense_ms", "PyTorch ms"), ("tvm_dense_ms", "TVM dense ms"), ("speedup_vs_pytorch", "x PyTorch"),
      ("speedup_vs_tvm_dense", "x TVM dense"), ("bar", "x PyTorch / MAC ratio"), ("disturbed_rounds", "disturbed rounds")]),
    ("accuracy", "loss_vs_dense",
     [("network", "network"), ("method", "method"), ("budget", "budget"), ("reduction_3x3", "3x3 reduction"),
      ("reduction_total", "total reduction"), ("test_accuracy", "test accuracy %"), ("loss_vs_dense", "loss vs dense"),
      ("torch_accuracy_1k", "PyTorch 1k %"), ("tvm_accuracy_1k", "TVM build 1k %"), ("train_seconds", "train s")]),
    ("arm", "cycles_per_iteration",
     [("layer", "layer"), ("cin", "C"), ("cout", "K"), ("hw", "HxW"), ("stride", "stride"), ("build", "build"),
      ("instructions", "instructions / iter."), ("fmla", "fmla / iter."), ("sdot", "sdot / iter."),
      ("loads", "loads / iter."),
      ("cycles_per_iteration", "cycles / iter. (llvm-mca)"), ("fma_utilisation", "FMA-pipe use"),
      ("predicted_gflops", "predicted GFLOP/s (int8: GOP/s)"), ("peak_gflops", "peak GFLOP/s (int8: GOP/s)")]),
    ("sweep", "config",
     [("network", "network"), ("config", "configuration"), ("mac_ratio", "MAC ratio"), ("ours_ms", "ours ms"),
      ("tvm_dense_ms", "TVM dense ms"), ("pytorch_ms", "PyTorch ms"), ("speedup_vs_pytorch", "x PyTorch"),
      ("speedup_vs_tvm_dense", "x TVM dense")]),
]
TITLES = {"arm": "Static ARM throughput of the NEON hot loops (`scripts/arm_throughput.py`, llvm-mca estimates, one core)",
          "accuracy": "Accuracy of every compression method (`scripts/compress_accuracy.py`)",
          "int8": "Int8 builds of compressed models (`scripts/compress_accuracy.py --int8`, calibrated on 8 "
                  "training batches)",
          "quantization": "Accuracy of every quantization grid, alone and with pattern pruning "
                          "(`scripts/compress_accuracy.py --table quantization`)", "peers": "Peers side by side (`scripts/bench_peers.py`)",
          "structured_accuracy": "Accuracy of block-circulant and column-combined linear layers "
                                 "(`scripts/compress_accuracy.py --table structured`)",
          "structured": "Block-circulant and column-combined layers (`scripts/bench_structured.py`)",
          "networks": "Whole networks (`tvm-patterns demo`)", "layers": "Per 3x3 layer (`scripts/bench_layers.py`)",
          "sweep": "Latency sweep, whole networks (`tvm-patterns sweep`, TOTAL rows)"}


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def kind_of(rows: list[dict], path: Path) -> tuple[str, list]:
    columns = set(rows[0]) if rows else set()
    for kind, marker, shown in KINDS:
        if marker in columns:
            return kind, shown
    raise ValueError(f"{path}: not a CSV of a known benchmark (columns {sorted(columns)})")


TEXT_COLUMNS = {"network", "layer", "config", "kind", "engine", "variant", "version", "error", "method", "build",
                "dtype", "int8_isa"}   # shown as written ("0.10" is a layer name)


def cell(value: str) -> str:
    try:
        x = float(value)
    except ValueError:
        return value
    if x.is_integer() and "." not in value and "e" not in value.lower():
        return value
    return f"{x:.2e}" if 0 < abs(x) < 1e-3 else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def table(rows: list[dict], shown: list) -> str:
    cols = [(c, h) for c, h in shown if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join((r.get(c) or "") if c in TEXT_COLUMNS else cell(r.get(c) or "") for c, _ in cols)
              + " |" for r in rows]
    return "\n".join(lines)


def speedup_pivot(rows: list[dict]) -> str:
    """Peers in short: an engine a row, a network x variant a column, the speed-up over PyTorch in each
    cell (a dash where the engine did not run)."""
    cols = list(dict.fromkeys((r["network"], r["variant"]) for r in rows))
    # the compressed variant's order first: it has every engine, ours beside PyTorch
    engines = list(dict.fromkeys(r["engine"] for r in sorted(rows, key=lambda r: r["variant"] != "compressed")))
    value = {(r["engine"], r["network"], r["variant"]): r for r in rows}
    lines = ["| engine (speed-up over PyTorch) | " + " | ".join(f"{n} {v}" for n, v in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for e in engines:
        cells = []
        for n, v in cols:
            r = value.get((e, n, v))
            cells.append(cell(r["speedup_vs_pytorch"]) if r and r.get("speedup_vs_pytorch") and not r.get("error")
                         else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_pivot(rows: list[dict]) -> str:
    """Accuracy in short: a method a row, a network x weight budget a column, the test accuracy and
    its loss against the dense network in each cell."""
    cols = list(dict.fromkeys((r["network"], r["budget"]) for r in rows if r["budget"]))
    value = {(r["method"], r["network"], r["budget"]): r for r in rows}
    dense = {r["network"]: r for r in rows if r["method"] == "dense"}
    lines = ["| method (test accuracy %, loss vs dense) | " + " | ".join(f"{n} {b}x fewer 3x3 weights" for n, b in cols)
             + " |", "|" + "---|" * (len(cols) + 1)]
    lines.append("| dense | " + " | ".join(cell(dense[n]["test_accuracy"]) if n in dense else "-" for n, _ in cols) + " |")
    for m in dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"):
        cells = [f"{cell(r['test_accuracy'])} ({float(r['loss_vs_dense']):+.2f})"
                 if (r := value.get((m, n, b))) else "-" for n, b in cols]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(rows: list[dict]) -> str:
    r = rows[0]
    if r.get("data"):         # accuracy: what the models learnt from, not where they ran
        return f"data set {r['data']}, seed {r.get('seed', '')}"
    if r.get("clock_ghz"):    # a model of a core, not this machine
        return f"{r['mcpu']} modelled by llvm-mca at {r['clock_ghz']} GHz"
    parts = [r.get("cpu") or "CPU not recorded"]
    if r.get("mcpu"):
        parts.append(f"LLVM mcpu {r['mcpu']}")
    if r.get("threads"):
        parts.append(f"{r['threads']} threads")
    return ", ".join(parts)


def section(path: Path) -> str:
    rows = read(path)
    kind, shown = kind_of(rows, path)
    if kind == "sweep":
        rows = [r for r in rows if r.get("layer") == "TOTAL"]
    rel = path.relative_to(ROOT)
    return f"### {TITLES[kind]}: {machine(rows)}\n\nFrom `{rel}`.\n\n{table(rows, shown)}\n"


def results_md() -> str:
    paths = sorted(RESULTS.glob("*.csv")) + ([SWEEP] if SWEEP.exists() else [])
    parts = ["# Results\n",
             "Generated by `scripts/render_docs.py` from the CSVs the benchmark scripts wrote; do not edit by "
             "hand. Times are medians of runs interleaved in one process, batch 1; only the ratios of one "
             "file compare (each file is one run on one machine). Why the kernels are shaped as they are: "
             "[design.md](design.md).\n"]
    parts += [section(p) for p in paths]
    return "\n".join(parts)


def readme(text: str) -> str:
    """README with each ``<!-- results: FILE -->`` ... ``<!-- /results -->`` section rendered from FILE
    (a demo CSV as its table, a peers or accuracy CSV in short)."""
    out, pos = [], 0
    while (start := text.find(BEGIN, pos)) >= 0:
        head_end = text.index("-->", start) + 3
        path = ROOT / text[start + len(BEGIN):text.index(" -->", start)].strip()
        end = text.index(END, head_end)
        rows = read(path)
        kind, shown = kind_of(rows, path)
        body = {"peers": speedup_pivot, "accuracy": accuracy_pivot}.get(kind, lambda r: table(r, shown))(rows)
        out += [text[pos:head_end], f"\n{machine(rows)} (`{path.relative_to(ROOT)}`):\n\n{body}\n"]
        pos = end
    return "".join(out) + text[pos:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = ap.parse_args(argv)
    wanted = {OUT: results_md(), README: readme(README.read_text())}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is not what the CSVs render: run python scripts/render_docs.py")
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
