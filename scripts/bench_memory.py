"""How much of each pattern conv's time is the input's trip through the caches: the default schedule
on its real index tables vs the same kernel with its input confined to a few channels.

    python scripts/bench_memory.py [--model vgg16] [--channels 8] [--rounds 9] [--csv out/bench_memory.csv]

The confined run rewrites only the channel part of each table entry (channel c becomes
c mod ``--channels``): the same instructions, lengths, branches and FLOPs, but every load then
hits the few planes that stay in L1. ``confined_ms`` is this kernel's compute ceiling, and
``memory_share`` = 1 - confined / real the share of its time spent waiting for the input. A layer
with a large share gains little from knobs that only reshape the register tile or the loop order
(the tuner's picks there stay within the noise); it needs less traffic (a smaller working set per
row block). ``real_again`` is a second run of the real tables: this machine's noise.
GFLOP/s count the nonzero MACs (taps of the kernels in the tables) only.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import tvm
from tvm import s_tir

import tvm_patterns as tp
from tvm_patterns.apps.report import fmt_table, write_csv
from tvm_patterns.devices.timing import measure_interleaved, median, paired_speedup
from tvm_patterns.computes.pattern_conv2d import PAD_BLOCK
from tvm_patterns.apps.models import NETWORKS, pruned_network
from tvm_patterns.tuning import extract_tasks

from bench_tuning import PATTERN_BLOCKS, arguments, geometry

COLUMNS = ["layer", "kernel", "input", "output", "real_ms", "confined_ms", "memory_share", "noise",
           "real_gflops", "confined_gflops"]


def tables(task) -> tuple[int, int]:
    """(argument index of the lengths, of the channel / offset table) of a pattern-conv task."""
    ints = {i: a for i, a in task.constants.items() if a.dtype == np.int32}
    table = next(i for i, a in ints.items() if a.ndim == 3)
    return next(i for i, a in ints.items() if i != table), table


def plane(task) -> int:
    """Elements of one padded input channel (the pad stage's ``plane``)."""
    sch = s_tir.Schedule(task.mod)
    pad = next(b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.startswith(PAD_BLOCK))
    return int(sch.get(pad).annotations["plane"])


def confined(table: np.ndarray, plane_size: int, channels: int) -> np.ndarray:
    """Table entries (channel * plane + offset inside the plane) with channel c moved to c mod ``channels``."""
    return (table // plane_size % channels) * plane_size + table % plane_size


def bench(task, dev, target, channels: int, rounds: int) -> dict:
    f = tvm.compile(task.default_schedule(target).mod, target=target)["main"]
    args = arguments(task, dev)
    lengths, table = tables(task)
    small = list(args)
    small[table] = tvm.runtime.tensor(confined(task.constants[table], plane(task), channels).astype("int32"), dev)
    t = measure_interleaved({"real": lambda: f(*args), "real_again": lambda: f(*args),
                             "confined": lambda: f(*small)}, rounds=rounds)
    taps = next(a for a in task.constants.values() if a.dtype == np.float32 and a.ndim >= 3).shape[-1]
    shape_in, shape_out = geometry(task)
    n, _, ho, wo = shape_out
    flops = 2 * n * int(task.constants[lengths].sum()) * taps * ho * wo
    real, conf = median(t["real"]), median(t["confined"])
    return {"layer": task.name, "kernel": task.block, "input": shape_in, "output": shape_out,
            "real_ms": real * 1e3, "confined_ms": conf * 1e3,
            "memory_share": 1 - 1 / paired_speedup(t["real"], t["confined"]),
            "noise": paired_speedup(t["real"], t["real_again"]),
            "real_gflops": flops / real / 1e9, "confined_gflops": flops / conf / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16", choices=sorted(NETWORKS))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--csv", default="out/bench_memory.csv")
    a = ap.parse_args()
    target, dev = tp.targets.host(), tvm.cpu()
    _, _, mod = pruned_network(a.model, a.image_size)
    tasks = [t for t in extract_tasks(mod, target)[0] if t.block in PATTERN_BLOCKS]
    rows = []
    for i, task in enumerate(tasks):
        rows.append(bench(task, dev, target, a.channels, a.rounds))
        print(f"[{i + 1}/{len(tasks)}] {task.name}: {rows[-1]['real_ms']:.3f} ms, confined to {a.channels} "
              f"channels {rows[-1]['confined_ms']:.3f} ms", flush=True)
    print(fmt_table(rows, COLUMNS))
    os.makedirs(os.path.dirname(a.csv) or ".", exist_ok=True)
    write_csv(a.csv, rows)


if __name__ == "__main__":
    main()
