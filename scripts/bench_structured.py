"""Block-circulant and column-combined layers: ours vs PyTorch dense vs TVM dense, on this CPU.

Layers: VGG-16's fc6 / fc7, BERT-base's FFN (768 -> 3072 -> 768) and ResNet-50's 1x1 convs (224x224),
at batch 1 and 8 (rows of a linear layer, images of a conv). Each layer is a one-layer ``nn.Module``
with random weights compressed through ``tvm_patterns.compress`` (``circulant`` with block b,
``column_combine`` with group g: one-shot projection) and built by ``tp.build`` like any model:
PyTorch eager on the compressed weights (it runs them dense), our TVM dense build of the same
module (no sparse kind) and our build are timed interleaved in one process (medians of the quiet
rounds; rounds other processes disturbed are dropped and counted). Every build is checked against
PyTorch (relative max error < 1e-4) before it is timed. The circulant kind runs linear layers only
(no 1x1 conv kernel yet), so ResNet-50's rows are column combining.

    python scripts/bench_structured.py --csv docs/results/structured-CPU.csv
    python scripts/bench_structured.py --quick          # fc6, fc7, one BERT and two ResNet-50 layers, batch 1

Columns: layer, shape, kind, param (b or g), batch, params_ratio (dense weights / the values the
structure keeps), macs_ratio (dense MACs / the MACs our build runs), ours_ms, pytorch_dense_ms,
tvm_dense_ms, speedup_vs_pytorch, speedup_vs_tvm_dense, bar (speedup_vs_pytorch / macs_ratio),
max_rel_err, rounds, disturbed_rounds, cpu, threads.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from torch import nn  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_patterns as tp  # noqa: E402
from tvm_patterns.apps import arguments  # noqa: E402
from tvm_patterns.apps.demo import rel_error  # noqa: E402
from tvm_patterns.apps.report import fmt_table, write_csv  # noqa: E402
from tvm_patterns.compress import oneshot_prune  # noqa: E402
from tvm_patterns.devices.timing import cpu_name, measure_rounds, use_threads  # noqa: E402

# (name, in, out): linear layers
LINEAR = [("vgg16.fc6", 25088, 4096), ("vgg16.fc7", 4096, 4096), ("bert.ffn_up", 768, 3072),
          ("bert.ffn_down", 3072, 768)]
# (name, C, H, W, K, stride): ResNet-50's unique 1x1 conv shapes
CONV1X1 = [
    ("resnet50.l1.conv1_first", 64, 56, 56, 64, 1), ("resnet50.l1.conv3", 64, 56, 56, 256, 1),
    ("resnet50.l1.conv1", 256, 56, 56, 64, 1), ("resnet50.l2.conv1_first", 256, 56, 56, 128, 1),
    ("resnet50.l2.down", 256, 56, 56, 512, 2), ("resnet50.l2.conv3", 128, 28, 28, 512, 1),
    ("resnet50.l2.conv1", 512, 28, 28, 128, 1), ("resnet50.l3.conv1_first", 512, 28, 28, 256, 1),
    ("resnet50.l3.down", 512, 28, 28, 1024, 2), ("resnet50.l3.conv3", 256, 14, 14, 1024, 1),
    ("resnet50.l3.conv1", 1024, 14, 14, 256, 1), ("resnet50.l4.conv1_first", 1024, 14, 14, 512, 1),
    ("resnet50.l4.down", 1024, 14, 14, 2048, 2), ("resnet50.l4.conv3", 512, 7, 7, 2048, 1),
    ("resnet50.l4.conv1", 2048, 7, 7, 512, 1),
]
CIRCULANT_BLOCKS = (8, 16)
COMBINE_GROUPS = (4,)
COLUMNS = ["layer", "shape", "kind", "param", "batch", "params_ratio", "macs_ratio", "ours_ms", "pytorch_dense_ms",
           "tvm_dense_ms", "speedup_vs_pytorch", "speedup_vs_tvm_dense", "bar", "max_rel_err", "rounds",
           "disturbed_rounds", "cpu", "threads"]


def layer_module(spec) -> tuple[nn.Module, tuple, str]:
    """(module, input shape at batch 1, shape description) of a LINEAR or CONV1X1 entry."""
    if len(spec) == 3:
        _, cin, cout = spec
        return nn.Linear(cin, cout), (1, cin), f"{cin}->{cout}"
    _, C, H, W, K, s = spec
    return nn.Conv2d(C, K, 1, stride=s), (1, C, H, W), f"{C}x{H}x{W}->{K} s{s}"


def compressed(module: nn.Module, kind: str, param: int) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(module).eval()
    key = "block" if kind == "circulant" else "group"
    oneshot_prune(m, [{"module": "0", "kind": kind, key: param}]).squash()
    return m


def built(model: nn.Module, x: torch.Tensor, kinds=None, report=None):
    """(call, output) of our build of ``model`` on ``x`` (``kinds=[]``: the dense TVM build)."""
    ex = tp.build(tp.from_pytorch(model, x), kinds=kinds, report=report)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    arg = tvm.runtime.tensor(x.numpy())
    return (lambda: vm["main"](arg)), vm["main"](arg).numpy()


def bench(spec, kind: str, param: int, batch: int, rounds: int, threads: int) -> dict:
    module, shape, desc = layer_module(spec)
    model = compressed(module, kind, param)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((batch, *shape[1:])).astype("float32"))
    with torch.no_grad():
        ref = model(x).numpy()
    report: list = []
    ours, out = built(model, x, report=report)
    decision = next(d for d in report if d.macs_dense)
    if decision.kind != kind:
        raise AssertionError(f"{spec[0]} {kind}: the build took kind {decision.kind!r} ({decision.reason})")
    err = rel_error(out, ref)
    if not err < 1e-4:
        raise AssertionError(f"{spec[0]} {kind} {param}: relative max error {err:.1e} against PyTorch")
    dense, dense_out = built(model, x, kinds=[])
    if not rel_error(dense_out, ref) < 1e-4:
        raise AssertionError(f"{spec[0]}: the TVM dense build differs from PyTorch")

    def torch_call():
        with torch.no_grad():
            model(x)

    measured = measure_rounds({"pytorch": torch_call, "tvm_dense": dense, "ours": ours}, rounds=rounds)
    t = {k: m for k, (m, _, _) in measured.spread().items()}
    w = model[0].weight.detach()
    kept = int(w.shape[0] * w.shape[1] / param) if kind == "circulant" else int(torch.count_nonzero(w))
    macs_ratio = decision.macs_dense / decision.macs_sparse
    return {"layer": spec[0], "shape": desc, "kind": kind, "param": param, "batch": batch,
            "params_ratio": w.numel() / kept, "macs_ratio": macs_ratio, "ours_ms": t["ours"] * 1e3,
            "pytorch_dense_ms": t["pytorch"] * 1e3, "tvm_dense_ms": t["tvm_dense"] * 1e3,
            "speedup_vs_pytorch": t["pytorch"] / t["ours"], "speedup_vs_tvm_dense": t["tvm_dense"] / t["ours"],
            "bar": t["pytorch"] / t["ours"] / macs_ratio, "max_rel_err": err, "rounds": rounds,
            "disturbed_rounds": len(measured.disturbed()), "cpu": cpu_name(), "threads": threads}


def cases(quick: bool):
    linear = LINEAR if not quick else LINEAR[:3]
    convs = CONV1X1 if not quick else CONV1X1[2:4]
    batches = (1,) if quick else (1, 8)
    for batch in batches:
        for spec in linear:
            for b in CIRCULANT_BLOCKS:
                yield spec, "circulant", b, batch
            for g in COMBINE_GROUPS:
                yield spec, "column_combine", g, batch
        for spec in convs:
            for g in COMBINE_GROUPS:
                yield spec, "column_combine", g, batch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", help="write the rows to this CSV file")
    ap.add_argument("--quick", action="store_true", help="a few layers at batch 1")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of TVM and torch alike")
    args = ap.parse_args(argv)
    arguments.at_least(ap, args, 1, "rounds", "threads")
    threads = use_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 7)
    rows = []
    for spec, kind, param, batch in cases(args.quick):
        rows.append(bench(spec, kind, param, batch, rounds, threads))
        table = fmt_table(rows[-1:], COLUMNS[:13]).split("\n")
        print("\n".join(table if len(rows) == 1 else table[1:]), flush=True)
    if args.csv:
        write_csv(args.csv, rows)
        print(f"wrote {len(rows)} rows to {args.csv}")
    for kind in ("circulant", "column_combine"):
        for batch in sorted({r["batch"] for r in rows}):
            sel = [r for r in rows if r["kind"] == kind and r["batch"] == batch]
            if sel:
                print(f"{kind} batch {batch}: speedup vs PyTorch " + ", ".join(
                    f"{r['layer']}({r['param']}) {r['speedup_vs_pytorch']:.2f}" for r in sel))


if __name__ == "__main__":
    main()
