"""Weight quantizers (uniform, power of two, sum of two powers, mixed, Term Quantization), alone and
after pruning, by projection and by ADMM, with straight-through masked retraining."""
import numpy as np
import pytest
import torch

from tvm_patterns.compress import ADMMPruner, oneshot_prune
from tvm_patterns.sparsity import PatternLibrary
from tvm_patterns.sparsity.quantization import SCHEMES, find_grid, levels, quantize


def on_grid(row: np.ndarray, lv: np.ndarray) -> bool:
    """Whether a row's magnitudes are one scale times levels of ``lv``."""
    mags = np.abs(row[row != 0])
    if not len(mags):
        return True
    ratios = mags[:, None] / lv[None, 1:]          # each magnitude over each nonzero level
    for scale in np.unique(np.round(ratios.ravel(), 9)):
        if np.all(np.isclose(mags / scale, lv[np.abs(lv[None, :] - (mags / scale)[:, None]).argmin(1)], rtol=1e-6)):
            return True
    return False


def weights(seed=0, shape=(6, 4, 3, 3)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("scheme,bits", [("uniform", 4), ("uniform", 8), ("pow2", 4), ("sp2", 4), ("sp2", 5)])
def test_every_output_channel_lands_on_one_scale_times_the_levels_and_zeros_stay(scheme, bits):
    w = weights()
    w[0, 1] = 0
    q = quantize(w, scheme, bits)
    assert q.shape == w.shape and q.dtype == w.dtype and not q[0, 1].any()
    for row in q.reshape(len(q), -1):
        assert on_grid(row, levels(scheme, bits)), row
    assert ((q - w) ** 2).sum() < 0.05 * (w ** 2).sum()


def test_the_grids():
    assert levels("uniform", 4).tolist() == list(range(8))
    assert levels("pow2", 3).tolist() == [0, 0.25, 0.5, 1]
    assert levels("sp2", 4).tolist() == [0, 0.25, 0.5, 1, 1.25, 1.5, 2]   # {0, 1, 1/2, 1/4} + {0, 1}


def test_more_bits_quantize_closer():
    w = weights(1)
    errors = [((quantize(w, "uniform", b) - w) ** 2).sum() for b in (3, 4, 6, 8)]
    assert errors == sorted(errors, reverse=True)


def test_term_quantization_keeps_the_largest_terms_of_each_group():
    w = np.array([[7, 5, -3, 1, 6, 0, 2, 4]], dtype="float32")   # on the 4-bit grid with scale 1
    q = quantize(w, "term", 4, group=4, terms=3)
    assert q.tolist() == [[6, 4, 0, 0, 6, 0, 0, 4]]   # terms 4@0, 4@1, 2@0 | 4@4, 4@7, 2@4: the rest cut


@pytest.mark.parametrize("group,terms", [(4, 3), (8, 6), (3, 1)])
def test_term_quantization_spends_at_most_the_budget_per_group(group, terms):
    rng = np.random.default_rng(2)
    w = rng.integers(-15, 16, (5, 27)).astype("float32")
    w[:, 0] = 15                                                  # scale 1 on the 5-bit grid
    w[w == 2] = 0                                                 # zeros (pruned weights) are not stored
    q = quantize(w, "term", 5, group=group, terms=terms).astype(int)
    for row, stored in zip(np.abs(q), w != 0):
        row = row[stored]                                         # the groups are of stored values
        for g in range(0, len(row), group):
            assert sum(bin(c).count("1") for c in row[g:g + group]) <= terms


def test_mixed_gives_sp2_to_the_most_gaussian_channels():
    rng = np.random.default_rng(3)
    gaussian = rng.standard_normal((4, 64))
    uniform = rng.uniform(-1, 1, (4, 64))
    w = np.concatenate([uniform, gaussian]).astype("float32")
    q = quantize(w, "mixed", 4, sp2_share=0.5)
    for i, row in enumerate(q):
        expected = "sp2" if i >= 4 else "uniform"
        assert on_grid(row, levels(expected, 4)), (i, expected)


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(16 * 36, 10))


