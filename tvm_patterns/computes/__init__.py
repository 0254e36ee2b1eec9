"""TE computes of the sparse kernels (one ordinary block each; index tables are inputs)."""
