"""Pattern libraries, projections and the packed (FKW) format, as plain numpy."""
import numpy as np
import pytest

from tvm_patterns.sparsity import (
    NotPatternSparse, PatternLibrary, kernel_tables, kernels_to_keep, pack, pattern_tables, project_connectivity,
    project_pattern_connectivity, project_patterns, tap_offsets,
)
from tvm_patterns.sparsity.pattern_format import ROW_MULTIPLE

LIB = PatternLibrary.patdnn()


def pruned(shape, connectivity=3.6, seed=0):
    rng = np.random.default_rng(seed)
    return project_pattern_connectivity(rng.standard_normal(shape).astype("float32"), LIB, connectivity)


def test_patdnn_library_is_eight_patterns_of_four_taps_around_the_centre():
    assert (LIB.size, LIB.taps) == (8, 4)
    assert LIB.masks[:, 1, 1].all()
    assert LIB.tap_offsets().shape == (8, 4, 2)


@pytest.mark.parametrize("masks, message", [
    (np.ones((2, 2, 2), bool), r"\[P, 3, 3\]"),
    (np.array([np.eye(3, dtype=bool), np.ones((3, 3), bool)]), "same nonzero number of taps"),
    (np.array([np.eye(3, dtype=bool)] * 2), "duplicate"),
    (np.zeros((0, 3, 3), bool), "at least one"),
])
def test_library_rejects_masks_that_are_not_distinct_3x3_patterns(masks, message):
    with pytest.raises(ValueError, match=message):
        PatternLibrary(masks)


def test_library_rejects_taps_outside_a_3x3_kernel():
    with pytest.raises(ValueError, match="outside a 3x3"):
        PatternLibrary.from_taps([(0, 1, 2, 9)])


def test_extract_returns_the_most_frequent_masks_first():
    w = np.zeros((3, 10, 3, 3), "float32")
    w.reshape(3, 10, 9)[0, :, [1, 3, 4, 5]] = 1.0    # 10 kernels of pattern 0
    w.reshape(3, 10, 9)[1, :6, [4, 5, 7, 8]] = 2.0   # 6 kernels of pattern 7
    w.reshape(3, 10, 9)[2, :2, [0, 1, 3, 4]] = 3.0   # 2 kernels of pattern 4
    lib = PatternLibrary.extract(w, n_patterns=2, taps=4)
    assert lib == PatternLibrary(LIB.masks[[0, 7]])


def test_pattern_projection_keeps_each_kernel_inside_its_best_pattern():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 5, 3, 3))
    p = project_patterns(w, LIB)
    for k in range(6):
        for c in range(5):
            kept = p[k, c] != 0
            fits = [(kept & ~m).sum() == 0 for m in LIB.masks]
            assert any(fits)
            energy = [(w[k, c] ** 2 * m).sum() for m in LIB.masks]
            assert np.isclose((p[k, c] ** 2).sum(), max(energy))


@pytest.mark.parametrize("rate", [1.0, 2.0, 3.6, 5.0])
def test_connectivity_projection_keeps_exactly_k_kernels_with_largest_norms(rate):
    w = np.random.default_rng(2).standard_normal((16, 12, 3, 3))
    p = project_connectivity(w, rate)
    kept = np.abs(p).sum(axis=(2, 3)) > 0
    assert kept.sum() == kernels_to_keep(16 * 12, rate)
    norms = np.linalg.norm(w.reshape(16, 12, 9), axis=2)
    assert norms[kept].min() >= norms[~kept].max(initial=0)


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_connectivity_rate_must_be_at_least_one(bad):
    with pytest.raises(ValueError, match="connectivity rate"):
        project_connectivity(np.ones((2, 2, 3, 3)), bad)


