"""Tuning on the slowest layers of a network (VGG-16 by default): our kernels at the default point vs
tuned (from a log), and TVM's dense conv tuned by MetaSchedule's own design space with the same trial budget.

    python scripts/bench_tuning.py [--model vgg16] [--log tuning_logs] [--layers 4] [--kernels pattern|all] [--trials 8] [--csv out/bench_tuning.csv]

The network is pruned as ``tvm-patterns tune`` and ``demo`` prune it (``pruned_network``), so its
kernels are the ones the log was tuned on.

Each kernel runs alone with the real index tables of its layer, and a layer's default, its copy and
its pick run on the same buffers (so their ratios are about code, not where buffers landed);
times are interleaved medians, ratios the medians of each round's ratio (``paired_speedup``).
The tuned schedule is the log's verified pick (``<log>/best``). Every layer also times a second
compiled copy of its default schedule (``default_again``): that ratio is this machine's noise. A
tuned kernel counts as faster beyond the noise when it beats the widest noise ratio of the run
(the last lines set that count against the bar of issue 4: faster on half the layers, never more
than 5% slower), and the count beyond each layer's own noise ratio is printed too. Where the pick
is the default schedule itself, its ratio is noise too. The dense tuning runs here (it needs no
log) and takes a while. ``--kernels all`` measures every tuned kernel of the network (the dense
first conv and the linear layers too), not only the pattern convs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

import tvm_patterns as tp
from tvm_patterns.apps.report import fmt_table, write_csv
from tvm_patterns.devices.timing import cpu_name, measure_interleaved, measure_rounds, median, paired_speedup, use_threads
from tvm_patterns.computes.pattern_conv2d import BY_PATTERN_BLOCK, MAIN_BLOCK
from tvm_patterns.apps.models import NETWORKS, pruned_network
from tvm_patterns.tuning import extract_tasks, load_database, log_dir_for
from tvm_patterns.tuning import measure

PATTERN_BLOCKS = (MAIN_BLOCK, BY_PATTERN_BLOCK)   # both implementations of the pattern conv


def arguments(task, dev) -> list:
    """The kernel's arguments: its real constants (index tables, weights), random data elsewhere."""
    args = []
    for i, info in enumerate(ArgInfo.from_prim_func(task.mod["main"])):
        a = task.constants.get(i)
        if a is None:
            a = np.random.default_rng(0).uniform(-1, 1, [int(x) for x in info.shape]).astype(str(info.dtype))
        args.append(tvm.runtime.tensor(a.astype(str(info.dtype)), dev))
    return args


def kernel(sch_mod, target, task, dev, args=None):
    """A callable running one compiled kernel on its real inputs (``args``: shared ones, else its own)."""
    ex = tvm.compile(sch_mod, target=target)
    args = arguments(task, dev) if args is None else args
    f = ex["main"]
    return lambda: f(*args)


def geometry(task) -> tuple:
    """(input shape, output shape) of a conv kernel."""
    info = ArgInfo.from_prim_func(task.mod["main"])
    return tuple(int(d) for d in info[0].shape), tuple(int(d) for d in info[-1].shape)


def is_3x3(task) -> bool:
    """Whether a dense conv kernel's weight (its second argument) is [K, C, 3, 3]."""
    return tuple(task.constants[1].shape[2:]) == (3, 3)


