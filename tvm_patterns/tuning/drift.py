"""``DriftCorrectedRunner``: the search's measurements on the scale of the moment the defaults were measured.

A search takes half an hour or more and the machine's speed drifts meanwhile (a phone throttles as
it heats; on this project's 2-core Zen 3 VM other tenants share the L3). Here every batch a task
sends to the runner is measured between two runs of that task's default point, and each candidate's
seconds are divided by the default's slowdown since it was first measured, so records measured far
apart rank as if side by side. Measured on VGG-16 (64 trials, 55 batches): the defaults measured
before the search were slow, the factors ran x0.52..x1.52 (median x0.81). The correction is only as
good as the two default runs of a batch: one LocalRunner measurement here varies by 9% (CV), and two
adjacent ones correlate at 0.31, so it removes drift over minutes, not the noise of one measurement
(the verification, ``verify``, is what that noise is left to).
"""
from __future__ import annotations

import statistics

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

from . import measure
from .database import mean_seconds


def key(runner_input) -> str:
    """The task a runner input belongs to, by its argument list (``measure.signature``): tasks with
    the same one share a reference, as they share their inputs in ``measure.TrueArguments``."""
    return measure.signature([a.as_json() for a in runner_input.args_info])


@derived_object
class DriftCorrectedRunner(ms.runner.PyRunner):
    """``runner``, with each batch bracketed by the default point of its task and rescaled.

    references: {``key``: (the default's runner input, its seconds measured before the search)};
    a batch of a task without one (its default failed) is measured as it is. ``drift`` holds each
    batch's factor (default now / default then), for the progress line and the tests."""

    def __init__(self, runner, references: dict):
        super().__init__()
        self.runner, self.references, self.drift = runner, references, []

    def run(self, runner_inputs):
        ref = self.references.get(key(runner_inputs[0])) if runner_inputs else None
        if ref is None:
            return self.runner.run(runner_inputs)
        default, then = ref
        results = [f.result() for f in self.runner.run([default, *runner_inputs, default])]
        now = [mean_seconds(r.run_secs) for r in (results[0], results[-1]) if r.error_msg is None]
        now = [s for s in now if s is not None]
        factor = statistics.mean(now) / then if now else 1.0
        self.drift.append(factor)
        return [LocalRunnerFuture(error_message=r.error_msg) if r.error_msg is not None else
                LocalRunnerFuture(res=[float(s) / factor for s in r.run_secs])
                for r in results[1:-1]]
