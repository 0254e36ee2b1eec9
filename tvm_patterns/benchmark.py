"""Measurement helpers shared by the benchmark scripts: interleaved timing, medians, CSV, roofline.

This machine is noisy: every candidate is timed in the same rounds, round-robin, and the median
of the rounds is reported.
"""
from __future__ import annotations

import csv
import os
import statistics
import time
from typing import Callable


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
# call returns and take the cores from whatever runs next. Without it, on 2 cores, a TVM kernel
# measured right after PyTorch's conv read 11% slower than a second build of itself.
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
    Adjacent samples share the machine's load of the moment: on 2 noisy cores, two builds of each of
    ResNet-50's 30 kernels (11 rounds, same buffers, two runs) came out 1.4-1.9% apart on average
    this way, 3.5-4.1% apart as a ratio of their medians."""
    ratios = [b / o for b, o in zip(base, other) if b is not None and o is not None]
    return float(statistics.median(ratios)) if ratios else None


def sgemm_gflops(n: int = 1024, rounds: int = 5) -> float:
    """The machine's float32 GEMM rate through PyTorch (the compute roof), in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    t = measure_interleaved({"sgemm": lambda: torch.mm(a, b)}, rounds=rounds)["sgemm"]
    return 2.0 * n ** 3 / median(t) / 1e9


def write_csv(path: str, rows: list[dict]) -> None:
    """Rows of dicts -> CSV with a header row (columns in first-seen order)."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def fmt_table(rows: list[dict], cols: list[str]) -> str:
    """A plain-text table of the given columns (floats with 3 significant digits)."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    cells = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(x[i]) for x in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
