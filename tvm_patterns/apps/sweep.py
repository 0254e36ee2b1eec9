"""Latency sweeps: sparsity configurations x networks, one tidy CSV and PNG plots; resumable.

    tvm-patterns sweep --nets vgg16,resnet50 --patterns 4,8,12 --connectivity 1,2,3.6,5 \\
        [--block-sparsity 0.5,0.75,0.9] [--image-size 224] [--tuning-log tuning_logs] --out DIR

Rows: one per network x configuration x kernel call (``layer``; the conv layers carry their torch
names) and one ``TOTAL`` row per network x configuration with end-to-end medians. A configuration
that fails is a row with its error, and the sweep goes on. Re-running skips configurations whose
TOTAL row in ``DIR/sweep.csv`` is whole, and measures the others again (their partial rows removed).

Another target (``--target arm_cpu|mali|adreno --rpc-tracker HOST:PORT --rpc-key KEY``): each model
is built for it, exported with its cross linker, uploaded to the device behind the tracker and timed
there (``time_evaluator`` on the device); the output is checked against PyTorch. Remote rows are
``TOTAL`` rows (no per-call times: the VM's instrumentation is a host callback) against TVM dense
on the same device; PyTorch does not run there.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from dataclasses import dataclass

import torch
import tvm
from tvm import relax

from .. import targets
from ..build import build
from ..importer import from_pytorch
from ..compress import pattern_prune, prunable_3x3_convs
from ..compress.kinds import check_connectivity
from ..devices.remote import RemoteDevice
from ..devices.profiling import call_times
from ..devices.timing import cpu_name, measure_interleaved, median, use_threads
from ..passes.registry import sparse_kinds
from ..sparsity import PatternLibrary
from ..sparsity.block import project_block_punched
from . import arguments
from .models import get_network
from .report import write_csv

COLUMNS = ["network", "config", "kind", "patterns", "connectivity", "block_sparsity", "layer", "position",
           "kernel", "dense_kernel", "mac_ratio", "ours_ms", "tvm_dense_ms", "pytorch_ms",
           "speedup_vs_tvm_dense", "speedup_vs_pytorch", "error", "cpu", "threads"]


@dataclass(frozen=True)
class Config:
    kind: str                      # "pattern" or "block"
    patterns: int = 0
    connectivity: float = 1.0
    block_sparsity: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "pattern":
            return f"pattern-p{self.patterns}-c{self.connectivity:g}"
        return f"block-s{self.block_sparsity:g}"


def configurations(patterns, connectivity, block_sparsity) -> list[Config]:
    """Every configuration of the axes, each once (a value repeated on an axis is measured once);
    ValueError names a value out of range."""
    patterns, connectivity, block_sparsity = (list(dict.fromkeys(a)) for a in (patterns, connectivity, block_sparsity))
    for p in patterns:
        if p != int(p) or not 1 <= p <= 126:
            raise ValueError(f"a pattern count is an integer in 1..126 (4 of 9 taps), got {p:g}")
    for c in connectivity:
        check_connectivity("--connectivity", c)
    for b in block_sparsity:
        if not 0 <= b < 1:
            raise ValueError(f"block sparsity is in [0, 1), got {b:g}")
    patterns = [int(p) for p in patterns]
    return ([Config("pattern", p, c) for p, c in itertools.product(patterns, connectivity)]
            + [Config("block", block_sparsity=s) for s in block_sparsity])


def compress(model: torch.nn.Module, cfg: Config) -> dict:
    """Prune ``model`` in place the way ``cfg`` says (projection, no training); returns the
    build options that recognise the result."""
    if cfg.kind == "pattern":
        dense = [m.weight.detach().numpy() for _, m in prunable_3x3_convs(model)]
        library = PatternLibrary.extract(dense, n_patterns=cfg.patterns, taps=4)
        pattern_prune(model, library, cfg.connectivity)
        return {"library": library}
    if "block" not in {k.name for k in sparse_kinds()}:
        raise NotImplementedError("no 'block' sparse kind is registered in this build (block-sparse kernels, issue 6)")

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1):
                w2d = m.weight.detach().reshape(m.weight.shape[0], -1).numpy()
                m.weight.copy_(torch.from_numpy(project_block_punched(w2d, 8, cfg.block_sparsity)).reshape(m.weight.shape))
    return {}


class Sweep:
    def __init__(self, args):
        self.args = args
        self.csv = os.path.join(args.out, "sweep.csv")
        rows = read_rows(self.csv)
        # A configuration is done when its TOTAL row is whole; the rows of any other (an interrupted
        # run's) are removed, and it is measured again.
        self.done = {(r["network"], r["config"]) for r in rows if is_complete_total(r)}
        self.rows = [r for r in rows if (r.get("network"), r.get("config")) in self.done]
        if len(self.rows) < len(rows):
            print(f"{self.csv}: {len(rows) - len(self.rows)} rows of unfinished configurations removed; "
                  "they are measured again", flush=True)
        self.target = targets.by_name(args.target)
        self.remote = (RemoteDevice(args.rpc_tracker, args.rpc_key, self.target, args.rounds)
                       if args.rpc_tracker else None)

    def run(self, nets, configs) -> None:
        todo = [(n, c) for n in nets for c in configs if (n, c.name) not in self.done]
        print(f"{len(todo)} configurations to run ({len(self.done)} already in {self.csv})", flush=True)
        t0 = time.perf_counter()
        baselines = {}
        for i, (net, cfg) in enumerate(todo):
            if net not in baselines:
                baselines[net] = self.baseline(net)
            try:
                self.rows += self.measure(net, cfg, baselines[net])
            except Exception as e:  # noqa: BLE001  a failed configuration is a row; the sweep goes on
                self.rows.append({"network": net, "config": cfg.name, "kind": cfg.kind, "layer": "TOTAL",
                                  "error": f"{type(e).__name__}: {e}"})
            write_csv(self.csv, [{c: r.get(c, "") for c in COLUMNS} for r in self.rows])
            elapsed = time.perf_counter() - t0
            eta = elapsed / (i + 1) * (len(todo) - i - 1)
            print(f"[{'#' * (i + 1)}{'.' * (len(todo) - i - 1)}] {i + 1}/{len(todo)} {net} {cfg.name}: "
                  f"{self.rows[-1].get('error') or 'ok'}  elapsed {elapsed:.0f} s, ETA {eta:.0f} s", flush=True)

    def baseline(self, net):
        """The dense model's input and TVM dense per call; on the host the callables of PyTorch and
        TVM dense, timed with each configuration in the same rounds; on a device TVM dense's time."""
        model = get_network(net, self.args.image_size)
        x = torch.randn(1, 3, self.args.image_size, self.args.image_size)
        ex = build(from_pytorch(model, x), self.target, sparse=False, tuning_log=self.args.tuning_log)
        if self.remote is not None:
            with torch.no_grad():
                ref = model(x).numpy()
            return {"x": x, "tvm_dense": self.remote.time(ex, x, ref), "pytorch": None, "calls": None}
        vm = relax.VirtualMachine(ex, tvm.cpu())
        xt = tvm.runtime.tensor(x.numpy())
        return {"x": x, "xt": xt, "calls": call_times(vm, xt, runs=self.args.rounds),
                "fns": {"pytorch": lambda: model(x), "tvm_dense": lambda: vm["main"](xt)}}

    def measure(self, net, cfg, base) -> list[dict]:
        model = get_network(net, self.args.image_size)
        options = compress(model, cfg)
        report = []
        ex = build(from_pytorch(model, base["x"]), self.target, report=report, tuning_log=self.args.tuning_log,
                   **options)
        if self.remote is not None:
            with torch.no_grad():
                ref = model(base["x"]).numpy()
            ours, calls = self.remote.time(ex, base["x"], ref), []
        else:
            vm = relax.VirtualMachine(ex, tvm.cpu())
            with torch.no_grad():   # ours interleaved with its baselines
                t = measure_interleaved({**base["fns"], "ours": lambda: vm["main"](base["xt"])}, rounds=self.args.rounds)
            ours = median(t["ours"])
            base = {**base, "pytorch": median(t["pytorch"]), "tvm_dense": median(t["tvm_dense"])}
            calls = call_times(vm, base["xt"], runs=self.args.rounds)
        common = {"network": net, "config": cfg.name, "kind": cfg.kind, "patterns": cfg.patterns or "",
                  "connectivity": cfg.connectivity if cfg.kind == "pattern" else "",
                  "block_sparsity": cfg.block_sparsity or "", "cpu": cpu_name(), "threads": self.args.threads}
        rows = []
        if calls and len(calls) == len(base["calls"]):   # same graph, same fusion: calls line up one to one
            layers = iter(report)
            for pos, ((sym, t), (dsym, dt)) in enumerate(zip(calls, base["calls"])):
                decision = next(layers) if "conv2d" in sym else None
                ratio = decision.macs_dense / decision.macs_sparse if decision and decision.rewritten else 1.0
                rows.append({**common, "layer": decision.layer if decision else sym, "position": pos,
                             "kernel": sym, "dense_kernel": dsym, "mac_ratio": ratio, "ours_ms": t * 1e3,
                             "tvm_dense_ms": dt * 1e3, "speedup_vs_tvm_dense": dt / t})
        rewritten = [r for r in report if r.rewritten]
        macs_dense = sum(r.macs_dense for r in rewritten)
        macs_sparse = sum(r.macs_sparse for r in rewritten)
        rows.append({**common, "layer": "TOTAL", "mac_ratio": macs_dense / macs_sparse if macs_sparse else 1.0,
                     "ours_ms": ours * 1e3, "tvm_dense_ms": base["tvm_dense"] * 1e3,
                     "pytorch_ms": base["pytorch"] * 1e3 if base["pytorch"] else "",
                     "speedup_vs_tvm_dense": base["tvm_dense"] / ours,
                     "speedup_vs_pytorch": base["pytorch"] / ours if base["pytorch"] else "", "error": ""})
        return rows


