"""Per-call kernel times of a Relax VM run, through the VM's call instrumentation."""
from __future__ import annotations

import statistics
import time

import tvm
from tvm import relax


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
