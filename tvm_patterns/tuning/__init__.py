"""Auto-tuning of our kernels (and the dense ones that remain) with MetaSchedule + XGBoost.

tasks: the model's kernels with a design space (from our pipeline, after fusion);
measure: what the builder / runner workers run (real index tables as inputs);
database: tuning logs per target (bad lines skipped, other targets refused);
tune: the search, locally or through an RPC tracker; cli: ``tvm-patterns tune``.
"""
from .database import TuningLogError, TuningLogWarning, load_database, log_dir_for
from .tasks import Task, extract_tasks
from .tune import TuneResult, rpc_runner, tune

__all__ = ["tune", "rpc_runner", "TuneResult", "extract_tasks", "Task", "load_database", "log_dir_for",
           "TuningLogError", "TuningLogWarning"]
