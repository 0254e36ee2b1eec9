"""Block-circulant and column-combined matrices (numpy): projections give exactly their structure and
are the nearest such matrix; recognition finds the structure's parameter from the values alone."""
import numpy as np
import pytest

from tvm_patterns.sparsity.circulant import (circulant_spectra, circulant_vectors, expand_circulant, find_block,
                                             is_block_circulant, project_circulant)
from tvm_patterns.sparsity.column_combine import find_group, is_column_combined, project_column_combine


def rand(rows, cols, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype("float32")


@pytest.mark.parametrize("rows,cols,b", [(16, 32, 16), (24, 8, 8), (12, 20, 4), (6, 10, 2)])
def test_circulant_projection_is_circulant_and_nearest(rows, cols, b):
    w = rand(rows, cols)
    p = project_circulant(w, b)
    blocks = p.reshape(rows // b, b, cols // b, b).transpose(0, 2, 1, 3)
    for r in range(b):   # B[r, s] = c[(r - s) % b]: every block equals its first column, rotated
        np.testing.assert_array_equal(blocks[:, :, r, :], np.roll(blocks[:, :, 0, :], r, axis=-1))
    assert is_block_circulant(p, b) and not is_block_circulant(w, b)
    np.testing.assert_allclose(project_circulant(p, b), p, rtol=1e-6, atol=1e-6)   # idempotent
    other = project_circulant(rand(rows, cols, seed=1), b)
    # orthogonal projection: the residual is orthogonal to every block-circulant matrix
    assert abs(float(np.sum((w - p).astype(np.float64) * other))) < 1e-3 * np.linalg.norm(w) * np.linalg.norm(other)


def test_circulant_vectors_round_trip():
    c = np.random.default_rng(2).standard_normal((3, 5, 8)).astype("float32")
    np.testing.assert_allclose(circulant_vectors(expand_circulant(c), 8), c, rtol=1e-6)


def test_spectra_reproduce_the_matrix_product():
    w = project_circulant(rand(32, 48), 16)
    x = np.random.default_rng(3).standard_normal(48)
    s = circulant_spectra(w, 16)
    X = np.einsum("tfs,js->tjf", s.forward, x.reshape(3, 16))
    Yr = np.einsum("fji,jf->if", s.real, X[0]) - np.einsum("fji,jf->if", s.imag, X[1])
    Yi = np.einsum("fji,jf->if", s.real, X[1]) + np.einsum("fji,jf->if", s.imag, X[0])
    y = np.einsum("if,fr->ir", Yr, s.inverse[0]) + np.einsum("if,fr->ir", Yi, s.inverse[1])
    np.testing.assert_allclose(y.reshape(-1), w.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)
    assert s.shape == (32, 48) and s.bins == 9


def test_find_block_takes_the_largest_circulant_block():
    w = project_circulant(rand(64, 64), 16)
    assert find_block(w) == 16
    assert find_block(rand(64, 64)) is None
    assert find_block(project_circulant(rand(24, 36), 4)) == 4     # 8 and larger do not divide 36


def test_circulant_block_must_divide_the_matrix():
    with pytest.raises(ValueError, match="does not divide"):
        project_circulant(rand(16, 20), 8)
    with pytest.raises(ValueError, match=">= 2"):
        project_circulant(rand(16, 16), 1)


@pytest.mark.parametrize("rows,cols,g", [(8, 16, 4), (5, 37, 4), (3, 7, 8), (4, 9, 2)])
def test_column_combining_keeps_the_largest_weight_of_each_group(rows, cols, g):
    w = rand(rows, cols)
    p = project_column_combine(w, g)
    assert is_column_combined(p, g)
    for r in range(rows):
        for start in range(0, cols, g):
            group = np.abs(w[r, start:start + g])
            kept = np.flatnonzero(p[r, start:start + g])
            assert list(kept) == [int(np.argmax(group))]
            assert p[r, start + kept[0]] == w[r, start + kept[0]]
    np.testing.assert_array_equal(project_column_combine(p, g), p)


def test_find_group_takes_the_largest_group():
    assert find_group(project_column_combine(rand(16, 64), 8)) == 8
    assert find_group(rand(16, 64)) is None


def test_column_group_must_combine_columns():
    with pytest.raises(ValueError, match=">= 2"):
        project_column_combine(rand(4, 4), 1)
