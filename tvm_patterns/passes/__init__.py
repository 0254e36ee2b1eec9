"""Relax and TIR passes: recognise sparse weights, rewrite them, schedule our kernels."""
from . import pattern_kind  # noqa: F401  (registers the "pattern" kind)
from .registry import LayerContext, LeaveDense, Plan, register_sparse_kind, sparse_kinds
from .rewrite import LayerDecision, PatternConvRewrite, SparseRewrite, weight_key
from .schedule_pass import ApplySchedules
