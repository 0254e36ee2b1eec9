"""Per-layer benchmark of the 3x3 convs (grouped and depthwise too) of a reference network: ours vs
PyTorch dense vs TVM dense.

    python scripts/bench_layers.py --net vgg16 --csv out/bench_vgg16.csv [--image-size 224] [--rounds 7]

Every layer is pruned the PatDNN way (8 patterns x 4 taps, 3.6x connectivity; the first conv stays
dense), built alone (conv + bias + ReLU, fused) with and without our pass, and timed with PyTorch's
conv in the same process, interleaved; medians are reported. GFLOP/s count the nonzero MACs only;
the machine's SGEMM rate, measured in the same run, is the roof.

``--filter-block F`` also times each layer pruned in blocks of F filters sharing kernels and patterns
(the kernel with load reuse across filters), in the same rounds. ``--int8`` (with ``--filter-block``)
also times that layer in int8 (weights per output channel on the uniform 8-bit grid, 7-bit on AVX2, the
input on a per-tensor one): our int8 kernel (``schedules/int8_filter_block_pattern_conv2d_rowpair_x86``
with AVX-512 VNNI, ``..._rowpair_avx2`` otherwise, column ``int8_isa``; the kernel alone, its input already in row pairs and its output uint8 codes, as between int8
layers of a build) and PyTorch's own int8 conv (``torch.ao`` quantized conv, x86 engine) on the dense layer;
with VNNI, the int8 roof measured in the same run (``schedules/vpdpbusd_roof_x86``) and each layer's
``int8_fraction_of_roof``. ``--deepsparse`` also runs
DeepSparse on each pruned layer in its venv's worker beside PyTorch there (not interleaved with ours:
``ours_vs_deepsparse`` is the ratio of the two speed-ups, each over the PyTorch timed beside it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
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


class Int8Layer:
    """A filter-block conv in int8: our kernel on its quantized weight and input (AVX-512 VNNI, or AVX2
    with 7-bit weights where the CPU has no VNNI), and PyTorch's int8 conv of the dense layer (torch.ao,
    x86 engine) on the same grids."""

    def __init__(self, conv, x: torch.Tensor, filters: int, target):
        from schedules import int8_filter_block_pattern_conv2d_rowpair_avx2 as avx2
        from schedules import int8_filter_block_pattern_conv2d_rowpair_x86 as vnni
        from tvm_patterns.passes.register_tiles import tir_pipeline
        from tvm_patterns.sparsity import PatternLibrary
        from tvm_patterns.sparsity.int8_filter_block import (int8_filter_block_tables, pack_rowpairs,
                                                             pack_rowpairs_avx2, permute_index, shuffle_index_avx2)
        from tvm_patterns.sparsity.quantization import fit_grid

        self.isa = "vnni" if not vnni.missing_features(target) else "avx2"
        missing = avx2.missing_features(target) if self.isa == "avx2" else []
        if missing:
            raise SystemExit(f"--int8: this CPU ({target.mcpu}) lacks {', '.join(missing)}")
        lib = PatternLibrary.patdnn()
        w = conv.weight.detach().numpy()
        grid = fit_grid(w, "uniform", 8 if self.isa == "vnni" else 7)
        wq = np.round(grid.snap(w) / grid.scale[:, None, None, None]).astype("int8")
        self.x_scale = float(x.abs().max()) / 255 * 2     # x is signed: zero point 128
        xq = np.clip(np.round(x.numpy() / self.x_scale) + 128, 0, 255).astype("uint8")
        N, C, H, W = x.shape
        K = w.shape[0]
        t = int8_filter_block_tables(wq, lib, filters)
        B, L = t.channel.shape
        # as the build runs it between int8 layers, and as torch.ao does: the sums requantized to uint8
        # codes (an output grid of zero point 128 over the float conv's range)
        if self.isa == "vnni":
            knobs = vnni.default_knobs(filters, C, H, W)
            f = vnni.int8_filter_block_pattern_conv2d_rowpair_x86(N, C, H, W, K, B, filters, L, lib.size, knobs,
                                                                  requantize=True)
            pairs, index = pack_rowpairs(xq, 128, knobs.rows, knobs.groups), permute_index(lib)
        else:
            knobs = avx2.default_knobs(filters, H, W)
            f = avx2.int8_filter_block_pattern_conv2d_rowpair_avx2(N, C, H, W, K, B, filters, L, lib.size, knobs,
                                                                   requantize=True)
            pairs, index = pack_rowpairs_avx2(xq, 128, knobs.rows, knobs.groups), shuffle_index_avx2(lib)
        self.fn = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                              tir_pipeline=tir_pipeline(target))["main"]
        w_dequant = wq.astype("float32") * grid.scale[:, None, None, None].astype("float32")
        with torch.no_grad():
            self.out_scale = float(torch.nn.functional.conv2d(x, torch.from_numpy(w_dequant), padding=1).abs().max()) / 127
        bias = np.zeros(B * filters, "int32")
        bias[:K] = -128 * wq.astype(np.int64).sum(axis=(1, 2, 3))
        scale = np.zeros((B * filters, 2), "float32")
        scale[:K, 0] = np.float32(self.x_scale) * grid.scale
        self.args = [tvm.runtime.tensor(a) for a in (pairs, t.length, t.channel, t.pattern, t.value, index, bias, scale,
                                                     np.array([1 / self.out_scale, 128, 0], "float32"),
                                                     np.zeros((N, K, H, W), "uint8"))]
        self.macs = int(t.length.sum()) * filters * 4 * H * W
        # PyTorch's int8 conv of the same grids, dense, onto the same output grid
        torch.backends.quantized.engine = "x86"
        self.torch_conv = torch.ao.nn.quantized.Conv2d(C, K, 3, padding=1)
        self.torch_conv.set_weight_bias(torch.quantize_per_channel(
            torch.from_numpy(w_dequant), torch.from_numpy(grid.scale), torch.zeros(K, dtype=torch.long), 0,
            torch.qint8), None)
        self.torch_conv.scale, self.torch_conv.zero_point = self.out_scale, 128
        self.torch_x = torch.quantize_per_tensor(x, self.x_scale, 128, torch.quint8)

    def run(self):
        self.fn(*self.args)

    def run_torch(self):
        return self.torch_conv(self.torch_x)

    def output(self) -> np.ndarray:
        """The conv (no bias) dequantized from our kernel's output codes."""
        self.run()
        return (self.args[-1].numpy().astype("float32") - 128) * self.out_scale


