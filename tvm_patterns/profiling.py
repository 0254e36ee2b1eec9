"""Per-kernel time of a Relax VM run, through the VM's call instrumentation."""
from __future__ import annotations

import time
from collections import defaultdict

import tvm
from tvm import relax


def kernel_times(vm: relax.VirtualMachine, *inputs, runs: int = 3) -> dict[str, float]:
    """{kernel symbol: median seconds per run}, for the PrimFunc calls of ``main``."""
    per_run: list[dict[str, float]] = []
    current: dict[str, float] = defaultdict(float)
    start: dict[str, float] = {}

    def instrument(func, symbol, before, ret, *args):
        if before:
            start[symbol] = time.perf_counter()
        else:
            current[symbol] += time.perf_counter() - start.pop(symbol, time.perf_counter())
        return 0

    vm.set_instrument(tvm.runtime.convert(instrument))
    try:
        for _ in range(runs):
            current.clear()
            vm["main"](*inputs)
            per_run.append(dict(current))
    finally:
        vm.set_instrument(None)
    symbols = [s for s in per_run[-1] if not s.startswith("vm.builtin")]
    return {s: sorted(r.get(s, 0.0) for r in per_run)[len(per_run) // 2] for s in symbols}