def dense_ms(task, target, trials, work_dir):
    """TVM's own MetaSchedule space (generated from the target's rules) for a dense conv kernel."""
    db = ms.tune_tir(mod=task.mod, target=target, work_dir=work_dir, max_trials_global=trials,
                     num_trials_per_iter=min(trials, 16),
                     builder=ms.builder.LocalBuilder(f_build=measure.build_artifact, timeout_sec=120),
                     runner=ms.runner.LocalRunner(f_alloc_argument=measure.TrueArguments(os.path.join(work_dir, "in.npz"))),
                     cost_model=ms.cost_model.XGBModel(num_warmup_samples=max(4, trials // 4), adaptive_training=False))
    sch = ms.tir_integration.compile_tir(db, task.mod, target)
    return None if sch is None else sch.mod


def distance(ratio: float) -> float:
    """How far a ratio lies from x1, as a ratio above 1: x0.95 is as far as x1.05."""
    return max(ratio, 1 / ratio)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg16", choices=sorted(NETWORKS))
    ap.add_argument("--log", default="tuning_logs")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--layers", type=int, default=4, help="the slowest N kernels (default point)")
    ap.add_argument("--kernels", choices=("pattern", "all"), default="pattern",
                    help="the pattern convs, or every kernel that tune tunes")
    ap.add_argument("--trials", type=int, default=8, help="MetaSchedule budget for each dense layer")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense MetaSchedule tuning")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of TVM")
    ap.add_argument("--csv", default="out/bench_tuning.csv")
    args = ap.parse_args(argv)
    threads = use_threads(args.threads)
    target, dev = tp.targets.host(), tvm.cpu()
    _, _, mod = pruned_network(args.model, args.image_size)
    dense_tasks, _ = extract_tasks(mod, target, sparse=False)   # the same layers, every conv dense
    tasks, _ = extract_tasks(mod, target)
    db = load_database(args.log, target)
    print(f"log: {log_dir_for(args.log, target)}")
    ours = [t for t in tasks if args.kernels == "all" or t.block in PATTERN_BLOCKS]
    default_schedules = {t.name: t.default_schedule(target) for t in ours}
    shared = {t.name: arguments(t, dev) for t in ours}   # a layer's kernels all run on the same buffers
    defaults = {t.name: kernel(default_schedules[t.name].mod, target, t, dev, shared[t.name]) for t in ours}
    first = {n: median(v) for n, v in measure_interleaved(defaults, rounds=3).items()}
    slowest = sorted(ours, key=lambda t: -first[t.name])[: args.layers]
    rows = []
    for i, t in enumerate(slowest):
        fns = {"default": defaults[t.name],
               "default_again": kernel(default_schedules[t.name].mod, target, t, dev, shared[t.name])}
        tuned = db.query_schedule(t.mod, target, workload_name="main")
        is_default = tuned is not None and tvm_ffi.structural_equal(tuned.mod, default_schedules[t.name].mod)
        if tuned is not None:   # measured even when it is the default schedule: that ratio is the noise
            fns["tuned"] = kernel(tuned.mod, target, t, dev, shared[t.name])
        dense = None if t.block not in PATTERN_BLOCKS else next(   # the same layer, dense
            (d for d in dense_tasks if d.block == "conv2d_nchw" and is_3x3(d) and geometry(d) == geometry(t)), None)
        if dense is not None:
            fns["dense_default"] = kernel(dense.default_schedule(target).mod, target, dense, dev)
            if not args.no_dense:
                with tempfile.TemporaryDirectory() as wd:
                    from tvm_patterns.tuning.tasks import save_constants

                    save_constants([dense], os.path.join(wd, "in.npz"))
                    mod = dense_ms(dense, target, args.trials, wd)
                    if mod is not None:
                        fns["dense_ms_tuned"] = kernel(mod, target, dense, dev)
        measured = measure_rounds(fns, rounds=args.rounds)
        samples = measured.quiet()
        row = {"layer": t.name, "kernel": t.block,
               **{f"{k}_{q}": v * 1e3 for k, stat in measured.spread().items()
                  for q, v in zip(("ms", "p10_ms", "p90_ms"), stat)},
               "rounds": args.rounds, "disturbed_rounds": len(measured.disturbed()), "cpu": cpu_name(),
               "threads": threads,
               "noise_speedup": paired_speedup(samples["default"], samples["default_again"])}
        if "tuned" in samples:
            row["tuned_speedup"] = paired_speedup(samples["default"], samples["tuned"])
            row["tuned_is_default"] = is_default
        rows.append(row)
        print(fmt_table([row], list(row)), flush=True)
    print(fmt_table(rows, sorted({k for r in rows for k in r}, key=lambda k: (k != "layer", k))))
    tuned = [r for r in rows if "tuned_speedup" in r]
    picked = [r for r in tuned if not r["tuned_is_default"]]
    other = [r["tuned_speedup"] for r in picked]
    same = [r["tuned_speedup"] for r in tuned if r["tuned_is_default"]]
    if tuned:
        print(f"the tuned schedule is another point than the default on {len(other)}/{len(tuned)} layers"
              + (f": faster on {sum(x > 1 for x in other)}, x{min(other):.3f}..x{max(other):.3f}" if other else ""))
    noise = [r["noise_speedup"] for r in rows] + same
    print(f"the default schedule against a copy of itself (this machine's noise): x{min(noise):.3f}..x{max(noise):.3f}")
    if tuned:
        widest = max(distance(x) for x in noise)
        beyond = sum(x > widest for x in other)
        own = sum(r["tuned_speedup"] > distance(r["noise_speedup"]) for r in picked)
        print(f"tuned faster beyond its own layer's noise (default against its copy) on {own}/{len(rows)} layers")
        worst = min(other, default=1.0)   # picks that are the default itself measure noise, not a loss
        print(f"bar: tuned faster beyond the noise on {beyond}/{len(rows)} layers measured "
              f"({'met' if 2 * beyond >= len(rows) else 'not met'}: half); worst tuned/default "
              f"x{worst:.3f} ({'met' if worst >= 0.95 else 'not met'}: never below x0.95)")
    write_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
