"""The rows of a linear layer's input: [M, in] or [B, T, in] (tokens), seen as M = B * T rows."""
from __future__ import annotations

from tvm import te


def flat_rows(data: te.Tensor) -> tuple:
    """(M, x_at(m, k)): the number of rows and the element k of row m of a 2-D or 3-D input."""
    if len(data.shape) not in (2, 3):
        raise ValueError(f"data must be [M, in] or [B, T, in], got {list(data.shape)}")
    if len(data.shape) == 2:
        return int(data.shape[0]), lambda m, k: data[m, k]
    B, T = int(data.shape[0]), int(data.shape[1])
    return B * T, lambda m, k: data[m // T, m % T, k]


def as_input_rows(out: te.Tensor, data: te.Tensor, name: str) -> te.Tensor:
    """out [M, n] in the layout of the input's rows: [M, n], or [B, T, n] (a stage named ``name``)."""
    if len(data.shape) == 2:
        return out
    T = int(data.shape[1])
    return te.compute((int(data.shape[0]), T, int(out.shape[1])), lambda b, t, o: out[b * T + t, o], name=name)