def test_projection_refuses_nan_weights():
    w = np.ones((2, 2, 3, 3))
    w[1, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        project_patterns(w, LIB)


@pytest.mark.parametrize("shape, connectivity", [
    ((16, 8, 3, 3), 3.6), ((5, 3, 3, 3), 1.0), ((1, 1, 3, 3), 1.0), ((32, 64, 3, 3), 8.0),
])
def test_pack_round_trips_exactly(shape, connectivity):
    w = pruned(shape, connectivity)
    packed = pack(w, LIB)
    assert np.array_equal(packed.to_dense(), w)
    assert packed.nnz_kernels == int((np.abs(w).sum(axis=(2, 3)) > 0).sum())
    assert np.isclose(packed.mac_density(), packed.nnz_kernels * 4 / (shape[0] * shape[1] * 9))


def test_pack_round_trips_an_all_zero_weight_and_a_single_kernel():
    w = np.zeros((4, 3, 3, 3), "float32")
    assert pack(w, LIB).nnz_kernels == 0
    assert np.array_equal(pack(w, LIB).to_dense(), w)
    w[2, 1].flat[[1, 4]] = [1.5, -2.0]          # fewer taps than the pattern: still exact
    assert np.array_equal(pack(w, LIB).to_dense(), w)


def test_filter_kernel_reorder_puts_filters_with_most_kernels_first_and_groups_kernels_by_pattern():
    packed = pack(pruned((24, 16, 3, 3)), LIB)
    counts = np.diff(packed.kernel_ptr)
    assert (np.diff(counts) <= 0).all()
    assert sorted(packed.perm.tolist()) == list(range(24))
    for i in range(24):
        pats = packed.pattern[packed.kernel_ptr[i]:packed.kernel_ptr[i + 1]]
        assert (np.diff(pats) >= 0).all()


def test_pack_names_a_kernel_that_fits_no_pattern():
    w = pruned((4, 4, 3, 3))
    w[2, 3] = 1.0
    with pytest.raises(NotPatternSparse, match="filter 2 channel 3 with nonzero taps"):
        pack(w, LIB)


def test_kernel_tables_hold_each_filters_kernels_in_original_filter_order():
    w = pruned((6, 5, 3, 3))
    packed = pack(w, LIB)
    plane, row = 7 * 9, 9
    t = kernel_tables(packed, plane, row)
    dense = np.zeros((6, 5, 3, 3), "float32")
    for k in range(6):
        assert t.length[k] == (np.abs(w[k]).sum(axis=(1, 2)) > 0).sum()
        for j in range(t.length[k]):
            for tap in range(4):
                c, rest = divmod(int(t.offset[k, j, tap]), plane)
                dense[k, c, rest // row, rest % row] = t.value[k, j, tap]
        assert (t.value[k, t.length[k]:] == 0).all()
    assert np.array_equal(dense, w)
    assert t.max_len % ROW_MULTIPLE == 0 and t.max_len - ROW_MULTIPLE < t.length.max() <= t.max_len


def test_pattern_tables_group_each_filters_kernels_by_pattern_in_channel_order():
    w = pruned((6, 5, 3, 3))
    packed = pack(w, LIB)
    plane, row = 7 * 9, 9
    t = pattern_tables(packed, plane)
    taps = tap_offsets(LIB, row)
    dense = np.zeros((6, 5, 3, 3), "float32")
    for k in range(6):
        for p in range(LIB.size):
            channels = t.channel[k, p, :t.length[k, p]] // plane
            assert (np.diff(channels) > 0).all() and (t.value[k, p, t.length[k, p]:] == 0).all()
            for j, c in enumerate(channels):
                for tap in range(4):
                    dense[k, c, taps[p][tap] // row, taps[p][tap] % row] = t.value[k, p, j, tap]
    assert t.length.sum() == packed.nnz_kernels
    assert np.array_equal(dense, w)


def test_of_weight_finds_the_library_a_pruned_weight_uses():
    rng = np.random.default_rng(3)
    lib = PatternLibrary.extract(rng.normal(size=(16, 8, 3, 3)), n_patterns=12)
    w = project_pattern_connectivity(rng.normal(size=(16, 8, 3, 3)).astype("float32"), lib, 2.0)
    w[0, np.flatnonzero(np.abs(w[0]).sum(axis=(1, 2)))[0], 1, 1] = 0.0   # a kept tap that became exactly 0
    found = PatternLibrary.of_weight(w)
    assert found is not None and found.taps == 4
    assert {m.tobytes() for m in found.masks} <= {m.tobytes() for m in lib.masks}
    assert np.array_equal(pack(w, found).to_dense(), w)


@pytest.mark.parametrize("case", ["dense", "too many patterns", "mixed tap counts outside any full kernel"])
def test_of_weight_finds_no_library_in_a_weight_that_is_not_pattern_pruned(case):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(8, 8, 3, 3)).astype("float32")
    if case == "too many patterns":
        w = project_patterns(w, PatternLibrary.extract(rng.normal(size=(64, 64, 3, 3)), n_patterns=40))
        assert PatternLibrary.of_weight(w, max_patterns=4) is None
        return
    if case == "mixed tap counts outside any full kernel":
        w = project_patterns(w, PatternLibrary.from_taps([(1, 3, 4, 5)]))
        w[0, 0] = 0.0
        w[0, 0, 0, 0] = 1.0   # a one-tap kernel outside the only 4-tap mask
    assert PatternLibrary.of_weight(w) is None
