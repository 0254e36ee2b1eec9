"""One batch of schedules through MetaSchedule's builder and runner, outside the search (the default
points before it, the re-measurement after it)."""
from __future__ import annotations

import os
import shutil

from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo


def build_inputs(builder, items, target, device_type: str):
    """Build ``items`` [(schedule, task)]; returns (builder results, runner inputs of the ones that
    built, their positions in ``items``)."""
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch, _ in items])
    inputs, positions = [], []
    for pos, ((_, task), b) in enumerate(zip(items, built)):
        if b.error_msg is None:
            inputs.append(ms.runner.RunnerInput(b.artifact_path, device_type,
                                                ArgInfo.from_prim_func(task.mod["main"])))
            positions.append(pos)
    return built, inputs, positions


def remove_artifacts(built) -> None:
    """Delete the builder's temporary directories."""
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