def test_admm_with_pattern_pruning_and_sp2_ends_on_both_structures_after_straight_through_retraining():
    model = net()
    config = [{"module": "0", "kind": "pattern", "connectivity": 2.0, "quantize": {"scheme": "sp2", "bits": 4}},
              {"module": "3", "kind": "dense", "quantize": {"scheme": "pow2", "bits": 4}}]
    pruner = ADMMPruner(model, config, PatternLibrary.patdnn(), rho=1e-2)
    opt = torch.optim.SGD(model.parameters(), 1e-2)
    x = torch.randn(4, 8, 6, 6)
    for _ in range(3):
        loss = model(x).pow(2).mean() + pruner.penalty()
        opt.zero_grad(); loss.backward(); opt.step(); pruner.step()
    pruner.prune()
    before = model[0].weight_orig.detach().clone()
    loss = model(x).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    assert not torch.equal(before, model[0].weight_orig.detach())   # gradients reach the float weights
    pruner.squash()
    w0, w3 = model[0].weight.detach().numpy(), model[3].weight.detach().numpy()
    lib = {m.tobytes() for m in PatternLibrary.patdnn().masks.reshape(-1, 9)}
    for kernel in w0.reshape(-1, 9):
        nz = kernel != 0
        assert not nz.any() or any((np.frombuffer(m, bool) & nz).sum() == nz.sum() for m in lib)
    assert all(on_grid(r, levels("sp2", 4)) for r in w0.reshape(16, -1))
    assert all(on_grid(r, levels("pow2", 4)) for r in w3)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_squashed_model_computes_what_the_retraining_forward_computed(scheme):
    model = net()
    pruner = oneshot_prune(model, [{"module": "0", "kind": "pattern", "connectivity": 2.0,
                                    "quantize": {"scheme": scheme, "bits": 4}}], PatternLibrary.patdnn())
    opt = torch.optim.SGD(model.parameters(), 1e-1)
    x = torch.randn(4, 8, 6, 6)
    for _ in range(3):   # the float weights move; the forward keeps the grid found at prune()
        loss = model(x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        seen = model(x)
    pruner.squash()
    with torch.no_grad():
        torch.testing.assert_close(model(x), seen, rtol=0, atol=0)


def test_oneshot_quantization_alone_quantizes_every_weight():
    model = net()
    oneshot_prune(model, [{"module": "3", "kind": "dense", "quantize": {"scheme": "uniform", "bits": 3}}]).squash()
    assert all(len(np.unique(np.abs(r))) <= 4 for r in model[3].weight.detach().numpy())


@pytest.mark.parametrize("quant,message", [
    ({"scheme": "int3", "bits": 4}, "unknown quantization scheme 'int3'"),
    ({"scheme": "uniform", "bits": 1}, "bits must be an integer in \\[2, 8\\]"),
    ({"scheme": "uniform"}, "needs \\['bits'\\]"),
    ({"scheme": "term", "bits": 4, "terms": 0}, "terms must be a positive integer"),
    ({"scheme": "sp2", "bits": 4, "colour": 1}, "unknown option"),
    ("sp2", "quantize must be a dict"),
])
def test_a_bad_quantizer_is_refused_naming_the_module(quant, message):
    with pytest.raises(ValueError, match=f"'0'.*{message}"):
        oneshot_prune(net(), [{"module": "0", "kind": "pattern", "quantize": quant}], PatternLibrary.patdnn())


def test_every_scheme_is_listed():
    assert set(SCHEMES) == {"uniform", "pow2", "sp2", "mixed", "term"}


@pytest.mark.parametrize("scheme,bits,found", [("uniform", 4, "uniform"), ("uniform", 8, "uniform"), ("pow2", 4, "pow2"),
                                                ("sp2", 4, "sp2"), ("mixed", 4, "mixed: 8 sp2, 8 uniform"),
                                                ("term", 4, "mixed")])   # term: some channels' codes have <= 2 terms
def test_a_quantized_weight_is_found_on_its_grid_exactly_with_int8_codes(scheme, bits, found):
    w = weights(shape=(16, 8, 3, 3))
    w[:, :3] = 0                                              # pruned kernels stay zero codes
    q = quantize(w, scheme, bits) * np.linspace(0.5, 3, 16, dtype="float32")[:, None, None, None]  # a folded BN
    grid = find_grid(q)
    assert grid is not None and grid.scheme.startswith(found)
    assert grid.codes.dtype == np.int8 and grid.largest_code <= 127
    np.testing.assert_allclose(grid.codes * grid.scale[:, None, None, None], q, rtol=1e-6)
    assert np.all(grid.codes[:, :3] == 0)


def test_a_float_weight_is_on_no_grid():
    assert find_grid(weights()) is None