def bench_layer(net, name, conv, shape, rounds, roof, implementations=(), threads=1, blocked=None,
                deepsparse=False, int8_filters=0, int8_roof=None):
    """One layer's row; ``blocked``: the same layer pruned in filter blocks, timed beside (its own
    output checked against its own PyTorch layer); ``int8_filters``: that layer in int8 too."""
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
    int8 = Int8Layer(blocked, x, int8_filters, tp.targets.host()) if blocked is not None and int8_filters else None
    if int8 is not None:
        with torch.no_grad():
            conv_only = torch.nn.functional.conv2d(x, blocked.weight, padding=1).numpy()
        extra["int8_max_rel_error"] = rel_error(int8.output(), conv_only)
    if report[0].rewritten:   # each implementation of the pattern conv built by hand, timed beside "ours"
        vms.update({impl: relax.VirtualMachine(tp.build(mod, options={"pattern": {"implementation": impl}}),
                                               tvm.cpu()) for impl in implementations})
    xt = tvm.runtime.tensor(x.numpy())
    with torch.no_grad():
        ref = layer(x).numpy()
        err = max(rel_error(vm["main"](xt).numpy(), ref) for k, vm in vms.items() if k != "filter_block")
        fns = {name: (lambda vm=vm: vm["main"](xt)) for name, vm in vms.items()}
        if int8 is not None:
            fns.update(int8=int8.run, torch_int8=int8.run_torch)
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
            **blocked_columns(extra, t, dense_macs), **int8_columns(int8, t, dense_macs, int8_roof), **ds}


