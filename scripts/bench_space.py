"""Every point of a kernel's design space, measured in process: is there a better point than the
default at all? (The ground truth for the tuner: its search samples the space, and a "tuned"
record that beats the default by less than this machine's noise is no gain.)

    python scripts/bench_space.py [--kernels NAME,NAME | --slowest 2] [--max-points 400] [--csv out/bench_space.csv]

VGG-16, pattern-pruned as ``tvm-patterns tune`` prunes it. For each kernel, every point of every
space (tvm_patterns.tuning.tasks.every_point) is compiled and run on the same real arguments;
all are screened in ``--screen-rounds`` interleaved rounds, then the ``--top`` fastest, the default
and a second build of the default (the noise) are timed again in ``--rounds`` rounds. Spaces of more
than ``--max-points`` points are skipped (said so). CSV: the final round's points.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import tvm
import tvm_ffi
from tvm import s_tir

import tvm_patterns as tp
from tvm_patterns.apps.report import fmt_table, write_csv
from tvm_patterns.devices.timing import measure_interleaved, median
from tvm_patterns.apps.models import get_network
from tvm_patterns.compress import pattern_prune
from tvm_patterns.tuning import extract_tasks
from tvm_patterns.tuning.tasks import every_point, replayed

from bench_tuning import arguments, kernel


def space_names(task) -> list[str]:
    """A name for each space of the task's design space ((lanes, order) where the schedule says)."""
    spaces = task.design_space(s_tir.Schedule(task.mod))
    spaces = spaces if isinstance(spaces, list) else [spaces]
    module = sys.modules[task.design_space.func.__module__]
    points = getattr(module, "space_points", None)
    names = [f"{lanes} lanes {order}" for lanes, order in points(s_tir.Schedule(task.mod), task.design_space.keywords["target"])] \
        if points else [f"space {n}" for n in range(len(spaces))]
    return list(zip(spaces, names))


def measure_space(task, target, dev, args, screen_rounds: int, rounds: int, top: int, max_points: int, out=print):
    spaces = space_names(task)
    points = [(space, name, d) for space, name in spaces for d in every_point(space)]
    if len(points) > max_points:
        out(f"{task.name}: {len(points)} points, more than --max-points {max_points}: skipped")
        return []
    t0 = time.perf_counter()
    default = task.default_schedule(target)
    fns = {"default": kernel(default.mod, target, task, dev, args),
           "default_again": kernel(default.mod, target, task, dev, args)}
    for space, name, decisions in points:
        sch = replayed(space, list(decisions), task.mod)
        if not tvm_ffi.structural_equal(sch.mod, default.mod):
            fns[f"{name} {list(decisions)}"] = kernel(sch.mod, target, task, dev, args)
    out(f"{task.name}: {len(points)} points in {len(spaces)} spaces, {len(fns)} kernels built "
        f"in {time.perf_counter() - t0:.0f} s")
    screen = {k: median(v) for k, v in measure_interleaved(fns, rounds=screen_rounds).items()}
    best = [k for k in sorted(screen, key=screen.get) if not k.startswith("default")][:top]
    final = {k: median(v) for k, v in measure_interleaved(
        {k: fns[k] for k in ["default", "default_again", *best]}, rounds=rounds).items()}
    rows = [{"layer": task.name, "point": k, "ms": final[k] * 1e3, "speedup": final["default"] / final[k]}
            for k in sorted(final, key=final.get)]
    out(fmt_table(rows, ["layer", "point", "ms", "speedup"]))
    others = [r for r in rows if not r["point"].startswith("default")]
    noise = final["default"] / final["default_again"]
    out(f"{task.name}: best other point x{others[0]['speedup']:.3f} ({others[0]['point']}); "
        f"the default against its copy x{noise:.3f}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--kernels", help="comma-separated task names (as tvm-patterns tune prints them)")
    ap.add_argument("--slowest", type=int, default=2, help="else the slowest N kernels at their default point")
    ap.add_argument("--max-points", type=int, default=400)
    ap.add_argument("--screen-rounds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--csv", default="out/bench_space.csv")
    args = ap.parse_args(argv)
    target, dev = tp.targets.host(), tvm.cpu()
    model = get_network("vgg16", args.image_size)
    pattern_prune(model)
    tasks, _ = extract_tasks(tp.from_pytorch(model, torch.randn(1, 3, args.image_size, args.image_size)), target)
    if args.kernels:
        names = args.kernels.split(",")
        unknown = sorted(set(names) - {t.name for t in tasks})
        if unknown:
            ap.error(f"no such kernel: {', '.join(unknown)}; the kernels are {', '.join(t.name for t in tasks)}")
        chosen = [t for t in tasks if t.name in names]
    else:
        first = {n: median(v) for n, v in measure_interleaved(
            {t.name: kernel(t.default_schedule(target).mod, target, t, dev) for t in tasks}, rounds=3).items()}
        chosen = sorted(tasks, key=lambda t: -first[t.name])[: args.slowest]
    rows = []
    for t in chosen:
        rows += measure_space(t, target, dev, arguments(t, dev), args.screen_rounds, args.rounds, args.top,
                              args.max_points)
    write_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
