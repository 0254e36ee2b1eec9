"""Per-layer benchmark of the 3x3 convs (grouped and depthwise too) of a reference network: ours vs
PyTorch dense vs TVM dense.

    python scripts/bench_layers.py --net vgg16 --csv out/bench_vgg16.csv [--image-size 224] [--rounds 7]

Every layer is pruned the PatDNN way (8 patterns x 4 taps, 3.6x connectivity; the first conv stays
dense), built alone (conv + bias + ReLU, fused) with and without our pass, and timed with PyTorch's
conv in the same process, interleaved; medians are reported. GFLOP/s count the nonzero MACs only;
the machine's SGEMM rate, measured in the same run, is the roof.

``--filter-block F`` also times each layer pruned in blocks of F filters sharing kernels and patterns
(the kernel with load reuse across filters), in the same rounds. ``--deepsparse`` also runs
DeepSparse on each pruned layer in its venv's worker beside PyTorch there (not interleaved with ours:
``ours_vs_deepsparse`` is the ratio of the two speed-ups, each over the PyTorch timed beside it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import tvm
from tvm import relax

import tvm_patterns as tp
from tvm_patterns.apps.demo import rel_error
from tvm_patterns.apps.report import fmt_table, write_csv
from tvm_patterns.devices import peers
from tvm_patterns.devices.timing import Rounds, cpu_name, measure_rounds, sgemm_gflops, use_threads
from tvm_patterns.apps.models import NETWORKS, conv3x3_layers

COLUMNS = ["net", "layer", "cin", "cout", "hw", "stride", "kind", "mac_ratio",
           "ours_ms", "pytorch_ms", "tvm_dense_ms", "speedup_vs_pytorch", "speedup_vs_tvm_dense",
           "ratio_to_mac_ratio", "ours_gflops_nonzero", "pytorch_gflops", "sgemm_gflops", "max_rel_error"]


def conv_relu(conv) -> torch.nn.Module:
    layer = torch.nn.Sequential(torch.nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1,
                                                groups=conv.groups),
                                torch.nn.ReLU()).eval()
    with torch.no_grad():
        layer[0].weight.copy_(conv.weight)
    return layer


def deepsparse_columns(layer, x, ref, rounds, threads) -> dict:
    """DeepSparse on the same layer (a one-conv ONNX model) in its venv's worker, timed beside its own
    PyTorch yardstick: its median, its speed-up over that PyTorch, and its output checked."""
    engine = peers.ENGINES["deepsparse"]
    if not peers.venv_python(engine).exists():
        return {"deepsparse_error": "no venv (python scripts/bench_peers.py --make-venvs --engines deepsparse)"}
    with tempfile.TemporaryDirectory(prefix="bench_layers_") as wd:
        try:
            res = peers.run_worker(engine, peers.export_model(layer, x, wd), x.numpy(), rounds, threads, wd)
        except Exception as e:  # noqa: BLE001  a peer that fails is a column with its error
            return {"deepsparse_error": f"{type(e).__name__}: {e}"[:200]}
    stats = Rounds(res["samples"], res["foreign"]).spread()
    return {"deepsparse_ms": stats["engine"][0] * 1e3, "deepsparse_pytorch_ms": stats["pytorch"][0] * 1e3,
            "deepsparse_speedup_vs_pytorch": stats["pytorch"][0] / stats["engine"][0],
            "deepsparse_max_rel_error": rel_error(res["output"], ref)}


def bench_layer(net, name, conv, shape, rounds, roof, implementations=(), threads=1, blocked=None,
                deepsparse=False):
    """One layer's row; ``blocked``: the same layer pruned in filter blocks, timed beside (its own
    output checked against its own PyTorch layer)."""
    layer = conv_relu(conv)
    x = torch.randn(*shape)
    mod = tp.from_pytorch(layer, x)
    report = []
    vm_ours = relax.VirtualMachine(tp.build(mod, report=report), tvm.cpu())
    vm_dense = relax.VirtualMachine(tp.build(mod, sparse=False), tvm.cpu())
    vms = {"ours": vm_ours, "tvm_dense": vm_dense}
    extra = {}
    if blocked is not None:
        blocked_layer, blocked_report = conv_relu(blocked), []
        vm = relax.VirtualMachine(tp.build(tp.from_pytorch(blocked_layer, x), report=blocked_report), tvm.cpu())
        with torch.no_grad():
            blocked_ref = blocked_layer(x).numpy()
        extra["filter_block_kind"] = blocked_report[0].kind or "dense"
        extra["filter_block_max_rel_error"] = rel_error(vm["main"](tvm.runtime.tensor(x.numpy())).numpy(), blocked_ref)
        extra["filter_block_macs"] = blocked_report[0].macs_sparse
        vms["filter_block"] = vm
    if report[0].rewritten:   # each implementation of the pattern conv built by hand, timed beside "ours"
        vms.update({impl: relax.VirtualMachine(tp.build(mod, options={"pattern": {"implementation": impl}}),
                                               tvm.cpu()) for impl in implementations})
    xt = tvm.runtime.tensor(x.numpy())
    with torch.no_grad():
        ref = layer(x).numpy()
        err = max(rel_error(vm["main"](xt).numpy(), ref) for k, vm in vms.items() if k != "filter_block")
        fns = {name: (lambda vm=vm: vm["main"](xt)) for name, vm in vms.items()}
        measured = measure_rounds({**fns, "pytorch": lambda: layer(x)}, rounds=rounds)
    stats = measured.spread()
    t = {k: m for k, (m, _, _) in stats.items()}
    spread = {f"{k}_{q}_ms": stats[k][i] * 1e3 for k in ("ours", "pytorch") for q, i in (("p10", 1), ("p90", 2))}
    ds = deepsparse_columns(layer, x, ref, rounds, threads) if deepsparse else {}
    if "deepsparse_speedup_vs_pytorch" in ds:   # each speed-up over the PyTorch timed beside it
        ds["ours_vs_deepsparse"] = t["pytorch"] / t["ours"] / ds["deepsparse_speedup_vs_pytorch"]
    ho, wo = ref.shape[2:]
    dense_macs = conv.out_channels * conv.in_channels // conv.groups * 9 * ho * wo
    macs = report[0].macs_sparse if report[0].rewritten else dense_macs
    mac_ratio = dense_macs / macs
    return {"net": net, "layer": name, "cin": conv.in_channels, "cout": conv.out_channels, "groups": conv.groups,
            "hw": shape[2], "stride": conv.stride[0], "kind": report[0].kind or "dense",
            "mac_ratio": mac_ratio, "ours_ms": t["ours"] * 1e3, "pytorch_ms": t["pytorch"] * 1e3, **spread,
            "tvm_dense_ms": t["tvm_dense"] * 1e3,
            "speedup_vs_pytorch": t["pytorch"] / t["ours"], "speedup_vs_tvm_dense": t["tvm_dense"] / t["ours"],
            "ratio_to_mac_ratio": t["pytorch"] / t["ours"] / mac_ratio,
            "ours_gflops_nonzero": 2 * macs / t["ours"] / 1e9, "pytorch_gflops": 2 * dense_macs / t["pytorch"] / 1e9,
            "sgemm_gflops": roof, "max_rel_error": err, "cpu": cpu_name(),
            "mcpu": tp.targets.host().export()["mcpu"], "threads": threads,
            "rounds": rounds, "disturbed_rounds": len(measured.disturbed()),
            **{f"{impl}_ms": t[impl] * 1e3 for impl in implementations if impl in t},
            **blocked_columns(extra, t, dense_macs), **ds}


def blocked_columns(extra: dict, t: dict, dense_macs: int) -> dict:
    """The filter-block columns of a layer's row (none without a filter-block build)."""
    if "filter_block" not in t:
        return {}
    macs = extra.pop("filter_block_macs") or dense_macs
    return {**extra, "filter_block_ms": t["filter_block"] * 1e3,
            "filter_block_speedup_vs_pytorch": t["pytorch"] / t["filter_block"],
            "filter_block_speedup_vs_ours": t["ours"] / t["filter_block"],
            "filter_block_ratio_to_mac_ratio": t["pytorch"] / t["filter_block"] / (dense_macs / macs),
            "filter_block_gflops_nonzero": 2 * macs / t["filter_block"] / 1e9}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=sorted(NETWORKS), default="vgg16")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layers", help="comma-separated layer names (default: all 3x3 convs)")
    ap.add_argument("--implementations", default="",
                    help="also time these pattern-conv implementations, e.g. offsets,patterns (x86 only for patterns)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of TVM and of PyTorch (default: every core)")
    ap.add_argument("--deepsparse", action="store_true",
                    help="also time DeepSparse on each pruned layer (in its venv; bench_peers.py --make-venvs)")
    ap.add_argument("--filter-block", type=int, default=0,
                    help="also time each layer pruned in blocks of this many filters sharing kernels and patterns")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        ap.error("--threads and --rounds must be >= 1")
    if args.filter_block < 0:
        ap.error(f"--filter-block must be >= 0 (0: free patterns only), got {args.filter_block}")
    threads = use_threads(args.threads)
    roof = sgemm_gflops()
    print(f"{os.cpu_count()} cores, {threads} TVM / {torch.get_num_threads()} torch threads; "
          f"SGEMM roof {roof:.1f} GFLOP/s", flush=True)
    implementations = [i for i in args.implementations.split(",") if i]
    layers = conv3x3_layers(args.net, args.image_size)
    blocked = dict((n, c) for n, c, _ in conv3x3_layers(args.net, args.image_size, args.filter_block)) \
        if args.filter_block else {}
    if args.layers:
        keep = set(args.layers.split(","))
        layers = [l for l in layers if l[0] in keep]
    rows = []
    for i, (name, conv, shape) in enumerate(layers):
        t0 = time.perf_counter()
        rows.append(bench_layer(args.net, name, conv, shape, args.rounds, roof, implementations, threads,
                                blocked.get(name) if conv.in_channels > 3 and conv.groups == 1 else None,
                                args.deepsparse))
        r = rows[-1]
        print(f"[{i + 1}/{len(layers)}] {name}: {r['kind']} {r['ours_ms']:.2f} ms, pytorch {r['pytorch_ms']:.2f} ms, "
              f"x{r['speedup_vs_pytorch']:.2f} (MAC ratio {r['mac_ratio']:.1f}) [{time.perf_counter() - t0:.0f} s]", flush=True)
        write_csv(args.csv, rows)
    print(fmt_table(rows, COLUMNS + [f"{impl}_ms" for impl in implementations]
                    + (["filter_block_ms", "filter_block_speedup_vs_pytorch", "filter_block_ratio_to_mac_ratio"]
                       if args.filter_block else [])
                    + (["deepsparse_ms", "deepsparse_speedup_vs_pytorch", "ours_vs_deepsparse"] if args.deepsparse else [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