def vpdpbusd_roof_gops(threads: int, steps: int = 2_000_000) -> float | None:
    """The machine's int8 rate on ``threads`` threads (independent ``vpdpbusd``, no loads), in GOP/s;
    None without AVX-512 VNNI."""
    from schedules.int8_filter_block_pattern_conv2d_rowpair_x86 import missing_features
    from schedules.vpdpbusd_roof_x86 import ACCUMULATORS, LANES, OPS_PER_INSTRUCTION, vpdpbusd_roof_x86
    from tvm_patterns.passes.register_tiles import tir_pipeline

    target = tp.targets.host()
    if missing_features(target):
        return None
    f = vpdpbusd_roof_x86(threads, steps)
    lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                      tir_pipeline=tir_pipeline(target))
    out = tvm.runtime.tensor(np.zeros((threads, ACCUMULATORS, LANES), "int32"))
    seconds = float(np.median(lib.mod.time_evaluator("main", tvm.cpu(), number=3, repeat=5)(out).results))
    return threads * steps * ACCUMULATORS * OPS_PER_INSTRUCTION / seconds / 1e9


def int8_columns(int8: Int8Layer | None, t: dict, dense_macs: int, roof: float | None = None) -> dict:
    """The int8 columns of a layer's row: ours int8 against ours float32 (free and filter-block
    patterns), PyTorch float32 and PyTorch int8 (dense), and GOP/s on the nonzero MACs (and their
    fraction of the ``vpdpbusd`` roof where it was measured)."""
    if int8 is None:
        return {}
    mac_ratio = dense_macs / int8.macs
    return {"int8_isa": int8.isa, "int8_ms": t["int8"] * 1e3, "torch_int8_ms": t["torch_int8"] * 1e3,
            "int8_speedup_vs_filter_block": t["filter_block"] / t["int8"], "int8_speedup_vs_ours": t["ours"] / t["int8"],
            "int8_speedup_vs_pytorch": t["pytorch"] / t["int8"], "int8_speedup_vs_torch_int8": t["torch_int8"] / t["int8"],
            "int8_vs_torch_int8_ratio_to_mac_ratio": t["torch_int8"] / t["int8"] / mac_ratio,
            "int8_gops_nonzero": 2 * int8.macs / t["int8"] / 1e9,
            "int8_roof_gops": roof, "int8_fraction_of_roof": 2 * int8.macs / t["int8"] / 1e9 / roof if roof else None}


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
    ap.add_argument("--int8", action="store_true",
                    help="also time the filter-block layers in int8: ours (AVX-512 VNNI or AVX2) and PyTorch's (dense)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        ap.error("--threads and --rounds must be >= 1")
    if args.filter_block < 0:
        ap.error(f"--filter-block must be >= 0 (0: free patterns only), got {args.filter_block}")
    if args.int8 and not args.filter_block:
        ap.error("--int8 runs the filter-block int8 kernel: give --filter-block F too")
    threads = use_threads(args.threads)
    roof = sgemm_gflops()
    print(f"{os.cpu_count()} cores, {threads} TVM / {torch.get_num_threads()} torch threads; "
          f"SGEMM roof {roof:.1f} GFLOP/s", flush=True)
    int8_roof = vpdpbusd_roof_gops(threads) if args.int8 else None
    if int8_roof:
        print(f"vpdpbusd roof {int8_roof:.0f} GOP/s", flush=True)
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
                                args.deepsparse, args.filter_block if args.int8 else 0, int8_roof))
        r = rows[-1]
        print(f"[{i + 1}/{len(layers)}] {name}: {r['kind']} {r['ours_ms']:.2f} ms, pytorch {r['pytorch_ms']:.2f} ms, "
              f"x{r['speedup_vs_pytorch']:.2f} (MAC ratio {r['mac_ratio']:.1f}) [{time.perf_counter() - t0:.0f} s]", flush=True)
        write_csv(args.csv, rows)
    print(fmt_table(rows, COLUMNS + [f"{impl}_ms" for impl in implementations]
                    + (["filter_block_ms", "filter_block_speedup_vs_pytorch", "filter_block_ratio_to_mac_ratio"]
                       if args.filter_block else [])
                    + (["int8_ms", "int8_speedup_vs_filter_block", "int8_speedup_vs_ours", "torch_int8_ms",
                        "int8_speedup_vs_torch_int8", "int8_vs_torch_int8_ratio_to_mac_ratio"] if args.int8 else [])
                    + (["deepsparse_ms", "deepsparse_speedup_vs_pytorch", "ours_vs_deepsparse"] if args.deepsparse else [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
