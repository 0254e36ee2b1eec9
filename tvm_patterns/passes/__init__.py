"""Relax and TIR passes: recognise sparse weights, rewrite them, schedule our kernels."""
from . import block_kind, filter_block_kind, pattern_kind  # noqa: F401  (register the kinds; "filter_block" before "pattern")
from . import int8_block_kind, int8_filter_block_kind  # noqa: F401  (before "block", "filter_block"; when asked for)
from . import circulant_kind, column_combine_kind  # noqa: F401  (after "block": dense-looking or one-row structures)
from . import int8_dense_conv_kind  # noqa: F401  (last: a conv no other kind takes, in int8 when asked for)
from .registry import LayerContext, LeaveDense, Plan, check_options, register_sparse_kind, sparse_kinds
from .rewrite import LayerDecision, PatternConvRewrite, SparseRewrite, weight_key
from .schedule_pass import ApplySchedules
from .pipeline import pipeline
