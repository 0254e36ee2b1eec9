"""How long things take: interleaved timing of candidates, medians, spreads and paired ratios, the
SGEMM roof, and a guard that tells the rounds other processes disturbed.

The machines this runs on are noisy: every candidate is timed in the same rounds, round-robin, and
the median of the rounds is reported (``docs/design.md#measuring``). Only the standard library is
imported here: a peer engine's worker runs this file in a venv of its own (``devices/peers.py``).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
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
# call returns and take the cores from whatever runs next (docs/design.md#measuring).
SETTLE_SECONDS = 0.02


# A round is disturbed when other processes kept more than this share of the machine's cores busy
# during it: on 2 cores a 2-thread PyTorch then slows 10-50x while TVM barely moves.
DISTURBED_SHARE = 0.10


class ForeignLoad:
    """The share of the machine's CPU time that other processes took since the last ``share()``
    (``/proc/stat`` busy time less this process's own; None where ``/proc/stat`` is missing)."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self._last = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / ticks   # less idle, iowait
        own = sum(os.times()[:4])   # this process and its waited-for children: user + system
        return busy, own, time.perf_counter()

    def share(self) -> float | None:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[2] <= last[2]:
            return None
        foreign = (now[0] - last[0]) - (now[1] - last[1])
        return max(0.0, foreign / ((now[2] - last[2]) * self.cores))


@dataclass
class Rounds:
    """Interleaved samples: seconds per call of each candidate, one per round, and the share of the
    machine other processes took in each round (``foreign``; None where it cannot be read)."""

    samples: dict[str, list[float]]
    foreign: list = field(default_factory=list)

    def disturbed(self, limit: float = DISTURBED_SHARE) -> list[int]:
        return [r for r, s in enumerate(self.foreign) if s is not None and s > limit]

    def quiet(self, limit: float = DISTURBED_SHARE) -> dict[str, list[float]]:
        """The samples of the undisturbed rounds (all of them when fewer than 3 are undisturbed)."""
        bad = set(self.disturbed(limit))
        kept = {k: [x for r, x in enumerate(v) if r not in bad] for k, v in self.samples.items()}
        return kept if all(len(v) >= 3 for v in kept.values()) else self.samples

    def spread(self, limit: float = DISTURBED_SHARE) -> dict[str, tuple[float, float, float]]:
        """(median, p10, p90) seconds per call of each candidate over its quiet rounds."""
        return {k: (median(v), percentile(v, 10), percentile(v, 90)) for k, v in self.quiet(limit).items()}


def measure_rounds(fns: dict[str, Callable[[], object]], rounds: int = 7, min_time: float = 0.05) -> Rounds:
    """Seconds per call of each function, one sample per round, candidates interleaved (the order
    rotated every round), with each round's foreign load."""
    numbers = {name: _calibrate(fn, min_time) for name, fn in fns.items()}
    result = Rounds({name: [] for name in fns})
    names = list(fns)
    load = ForeignLoad()
    for r in range(rounds):
        load.share()
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, number = fns[name], numbers[name]
            time.sleep(SETTLE_SECONDS)
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            result.samples[name].append((time.perf_counter() - t0) / number)
        result.foreign.append(load.share())
    return result


def measure_interleaved(fns: dict[str, Callable[[], object]], rounds: int = 7,
                        min_time: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, candidates interleaved."""
    return measure_rounds(fns, rounds, min_time).samples


def median(xs) -> float:
    return float(statistics.median(xs))


def percentile(xs, q: float) -> float:
    """The ``q``-th percentile (0..100) of ``xs``, linearly interpolated."""
    xs = sorted(xs)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


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


def use_threads(n: int | None = None) -> int:
    """Run TVM and PyTorch on ``n`` threads each (default: every core) and return n; call it before
    TVM first runs in parallel, which sizes its pool from TVM_NUM_THREADS then. Without it the two
    differ: on some VMs ``tvm.runtime.num_threads()`` says 1 while TVM's pool runs on every core."""
    import torch

    n = (os.cpu_count() or 1) if n is None else n
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an integer >= 1, got {n!r}")
    os.environ["TVM_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


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