def read_rows(path: str) -> list[dict]:
    """The rows of a sweep CSV that have every column (a line cut short by a crash is reported and
    left out)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", errors="replace") as f:
        lines = list(csv.reader(f))
    if not lines:
        return []
    header, rows = lines[0], []
    for n, fields in enumerate(lines[1:], 2):
        if len(fields) != len(header):
            print(f"{path} line {n}: {len(fields)} fields, not {len(header)}; left out", flush=True)
            continue
        rows.append(dict(zip(header, fields)))
    return rows


def number(text) -> float | None:
    """A CSV cell as a float, None when it is empty or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def is_complete_total(row: dict) -> bool:
    """A TOTAL row that says how its configuration ended: an error, or all its times."""
    if row.get("layer") != "TOTAL" or not row.get("network") or not row.get("config"):
        return False
    return bool(row.get("error")) or all(number(row.get(c)) is not None for c in ("mac_ratio", "ours_ms", "tvm_dense_ms"))


def plot(csv_path: str, out_dir: str) -> list[str]:
    """latency_vs_mac.png, speedup_per_layer.png, ours_vs_ideal.png from the sweep CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_rows(csv_path) if not r.get("error")]
    totals = [r for r in rows if is_complete_total(r)]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for net in sorted({r["network"] for r in totals}):
        pts = sorted((float(r["mac_ratio"]), float(r["ours_ms"])) for r in totals if r["network"] == net)
        ax.plot(*zip(*pts), "o-", label=f"{net}: ours")
        dense = [float(r["tvm_dense_ms"]) for r in totals if r["network"] == net][0]
        ax.axhline(dense, ls="--", lw=1, color=ax.lines[-1].get_color(), label=f"{net}: TVM dense")
        torch_ms = [r["pytorch_ms"] for r in totals if r["network"] == net and number(r.get("pytorch_ms"))]
        if torch_ms:
            ax.axhline(float(torch_ms[0]), ls=":", lw=1, color=ax.lines[-1].get_color(), label=f"{net}: PyTorch dense")
    ax.set(xlabel="MAC reduction of the pruned layers (x)", ylabel="latency (ms)", yscale="log",
           title="End-to-end latency vs MAC reduction")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir, "latency_vs_mac.png"))

    layers = [r for r in rows if r["layer"] != "TOTAL" and (number(r.get("mac_ratio")) or 0) > 1
              and number(r.get("speedup_vs_tvm_dense")) is not None]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for cfg in sorted({(r["network"], r["config"]) for r in layers}):
        sel = [r for r in layers if (r["network"], r["config"]) == cfg]
        ax.plot(range(len(sel)), [float(r["speedup_vs_tvm_dense"]) for r in sel], "o-", ms=3, label=" ".join(cfg))
    ax.set(xlabel="pruned layer (execution order)", ylabel="speedup over TVM dense (x)", title="Speedup per layer")
    if layers:   # a device sweep has end-to-end rows only
        ax.legend(fontsize=6, ncol=2)
    paths.append(_save(fig, out_dir, "speedup_per_layer.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    xs = [float(r["mac_ratio"]) for r in layers]
    ax.scatter(xs, [float(r["speedup_vs_tvm_dense"]) for r in layers], s=10, label="layers")
    top = max(xs + [1.0])
    ax.plot([1, top], [1, top], "k--", lw=1, label="ideal (speedup = MAC ratio)")
    ax.set(xlabel="MAC ratio (x)", ylabel="speedup over TVM dense (x)", title="Ours vs ideal")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir, "ours_vs_ideal.png"))
    return paths


def _save(fig, out_dir, name) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()] if text else []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tvm-patterns sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="vgg16,resnet50,mobilenet_v2")
    ap.add_argument("--patterns", default="4,8,12")
    ap.add_argument("--connectivity", default="1,2,3.6,5")
    ap.add_argument("--block-sparsity", default="")
    ap.add_argument("--target", default="host", choices=sorted(targets.PRESETS))
    ap.add_argument("--rpc-tracker")
    ap.add_argument("--rpc-key")
    ap.add_argument("--tuning-log", default=None,
                    help="a tvm-patterns tune log directory; its records apply to ours and to TVM dense")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of TVM and of PyTorch (default: every core)")
    args = ap.parse_args(argv)
    nets = arguments.networks(ap, args.nets)
    arguments.at_least(ap, args, 8, "image_size")
    arguments.at_least(ap, args, 1, "rounds")
    arguments.at_least(ap, args, 1, "threads")
    try:
        configs = configurations(_floats(args.patterns), _floats(args.connectivity),
                                 _floats(args.block_sparsity))
    except ValueError as e:
        ap.error(f"--patterns / --connectivity / --block-sparsity: {e}")
    if not configs:
        ap.error("no configuration: give --patterns and --connectivity, or --block-sparsity")
    arguments.device(ap, args)
    arguments.tuning_log(ap, args.tuning_log)
    arguments.writable_dir(ap, "--out", args.out)
    use_threads(args.threads)
    Sweep(args).run(nets, configs)
    for p in plot(os.path.join(args.out, "sweep.csv"), args.out):
        print("wrote", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
