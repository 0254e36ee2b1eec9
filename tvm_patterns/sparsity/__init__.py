"""Sparsity structures as plain numpy: pattern libraries, projections and packed formats."""
from .pattern_library import PatternLibrary
from .projection import (
    kernels_to_keep,
    pattern_assignment,
    project_connectivity,
    project_pattern_connectivity,
    project_patterns,
)
from .pattern_format import (KernelTables, NotPatternSparse, PackedPatternConv, PatternTables, fit_patterns,
                             kernel_tables, pack, pattern_tables, tap_offsets)
