"""The main job: compress every layer -> import -> build (dense and sparse) -> check against PyTorch
-> latency, interleaved.

    tvm-patterns demo [--quick] [--nets vgg16,resnet50,mobilenet_v2] [--csv FILE] [--threads N] [--int8]

``--int8`` also builds each network with its filter-block pattern convs, the 1x1 convs chained to them
and the dense convs with enough MACs an element (a stem) in int8 (calibrated on a few random inputs;
``tp.build(..., int8=...)``), timed in the same rounds: a second row per network,
``dtype`` int8, checked against PyTorch within INT8_TOLERANCE and on its top-1 class.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import tvm
from tvm import relax

from .. import targets
from ..build import build
from ..compress.calibration import calibrate
from ..importer import from_pytorch
from ..passes.int8_requantize import REQUANTIZED
from ..devices.profiling import kernel_times
from ..devices.timing import cpu_name, measure_rounds, use_threads
from ..tuning import log_dir_for
from ..tuning.database import RECORDS
from . import arguments
from .models import pruned_network
from .report import fmt_table, write_csv

TOLERANCE = 1e-4   # relative max error against PyTorch
INT8_TOLERANCE = 0.05   # of an int8 build: 8-bit grids of the weights and of each layer's input
CALIBRATION_BATCHES = 4
SPREAD_WARNING = 1.5   # a baseline whose slowest tenth of rounds is this much slower than its fastest is not trusted


def say(msg: str) -> None:
    print(msg, flush=True)


def rel_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


def tuning_log_for(path: str | None, target) -> str | None:
    """``path`` when it holds a tuning log for ``target`` (e.g. the shipped tuning_logs/host-znver1), else None."""
    if not path or path == "none":
        return None

    if os.path.exists(os.path.join(log_dir_for(path, target), RECORDS)):
        say(f"tuning log: {log_dir_for(path, target)} (kernels without a record keep their default schedule)")
        return path
    say(f"no tuning log for {targets.target_name(target)} in {path}: default schedules "
        f"(tvm-patterns tune --model vgg16 makes one)")
    return None


def run_network(name: str, image_size: int, connectivity: float, sparsity: float, rounds: int, target,
                tuning_log: str | None = None, threads: int = 1, filter_block: int = 0,
                int8: bool = False) -> tuple[list, list]:
    """The network's rows (float32; with ``int8`` an int8 one too) and its slowest kernels."""
    model, x, mod = pruned_network(name, image_size, connectivity, sparsity, filter_block)
    with torch.no_grad():
        ref = model(x).numpy()
    shared = f", shared by blocks of {filter_block} filters" if filter_block else ""
    say(f"[{name}] every layer compressed (3x3: 8 patterns x 4 taps{shared}, {connectivity}x connectivity; "
        f"1x1 and linear: blocks of 8 rows, {sparsity:.0%} sparse); imported")
    vms, report, int8_report = {}, [], []
    ranges = None
    if int8:
        g = torch.Generator().manual_seed(1)
        ranges = calibrate(model, [torch.randn(*x.shape, generator=g) for _ in range(CALIBRATION_BATCHES)])
    builds = [("tvm_dense", False, None, None), ("tvm_sparse", True, report, None)]
    builds += [("tvm_int8", True, int8_report, ranges)] if int8 else []
    for label, sparse, rep, rng in builds:
        t0 = time.perf_counter()
        ex = build(mod, target, report=rep, sparse=sparse, tuning_log=tuning_log, int8=rng)
        vms[label] = relax.VirtualMachine(ex, tvm.cpu())
        say(f"[{name}] built {label} in {time.perf_counter() - t0:.1f} s")
    rewritten = [r for r in report if r.rewritten]
    say(f"[{name}] the sparse build rewrote {len(rewritten)} of {len(report)} layers:")
    for r in report:
        say(f"    {r.layer:24s} {r.kind or 'dense':8s} {r.reason}")
    if int8:
        chained = sum(REQUANTIZED in r.reason for r in int8_report)
        say(f"[{name}] the int8 build ran {sum(str(r.kind).startswith('int8_') for r in int8_report)} layers in int8, "
            f"{chained} of them writing 8-bit codes for the next")
    xt = tvm.runtime.tensor(x.numpy())
    outputs = {label: vm["main"](xt).numpy() for label, vm in vms.items()}
    errors = {label: rel_error(out, ref) for label, out in outputs.items()}
    tolerance = {label: INT8_TOLERANCE if label == "tvm_int8" else TOLERANCE for label in vms}
    for label, err in errors.items():
        say(f"[{name}] {label}: relative max error vs PyTorch {err:.2e} ({'ok' if err < tolerance[label] else 'FAIL'})")
    say(f"[{name}] timing ({rounds} interleaved rounds)")
    fns = {"pytorch": lambda: model(x)}
    fns.update({label: (lambda vm=vm: vm["main"](xt)) for label, vm in vms.items()})
    with torch.no_grad():
        measured = measure_rounds(fns, rounds=rounds)
    spread = measured.spread()
    t = {k: m for k, (m, _, _) in spread.items()}
    _, lo, hi = spread["pytorch"]
    if hi / lo > SPREAD_WARNING:
        say(f"[{name}] WARNING: PyTorch's rounds spread {hi / lo:.1f}x (p90/p10): the machine is busy, "
            "do not trust the speed-ups of this run")
    row = {"network": name, "dtype": "float32", "image": image_size, "filter_block": filter_block, "cpu": cpu_name(),
           "mcpu": target.export()["mcpu"],
           "threads": threads,
           "macs_dense": sum(r.macs_dense for r in report), "macs_kept": sum(r.macs_sparse for r in report),
           "weight_bytes_dense": sum(r.weight_bytes_dense for r in report),
           "weight_bytes_packed": sum(r.weight_bytes_packed for r in report),
           "pytorch_ms": t["pytorch"] * 1e3, "tvm_dense_ms": t["tvm_dense"] * 1e3, "tvm_sparse_ms": t["tvm_sparse"] * 1e3,
           **{f"{k}_{q}_ms": v * 1e3 for k, (_, p10, p90) in spread.items() for q, v in (("p10", p10), ("p90", p90))},
           "rounds": rounds, "disturbed_rounds": len(measured.disturbed()),
           "speedup_vs_pytorch": t["pytorch"] / t["tvm_sparse"],
           "speedup_vs_tvm_dense": t["tvm_dense"] / t["tvm_sparse"],
           "max_rel_err": max(errors["tvm_dense"], errors["tvm_sparse"]),
           "correct": all(errors[k] < TOLERANCE for k in ("tvm_dense", "tvm_sparse")),
           "layers_rewritten": len(rewritten), "layers_total": len(report)}
    row["mac_ratio"] = row["macs_dense"] / max(row["macs_kept"], 1)
    row["weight_ratio"] = row["weight_bytes_dense"] / max(row["weight_bytes_packed"], 1)
    rows = [row]
    if int8:   # the same columns for the int8 build in the place of the float sparse one
        same_class = bool((outputs["tvm_int8"].argmax(-1) == ref.argmax(-1)).all())
        int8_row = {**row, "dtype": "int8", "tvm_sparse_ms": t["tvm_int8"] * 1e3,
                    **{f"tvm_sparse_{q}_ms": spread["tvm_int8"][i] * 1e3 for q, i in (("p10", 1), ("p90", 2))},
                    "macs_kept": sum(r.macs_sparse for r in int8_report),
                    "weight_bytes_packed": sum(r.weight_bytes_packed for r in int8_report),
                    "speedup_vs_pytorch": t["pytorch"] / t["tvm_int8"],
                    "speedup_vs_tvm_dense": t["tvm_dense"] / t["tvm_int8"],
                    "max_rel_err": errors["tvm_int8"], "correct": errors["tvm_int8"] < INT8_TOLERANCE and same_class,
                    "layers_rewritten": sum(r.rewritten for r in int8_report)}
        int8_row["mac_ratio"] = int8_row["macs_dense"] / max(int8_row["macs_kept"], 1)
        int8_row["weight_ratio"] = int8_row["weight_bytes_dense"] / max(int8_row["weight_bytes_packed"], 1)
        rows.append(int8_row)
    layers = []
    for which in ("tvm_sparse", "tvm_int8") if int8 else ("tvm_sparse",):
        kt = kernel_times(vms[which], xt)
        total = sum(kt.values())
        layers += [{"network": name, "build": which, "kernel": k, "ms": v * 1e3, "share": v / total}
                   for k, v in sorted(kt.items(), key=lambda kv: -kv[1])[:6]]
    return rows, layers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tvm-patterns demo", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small input (64x64) and fewer timing rounds")
    ap.add_argument("--nets", default="vgg16,resnet50,mobilenet_v2")
    ap.add_argument("--connectivity", type=float, default=3.6, help="of the 3x3 convs")
    ap.add_argument("--sparsity", type=float, default=0.75, help="block sparsity of the 1x1 convs and linear layers")
    ap.add_argument("--filter-block", type=int, default=0,
                    help="3x3 filters in blocks of this many sharing kernels and patterns (0: free patterns)")
    ap.add_argument("--int8", action="store_true",
                    help="also build the filter-block pattern convs in int8 (AVX-512 VNNI or AVX2; --filter-block 4 if not given)")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--csv", help="write the per-network table here")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of TVM and of PyTorch (default: every core)")
    ap.add_argument("--tuning-log", default="tuning_logs",
                    help="tvm-patterns tune records for both TVM builds, when there are some for this CPU ('none': off)")
    args = ap.parse_args(argv)
    arguments.at_least(ap, args, 1, "threads")
    arguments.at_least(ap, args, 0, "filter_block")
    arguments.at_least(ap, args, 8, "image_size")
    arguments.connectivity(ap, args.connectivity)
    if not 0 <= args.sparsity < 1:
        ap.error(f"--sparsity must be in [0, 1), got {args.sparsity}")
    nets = arguments.networks(ap, args.nets)
    if args.int8 and not args.filter_block:
        args.filter_block = 4
        say("--int8: the int8 kernel runs filter-block patterns; pruning in blocks of 4 filters")
    threads = use_threads(args.threads)
    image = args.image_size or (64 if args.quick else 224)
    rounds = 3 if args.quick else 7
    target = targets.host()
    say(f"target: {target.export()['mcpu']}, {threads} threads (TVM and PyTorch); input {image}x{image}, batch 1")
    log = tuning_log_for(args.tuning_log, target)
    rows, layers = [], []
    t0 = time.perf_counter()
    for name in nets:
        net_rows, top = run_network(name, image, args.connectivity, args.sparsity, rounds, target, log, threads,
                                    args.filter_block, args.int8)
        rows += net_rows
        layers += top
    say("\nLatency per network (medians, ms):")
    shown = [{**r, "layers_sparse": f"{r['layers_rewritten']}/{r['layers_total']}"} for r in rows]
    say(fmt_table(shown, ["network", "dtype", "pytorch_ms", "tvm_dense_ms", "tvm_sparse_ms", "speedup_vs_pytorch",
                          "speedup_vs_tvm_dense", "mac_ratio", "weight_ratio", "layers_sparse", "max_rel_err"]))
    say("\nSlowest kernels of the sparse builds:")
    say(fmt_table(layers, ["network", "build", "kernel", "ms", "share"]))
    if args.csv:
        write_csv(args.csv, rows)
    say(f"\ndone in {time.perf_counter() - t0:.0f} s")
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
