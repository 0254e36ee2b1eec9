"""Compression in PyTorch: pattern, connectivity and block-punched pruning, block-circulant matrices and
column combining, by ADMM or in one shot.

    pruner = ADMMPruner(model, [{"module": "features.3", "kind": "pattern", "patterns": 8, "connectivity": 3.6}])
    loss = criterion(model(x), y) + pruner.penalty()     # in the user's loop; pruner.step() per epoch
    pruner.prune(); ...masked fine-tuning...; pruner.squash()

torch only: the projections wrap the numpy ones of ``tvm_patterns.sparsity``.
"""
from .admm import ADMMPruner
from .calibration import calibrate
from .kinds import KINDS, Constraint, parse_config, register_kind
from .oneshot import MaskPruner, oneshot_prune, pattern_prune, prunable_3x3_convs
from .recipes import LAYER_TYPES, layer_type, whole_network_config
from .projections import (
    project_block_punched,
    project_circulant,
    project_column_combine,
    project_connectivity,
    project_filter_block_pattern,
    project_pattern_connectivity,
    project_patterns,
)

__all__ = ["ADMMPruner", "calibrate", "MaskPruner", "oneshot_prune", "pattern_prune", "prunable_3x3_convs", "parse_config",
           "register_kind", "KINDS", "Constraint", "project_patterns", "project_connectivity",
           "project_pattern_connectivity", "project_filter_block_pattern", "project_block_punched", "project_circulant",
           "project_column_combine", "whole_network_config", "layer_type",
           "LAYER_TYPES"]
