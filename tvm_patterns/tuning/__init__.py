"""Auto-tuning of our kernels (and the dense ones that remain) with MetaSchedule + XGBoost.

The path of one run, ``tune(mod, target, trials)``::

    tasks.extract_tasks     the model's fused kernels that have a design space (schedules/*), each
         |                  with its real constant inputs (index tables) saved for the workers
    search.tune             default points measured first; MetaSchedule's evolutionary search with
         |                  the XGBoost cost model; batches built here, run by measure.make_runner
         |                  (this machine or an RPC device), rescaled by measure.DriftCorrectedRunner
    verify.verify           each kernel's default (built twice) and its best records re-measured
         |                  side by side; a record wins only by beating both defaults by 5%
    database                records appended to tuning_logs/<target>/, verified picks in best/;
         |                  bad lines reported and set aside, logs of another target refused
    build(tuning_log=...)   database.ApplyTuningLog puts the picks in the build pipeline

``measure`` holds how a kernel is measured (the code the builder/runner workers run, batches outside
the search, the drift correction, the side-by-side rounds).
"""
from .database import ApplyTuningLog, TuningLogError, TuningLogWarning, load_database, log_dir_for
from .measure import rpc_runner
from .search import DEFAULT_LOG_DIR, TuneResult, tune
from .tasks import Task, extract_tasks

__all__ = ["tune", "rpc_runner", "TuneResult", "DEFAULT_LOG_DIR", "extract_tasks", "Task", "load_database",
           "log_dir_for", "ApplyTuningLog", "TuningLogError", "TuningLogWarning"]
