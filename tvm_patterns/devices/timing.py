"""How long things take: interleaved timing of candidates, medians and paired ratios, the SGEMM
roof, and per-kernel times of a Relax VM run (through the VM's call instrumentation).

The machines this runs on are noisy: every candidate is timed in the same rounds, round-robin, and
the median of the rounds is reported (``docs/design.md#measuring``).
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import tvm
from tvm import relax


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per sample so that one sample takes at least ``min_time`` seconds."""
    fn()
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or number >= 1 << 16:
            return number
        number *= max(2, min(10, int(min_time / max(dt, 1e-9)) + 1))


# Pause before each sample: the thread pools of PyTorch (OpenMP) and TVM spin for a while after a
# call returns and take the cores from whatever runs next (docs/design.md#measuring).
SETTLE_SECONDS = 0.02


def measure_interleaved(fns: dict[str, Callable[[], object]], rounds: int = 7,
                        min_time: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, candidates interleaved."""
    numbers = {name: _calibrate(fn, min_time) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, number = fns[name], numbers[name]
            time.sleep(SETTLE_SECONDS)
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - t0) / number)
    return samples


def median(xs) -> float:
    return float(statistics.median(xs))


def paired_speedup(base, other) -> float | None:
    """How much faster ``other`` runs than ``base``: the median over rounds of base / other, from the
    samples of one round at a time (None where either failed); None without a round of both.
    Adjacent samples share the machine's load of the moment, so this is steadier than a ratio of
    medians (docs/design.md#measuring)."""
    ratios = [b / o for b, o in zip(base, other) if b is not None and o is not None]
    return float(statistics.median(ratios)) if ratios else None


def sgemm_gflops(n: int = 1024, rounds: int = 5) -> float:
    """The machine's float32 GEMM rate through PyTorch (the compute roof), in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    t = measure_interleaved({"sgemm": lambda: torch.mm(a, b)}, rounds=rounds)["sgemm"]
    return 2.0 * n ** 3 / median(t) / 1e9


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), for result files."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def call_times(vm: relax.VirtualMachine, *inputs, runs: int = 3) -> list[tuple[str, float]]:
    """[(kernel symbol, median seconds)] for each PrimFunc call of ``main``, in execution order.

    A symbol appears once per call (structurally equal PrimFuncs are shared between layers).
    """
    per_run: list[list[tuple[str, float]]] = []
    calls: list[tuple[str, float]] = []
    start: list[float] = []

    def instrument(func, symbol, before, ret, *args):
        if before:
            start.append(time.perf_counter())
        else:
            calls.append((symbol, time.perf_counter() - start.pop()))
        return 0

    vm.set_instrument(tvm.runtime.convert(instrument))
    try:
        for _ in range(runs):
            calls.clear()
            vm["main"](*inputs)
            per_run.append([c for c in calls if not c[0].startswith("vm.builtin")])
    finally:
        vm.set_instrument(None)
    return [(sym, statistics.median(r[i][1] for r in per_run)) for i, (sym, _) in enumerate(per_run[-1])]


def kernel_times(vm: relax.VirtualMachine, *inputs, runs: int = 3) -> dict[str, float]:
    """{kernel symbol: median seconds per run, summed over its calls}."""
    totals: dict[str, float] = {}
    for sym, t in call_times(vm, *inputs, runs=runs):
        totals[sym] = totals.get(sym, 0.0) + t
    return totals
