"""Block-punched 1x1 convs and linear layers: ours vs PyTorch dense vs TVM dense, on this CPU.

Layers: the 1x1 convolutions of MobileNet-V2 and ResNet-50 (batch 1, 224x224 input) and BERT-base's
linear layers at 128 tokens. For every layer, PyTorch dense, TVM dense (the same TE layout and
schedule with every column kept) and ours at each (sparsity, block rows) are timed interleaved in
one process (``tvm_patterns.devices.timing``); medians and p10/p90 of the quiet rounds are reported
(rounds other processes disturbed are dropped and counted).

    python scripts/bench_block.py --csv results/bench_block.csv          # everything (~10 min)
    python scripts/bench_block.py --quick                                  # ResNet-50 + BERT, 75%, R=8
    python scripts/bench_block.py --quick --threads 1                      # steadier on a busy machine

On a machine shared with other work, 2-thread PyTorch is erratic (its OpenMP barrier waits for a
descheduled thread: 2-30 ms for a 3 ms layer); 1-thread runs of both sides compare more steadily.

``--int8`` also times the 1x1 convs in int8 (``schedules/int8_block_sparse_conv2d_1x1_x86``: VNNI's
kernel where the CPU has it, weights on the 8-bit grid, else AVX2's, blocks of 4 or 8 rows, a 7-bit grid;
the kernel alone, its input uint8 codes already laid out and its output the int32 sums, checked exact
against numpy): ``ms_ours_int8``, ``int8_speedup_vs_ours`` (over
the float kernel of the same weight) and ``gops_ours_int8``.

Columns: ``gflops`` counts nonzero FLOPs (2 x MACs kept); ``speedup_torch`` = torch / ours;
``mac_ratio`` = dense MACs / kept MACs; ``bar`` = speedup_torch / mac_ratio (issue 6 asks >= 0.6 at
75% sparsity on ResNet-50's 1x1 layers).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tvm  # noqa: E402
from tvm import te  # noqa: E402

from schedules import block_sparse_x86 as sched  # noqa: E402
from schedules import int8_filter_block_pattern_conv2d_rowpair_x86 as int8_x86  # noqa: E402
from schedules.int8_block_sparse_dense_x86 import AVX2_BLOCK_ROWS  # noqa: E402
from tvm_patterns import targets  # noqa: E402
from tvm_patterns.apps.report import fmt_table, write_csv  # noqa: E402
from tvm_patterns.devices.timing import cpu_name, measure_rounds, use_threads  # noqa: E402
from tvm_patterns.computes.block_sparse import (CONV_BLOCK, DENSE_BLOCK, Conv1x1Geometry,  # noqa: E402
                                                block_sparse_conv2d_1x1, block_sparse_dense)
from tvm_patterns.sparsity.block import pack_block_punched, project_block_punched  # noqa: E402

# (name, C, H, W, K, stride): unique 1x1 conv shapes, batch 1
RESNET50 = [
    ("l1.conv1_first", 64, 56, 56, 64, 1), ("l1.conv3", 64, 56, 56, 256, 1), ("l1.conv1", 256, 56, 56, 64, 1),
    ("l2.conv1_first", 256, 56, 56, 128, 1), ("l2.down", 256, 56, 56, 512, 2), ("l2.conv3", 128, 28, 28, 512, 1),
    ("l2.conv1", 512, 28, 28, 128, 1), ("l3.conv1_first", 512, 28, 28, 256, 1), ("l3.down", 512, 28, 28, 1024, 2),
    ("l3.conv3", 256, 14, 14, 1024, 1), ("l3.conv1", 1024, 14, 14, 256, 1), ("l4.conv1_first", 1024, 14, 14, 512, 1),
    ("l4.down", 1024, 14, 14, 2048, 2), ("l4.conv3", 512, 7, 7, 2048, 1), ("l4.conv1", 2048, 7, 7, 512, 1),
]
MOBILENET_V2 = [
    ("b0.project", 32, 112, 112, 16, 1), ("b1.expand", 16, 112, 112, 96, 1), ("b1.project", 96, 56, 56, 24, 1),
    ("b2.expand", 24, 56, 56, 144, 1), ("b2.project", 144, 56, 56, 24, 1), ("b3.project", 144, 28, 28, 32, 1),
    ("b4.expand", 32, 28, 28, 192, 1), ("b4.project", 192, 28, 28, 32, 1), ("b6.project", 192, 14, 14, 64, 1),
    ("b7.expand", 64, 14, 14, 384, 1), ("b7.project", 384, 14, 14, 64, 1), ("b10.project", 384, 14, 14, 96, 1),
    ("b11.expand", 96, 14, 14, 576, 1), ("b11.project", 576, 14, 14, 96, 1), ("b13.project", 576, 7, 7, 160, 1),
    ("b14.expand", 160, 7, 7, 960, 1), ("b14.project", 960, 7, 7, 160, 1), ("b16.project", 960, 7, 7, 320, 1),
    ("last", 320, 7, 7, 1280, 1),
]
# (name, tokens, in, out)
BERT = [("attn.qkvo", 128, 768, 768), ("ffn.up", 128, 768, 3072), ("ffn.down", 128, 3072, 768)]

SPARSITIES = (0.5, 0.75, 0.9)
BLOCK_ROWS = (4, 8, 16)
DENSE_R = 8          # block rows of the TVM dense baseline's layout


def _compile(out_fn, placeholders, main_block, schedule):
    """Scheduled for the host target, as ``tp.build`` schedules it (the AVX-512 tiles need the target)."""
    target = targets.host()
    out = out_fn(*placeholders)
    sch = tvm.s_tir.Schedule(te.create_prim_func([*placeholders, out]))
    schedule(sch, sch.get_sblock(main_block), target)
    return tvm.compile(sch.mod, target=target)["main"], tuple(int(d) for d in out.shape)


def _caller(fn, out_shape, arrays):
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays]
    out = tvm.runtime.empty(out_shape, "float32", dev)
    fn(*args, out)
    return (lambda: fn(*args, out)), out


def _dense_values(w2d, R):
    rows, cols = w2d.shape
    nb = -(-rows // R)
    pad = np.zeros((nb * R, cols), "float32")
    pad[:rows] = w2d
    return np.ascontiguousarray(pad.reshape(nb, R, cols).transpose(0, 2, 1))


class Layer:
    """One layer: its torch dense call, and builders of our kernels for a [rows, cols] weight."""

    def __init__(self, family, name, kind, shape):
        self.family, self.name, self.kind, self.shape = family, name, kind, shape
        rng = np.random.default_rng(0)
        if kind == "conv":
            C, H, W, K, s = shape
            self.rows, self.cols = K, C
            self.geom = Conv1x1Geometry(1, C, H, W, K, (s, s))
            self.x = rng.standard_normal((1, C, H, W)).astype("float32")
            ho, wo = self.geom.out_hw
            self.positions = ho * wo
            self.desc = f"{C}x{H}x{W}->{K} s{s}"
        else:
            T, Kin, N = shape
            self.rows, self.cols = N, Kin
            self.x = rng.standard_normal((T, Kin)).astype("float32")
            self.positions = T
            self.desc = f"{T}x{Kin}->{N}"
        self.w = rng.standard_normal((self.rows, self.cols)).astype("float32")
        self.macs_dense = self.rows * self.cols * self.positions

    def torch_fn(self, w2d):
        x = torch.from_numpy(self.x)
        if self.kind == "conv":
            wt = torch.from_numpy(w2d.reshape(self.rows, self.cols, 1, 1).copy())
            s = self.geom.strides[0]
            return lambda: F.conv2d(x, wt, stride=s)
        wt = torch.from_numpy(w2d.copy())
        return lambda: F.linear(x, wt)

    def tvm_fn(self, col_idx, values):
        """Our kernel for packed tables (``col_idx`` None: the dense baseline) -> (call, output)."""
        phs = [te.placeholder(self.x.shape, name="x")]
        if col_idx is not None:
            phs.append(te.placeholder(col_idx.shape, "int32", name="col_idx"))
        phs.append(te.placeholder(values.shape, name="values"))

        def out_fn(x, *tables):
            c, v = (None, *tables) if col_idx is None else tables
            if self.kind == "conv":
                return block_sparse_conv2d_1x1(x, c, v, self.geom)
            return block_sparse_dense(x, c, v, self.rows)

        fn, oshape = _compile(out_fn, phs, CONV_BLOCK if self.kind == "conv" else DENSE_BLOCK, sched.schedule)
        arrays = [self.x, values] if col_idx is None else [self.x, col_idx, values]
        return _caller(fn, oshape, arrays)

    def reference(self, w2d):
        return self.torch_fn(w2d)().numpy()


def int8_conv_fn(layer: Layer, w2d: np.ndarray, R: int, vnni: bool):
    """Our int8 1x1 kernel on ``w2d`` (8-bit grid on VNNI, 7-bit on AVX2) and random input codes, checked
    exact -> call."""
    from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86
    from tvm_patterns.passes.register_tiles import tir_pipeline
    from tvm_patterns.sparsity.int8_block import int8_block_tables
    from tvm_patterns.sparsity.quantization import fit_grid

    grid = fit_grid(w2d, "uniform", 8 if vnni else 7)
    codes = np.round(grid.snap(w2d) / grid.scale[:, None]).astype("int8")
    t = int8_block_tables(codes, R, unroll=1)
    out_hw = layer.geom.out_hw
    f = int8_block_sparse_conv2d_1x1_x86(1, layer.cols, out_hw, layer.rows, t.col.shape[0], R, t.quads, vnni)
    target = targets.host()
    fn = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                     tir_pipeline=tir_pipeline(target))["main"]
    x = np.random.default_rng(1).integers(0, 256, (1, layer.cols, *out_hw)).astype("uint8")
    args = [tvm.runtime.tensor(a) for a in (x, t.col, t.value, np.zeros(t.col.shape[0] * R, "int32"),
                                            np.zeros((1, layer.rows, *out_hw), "int32"))]
    fn(*args)
    expected = codes.astype(np.int64) @ x[0].reshape(layer.cols, -1).astype(np.int64)
    if not np.array_equal(args[-1].numpy()[0].reshape(layer.rows, -1), expected):
        raise AssertionError(f"{layer.name} int8 R={R}: not the integer product")
    return lambda: fn(*args)


def bench_layer(layer: Layer, sparsities, block_rows, rounds, threads, check=True, int8=False):
    fns = {"torch": layer.torch_fn(layer.w)}
    vnni = int8 and not int8_x86.missing_features(targets.host())
    fns["tvm_dense"], dense_out = layer.tvm_fn(None, _dense_values(layer.w, DENSE_R))
    if check:
        _check(dense_out.numpy(), layer.reference(layer.w), f"{layer.name} tvm dense")
    density = {}
    for s in sparsities:
        for R in block_rows:
            w = project_block_punched(layer.w, R, s)
            packed = pack_block_punched(w, R)
            key = f"ours_s{s}_R{R}"
            fns[key], out = layer.tvm_fn(packed.col_idx, packed.values)
            if check:
                _check(out.numpy(), layer.reference(w), f"{layer.name} {key}")
            if int8 and layer.kind == "conv" and (vnni or R in AVX2_BLOCK_ROWS):
                fns[key + "_int8"] = int8_conv_fn(layer, w, R, vnni)
            density[key] = (s, R, packed.mac_density())
    measured = measure_rounds(fns, rounds=rounds)
    stats = measured.spread()
    times = {k: m for k, (m, _, _) in stats.items()}
    t_torch, t_tvm = times["torch"], times["tvm_dense"]
    rows = []
    for key, (s, R, d) in density.items():
        t = times[key]
        mac_ratio = 1.0 / d
        rows.append({
            "cpu": cpu_name(), "threads": threads, "family": layer.family, "layer": layer.name, "shape": layer.desc, "sparsity": s, "block_rows": R,
            "macs_dense": layer.macs_dense, "macs_sparse": int(round(layer.macs_dense * d)),
            "ms_ours": t * 1e3, "ms_torch_dense": t_torch * 1e3, "ms_tvm_dense": t_tvm * 1e3,
            "gflops_ours": 2 * layer.macs_dense * d / t / 1e9,
            "gflops_torch_dense": 2 * layer.macs_dense / t_torch / 1e9,
            "gflops_tvm_dense": 2 * layer.macs_dense / t_tvm / 1e9,
            "speedup_torch": t_torch / t, "speedup_tvm_dense": t_tvm / t, "mac_ratio": mac_ratio,
            "bar": t_torch / t / mac_ratio,
            "ms_ours_p10": stats[key][1] * 1e3, "ms_ours_p90": stats[key][2] * 1e3,
            "ms_torch_p10": stats["torch"][1] * 1e3, "ms_torch_p90": stats["torch"][2] * 1e3,
            "rounds": rounds, "disturbed_rounds": len(measured.disturbed()),
        })
        if key + "_int8" in times:
            t8 = times[key + "_int8"]
            rows[-1].update({"ms_ours_int8": t8 * 1e3, "int8_speedup_vs_ours": t / t8,
                             "gops_ours_int8": 2 * layer.macs_dense * d / t8 / 1e9})
    return rows


def _check(out, ref, what):
    err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
    if err > 1e-4:
        raise AssertionError(f"{what}: relative max error {err:.2e}")


def layers(families):
    out = []
    if "resnet50" in families:
        out += [Layer("resnet50", n, "conv", s) for n, *s in RESNET50]
    if "mobilenet_v2" in families:
        out += [Layer("mobilenet_v2", n, "conv", s) for n, *s in MOBILENET_V2]
    if "bert" in families:
        out += [Layer("bert", n, "linear", s) for n, *s in BERT]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", help="write the rows to this CSV file")
    ap.add_argument("--quick", action="store_true", help="ResNet-50 and BERT at 75%% sparsity, 8 block rows")
    ap.add_argument("--families", default="resnet50,mobilenet_v2,bert")
    ap.add_argument("--sparsity", type=float, nargs="*", help=f"default {SPARSITIES}")
    ap.add_argument("--block-rows", type=int, nargs="*", help=f"default {BLOCK_ROWS}")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 5)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of TVM and torch alike")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check against torch")
    ap.add_argument("--int8", action="store_true", help="also time the 1x1 convs in int8")
    args = ap.parse_args(argv)

    threads = use_threads(args.threads)
    families = args.families.split(",")
    sparsities = tuple(args.sparsity or ((0.75,) if args.quick else SPARSITIES))
    block_rows = tuple(args.block_rows or ((8,) if args.quick else BLOCK_ROWS))
    if args.quick and args.families == ap.get_default("families"):
        families = ["resnet50", "bert"]
    rounds = args.rounds or (5 if args.quick else 7)
    print(f"threads: TVM and torch {threads}; "
          f"target {targets.host().attrs['mcpu']}", flush=True)

    rows = []
    cols = ["layer", "shape", "sparsity", "block_rows", "ms_ours", "ms_torch_dense", "ms_tvm_dense",
            "gflops_ours", "speedup_torch", "speedup_tvm_dense", "mac_ratio", "bar"]
    cols += ["ms_ours_int8", "int8_speedup_vs_ours", "gops_ours_int8"] if args.int8 else []
    for layer in layers(families):
        new = bench_layer(layer, sparsities, block_rows, rounds, threads, check=not args.no_check, int8=args.int8)
        print(fmt_table(new, cols).split("\n", 1)[1] if rows else fmt_table(new, cols), flush=True)
        rows += new
    if args.csv:
        write_csv(args.csv, rows)
        print(f"wrote {len(rows)} rows to {args.csv}")

    print("\nbar (speedup over torch dense / MAC ratio), ResNet-50 1x1 at 75% sparsity, >= 0.6 wanted:")
    for R in block_rows:
        sel = [r["bar"] for r in rows if r["family"] == "resnet50" and r["sparsity"] == 0.75 and r["block_rows"] == R]
        if sel:
            print(f"  R={R:2d}: min {min(sel):.2f}  median {float(np.median(sel)):.2f}  "
                  f"({sum(b >= 0.6 for b in sel)}/{len(sel)} layers >= 0.6)")


if __name__ == "__main__":
    main()
