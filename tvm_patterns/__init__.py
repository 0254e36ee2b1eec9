"""tvm-patterns: pattern- and block-sparse convolutions compiled by Apache TVM.

    mod = tvm_patterns.from_pytorch(model, example_inputs)
    ex = tvm_patterns.build(mod, tvm_patterns.targets.host())
    ex = tvm_patterns.build(mod, int8=tvm_patterns.calibrate(model, batches))   # int8 where it runs
    tvm_patterns.tune(mod, target, trials=64, runner=tvm_patterns.tuning.rpc_runner(...))
"""
import os

# TVM's runtime picks one thread on small machines and pins the process to CPU 0.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

from . import targets  # noqa: E402
from .build import build  # noqa: E402
from .compress.calibration import calibrate  # noqa: E402
from .devices.export import export_library  # noqa: E402
from .importer import from_pytorch  # noqa: E402
from .passes import LayerDecision, PatternConvRewrite, SparseRewrite, pipeline  # noqa: E402
from .sparsity import PatternLibrary  # noqa: E402
from .tuning import tune  # noqa: E402

__all__ = ["build", "calibrate", "pipeline", "export_library", "from_pytorch", "targets", "tune",
           "PatternConvRewrite", "SparseRewrite", "LayerDecision", "PatternLibrary"]
