"""Static ARM throughput of the NEON kernels, without a phone: LLVM's machine-code analyser on the
hot loop of each layer's generated aarch64 code.

    python scripts/arm_throughput.py --net vgg16 --csv F [--mcpu cortex-a76] [--model neoverse-n2]
                                     [--clock-ghz 2.4] [--layers a,b] [--filter-block 4 [--int8]]

For each 3x3 layer of the network, pattern-pruned as the demo prunes it (``--filter-block F``: in
blocks of F filters sharing kernels and patterns, which the build runs with its filter-block
kernel; the ``kind`` column says which sparse kernel the build picked), the NEON build of ours and
of the dense baseline (``tp.targets.arm_cpu(mcpu)``) is compiled to assembly; the hot loop is the
innermost loop (a backward branch with no other loop inside) of the layer's kernel holding the most
``fmla``. ``llvm-mca -mcpu=MODEL`` models it over many iterations. The model is not the build's CPU:
LLVM 14/15 schedule Cortex-A76 and Neoverse-N1 with the Cortex-A57 model (two 64-bit FP units, so a
128-bit fmla takes both: half the real rate), while their Neoverse-N2 model has two 128-bit FMA pipes
as the A76 / N1 have; the newest llvm-mca on the machine is used. Columns: instructions, fmla and
loads per iteration, predicted cycles per iteration, FMA-pipe utilisation (fmla per cycle / 2: two
128-bit FMA pipes, as on Cortex-A76 / Neoverse-N1) and predicted GFLOP/s of the loop at ``--clock-ghz``
against the core's peak (2 x 4 lanes x 2 FLOP = 16 FLOP a cycle). These are static estimates of the
steady state of one loop on one core: no cache misses, no loop overhead outside it, no threads.
``--int8`` adds the int8 build of each filter-block layer (``sdot``: 16 int8 multiply-adds, 32 ops,
in the FMA pipes; its rows count sdot instead of fmla and GOP/s instead of GFLOP/s).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import torch

import tvm_patterns as tp
from tvm_patterns.apps import arguments
from tvm_patterns.apps.models import conv3x3_layers
from tvm_patterns.apps.report import fmt_table, write_csv

MCA_NAMES = [f"llvm-mca-{v}" for v in range(19, 14, -1)] + ["llvm-mca"]   # the newest first
ITERATIONS = 200
FLOP_PER_FMLA = 8            # 4 float lanes x (multiply + add)
OPS_PER_SDOT = 32            # 4 int32 lanes x 4 int8 products x (multiply + add)
FMA_PIPES = 2
PEAK_FLOP_PER_CYCLE = FMA_PIPES * FLOP_PER_FMLA
OPS = {"fmla": FLOP_PER_FMLA, "sdot": OPS_PER_SDOT}
BRANCH = re.compile(r"^\s+(b(?:\.\w+)?|cbn?z|tbn?z)\s+(?:[^,]+,\s*)*(\.?L\w+)\s*$")
LABEL = re.compile(r"^(\.?L\w+|[A-Za-z_]\w*):")
COLUMNS = ["layer", "cin", "cout", "hw", "stride", "build", "kind", "function", "instructions", "fmla", "sdot", "loads",
           "cycles_per_iteration", "fma_utilisation", "predicted_gflops", "peak_gflops", "fraction_of_peak",
           "mcpu", "mca_model", "mca", "clock_ghz"]


def functions(asm: str) -> dict[str, list[str]]:
    """{function name: its lines} of an assembly listing (``.type NAME,@function`` to ``.size NAME``)."""
    out, name = {}, None
    for line in asm.splitlines():
        m = re.match(r"\s*\.type\s+([^,]+),@function", line)
        if m:
            name = m.group(1)
            out[name] = []
        elif name and re.match(rf"\s*\.size\s+{re.escape(name)},", line):
            name = None
        elif name:
            out[name].append(line)
    return out


def is_instruction(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith((".", "//", "#", ";")) and not LABEL.match(s)


def hot_loop(lines: list[str], instruction: str = "fmla") -> list[str]:
    """The innermost loop with the most ``instruction``: lines from a label to the last backward branch
    to it, with no loop (backward branch to a label strictly inside) within. [] when there is no loop."""
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := LABEL.match(line.strip()))}
    loops = [(labels[m.group(2)], j) for j, line in enumerate(lines)
             if (m := BRANCH.match(line)) and m.group(2) in labels and labels[m.group(2)] < j]
    innermost = [(i, j) for i, j in loops if not any(i < a < j and a < b <= j for a, b in loops)]
    if not innermost:
        return []
    best = max(innermost, key=lambda ij: (sum(instruction in l for l in lines[ij[0]:ij[1] + 1]), -(ij[1] - ij[0])))
    return [l for l in lines[best[0]:best[1] + 1] if is_instruction(l)]


def find_mca() -> str | None:
    return next((shutil.which(n) for n in MCA_NAMES if shutil.which(n)), None)


def known_model(model: str) -> bool:
    """Whether llvm-mca has a scheduling model of the aarch64 CPU ``model`` (else it ignores it)."""
    proc = subprocess.run([find_mca(), "-mtriple=aarch64", f"-mcpu={model}"], input="add x0, x0, #1\n",
                          capture_output=True, text=True)
    return "not a recognized processor" not in proc.stderr


def mca_cycles(loop: list[str], model: str) -> float:
    """Cycles per iteration that llvm-mca predicts for ``loop`` on the ``model`` CPU (steady state)."""
    with tempfile.NamedTemporaryFile("w", suffix=".s") as f:
        f.write("\n".join(loop) + "\n")
        f.flush()
        proc = subprocess.run([find_mca(), "-mtriple=aarch64-linux-gnu", f"-mcpu={model}",
                               f"-iterations={ITERATIONS}", f.name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llvm-mca failed: {proc.stderr.strip()[:300]}")
    cycles = re.search(r"Total Cycles:\s+(\d+)", proc.stdout)
    return int(cycles.group(1)) / ITERATIONS


def analyse(asm: str, match: str, model: str, clock: float, instruction: str = "fmla") -> dict:
    """The hot-loop figures of the kernel whose function name contains ``match``: its ``instruction``
    (fmla, or sdot for int8) per iteration, and the operations per second they do."""
    funcs = {n: ls for n, ls in functions(asm).items() if match in n and not n.startswith("__tvm_ffi")}
    # the parallel body (a lambda) holds the loops where the function is parallel
    candidates = {n: hot_loop(ls, instruction) for n, ls in functions(asm).items()
                  if n in funcs or ("parallel_lambda" in n and funcs)}
    name, loop = max(candidates.items(), key=lambda kv: sum(instruction in l for l in kv[1]), default=(None, []))
    count = sum(bool(re.match(rf"\s*{instruction}\s", l)) for l in loop)
    if not loop or not count:
        raise ValueError(f"no loop with {instruction} in the kernel matching {match!r} "
                         f"(functions: {', '.join(functions(asm))})")
    cycles = mca_cycles(loop, model)
    gflops = count * OPS[instruction] / cycles * clock
    peak = FMA_PIPES * OPS[instruction] * clock
    return {"function": name, "instructions": len(loop), instruction: count,
            "loads": sum(bool(re.match(r"\s*ld\w*\s", l)) for l in loop), "cycles_per_iteration": cycles,
            "fma_utilisation": count / cycles / FMA_PIPES, "predicted_gflops": gflops,
            "peak_gflops": peak, "fraction_of_peak": gflops / peak}


def layer_rows(name, conv, shape, mcpu: str, model: str, clock: float, int8: bool = False) -> list[dict]:
    layer = torch.nn.Sequential(torch.nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1),
                                torch.nn.ReLU()).eval()
    with torch.no_grad():
        layer[0].weight.copy_(conv.weight)
    mod = tp.from_pytorch(layer, torch.randn(*shape))
    target = tp.targets.arm_cpu(mcpu)
    rows = []
    builds = [("ours", True, "pattern_conv2d", None), ("dense", False, "conv2d", None)]
    if int8:   # the input range of a ReLU'd layer: the int8 kernel's code only depends on the shapes
        builds.insert(1, ("int8", True, "int8_filter_block", {"0": (0.0, 1.0)}))
    for build, sparse, match, ranges in builds:
        report = []
        ex = tp.build(mod, target, sparse=sparse, report=report if sparse else None, int8=ranges)
        if sparse and not report[0].rewritten or ranges and report[0].kind != "int8_filter_block":
            continue                    # the stem: dense in both builds; a layer int8 does not take
        asm = ex.mod.imports[0].inspect_source("asm")
        rows.append({"layer": name, "cin": conv.in_channels, "cout": conv.out_channels, "hw": shape[2],
                     "stride": conv.stride[0], "build": build, "kind": report[0].kind if sparse else "dense",
                     **analyse(asm, match, model, clock, "sdot" if ranges else "fmla"),
                     "mcpu": mcpu, "mca_model": model, "mca": os.path.basename(find_mca()), "clock_ghz": clock})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="vgg16", choices=["vgg16", "resnet18", "resnet50"])
    ap.add_argument("--csv", required=True)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--mcpu", default="cortex-a76", help="the aarch64 CPU the code is built for")
    ap.add_argument("--model", default="neoverse-n2",
                    help="the CPU model llvm-mca schedules with (default: two 128-bit FMA pipes, as the A76 has)")
    ap.add_argument("--clock-ghz", type=float, default=2.4, help="the core's clock for the GFLOP/s columns")
    ap.add_argument("--layers", help="comma-separated layer names (default: every 3x3 conv)")
    ap.add_argument("--filter-block", type=int, default=0,
                    help="prune the 3x3 filters in blocks of this many sharing kernels and patterns")
    ap.add_argument("--int8", action="store_true",
                    help="also the int8 build of each filter-block layer (sdot; needs --filter-block)")
    args = ap.parse_args(argv)
    arguments.at_least(ap, args, 0, "filter_block")
    if args.int8 and not args.filter_block:
        ap.error("--int8 runs the filter-block int8 kernel: give --filter-block F too")
    if find_mca() is None:
        ap.error("llvm-mca is missing: apt-get install llvm-15 (.ci/apt-packages.txt)")
    if args.clock_ghz <= 0 or args.image_size < 8:
        ap.error(f"--clock-ghz must be > 0 and --image-size >= 8, got {args.clock_ghz:g} and {args.image_size}")
    if not known_model(args.model):
        ap.error(f"--model: llvm-mca has no aarch64 CPU {args.model!r} (llvm-mca -mtriple=aarch64 -mcpu=help lists them)")
    layers = conv3x3_layers(args.net, args.image_size, args.filter_block)
    if args.layers:
        keep = set(args.layers.split(","))
        unknown = keep - {n for n, _, _ in layers}
        if unknown:
            ap.error(f"--layers: no 3x3 conv {', '.join(sorted(unknown))} in {args.net}")
        layers = [l for l in layers if l[0] in keep]
    rows = []
    for name, conv, shape in layers:
        new = layer_rows(name, conv, shape, args.mcpu, args.model, args.clock_ghz, args.int8)
        rows += new
        write_csv(args.csv, rows)
        print(fmt_table(new, ["layer", "build", "kind", "instructions", "fmla", "sdot", "loads", "cycles_per_iteration",
                                    "fma_utilisation", "fraction_of_peak"]), flush=True)
    print("Static estimates (llvm-mca, one core, steady state of the hot loop), not measurements.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
