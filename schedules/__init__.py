"""Hand-written schedules for tvm_patterns' computes, one module per kernel and target.

Importing the package registers them all (``schedules.registry``).
"""
from . import (  # noqa: F401
    block_sparse_neon,
    block_sparse_opencl,
    block_sparse_x86,
    circulant_dense_cpu,
    circulant_dense_opencl,
    column_combine_conv2d_1x1_nhwc_x86,
    column_combine_dense_cpu,
    dense_conv2d_nchw_x86,
    dense_matmul_x86,
    depthwise_pattern_conv2d_nchw_x86,
    filter_block_pattern_conv2d_nchw_neon,
    filter_block_pattern_conv2d_nchw_opencl,
    filter_block_pattern_conv2d_nchw_x86,
    generic_x86,
    group_conv2d_nchw_x86,
    int8_filter_block_pattern_conv2d_rowpair_x86,
    int8_quantize_rowpairs_x86,
    pattern_conv2d_by_pattern_neon,
    pattern_conv2d_by_pattern_x86,
    pattern_conv2d_nchw_neon,
    pattern_conv2d_nchw_opencl,
    pattern_conv2d_nchw_x86,
    pool2d_nchw_x86,
)
