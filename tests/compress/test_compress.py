"""tvm_patterns.compress: projections give exactly their structure; the pruners keep it through training."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from tvm_patterns.compress import (
    ADMMPruner,
    oneshot_prune,
    project_block_punched,
    project_connectivity,
    project_pattern_connectivity,
    project_patterns,
)
from tvm_patterns.sparsity import PatternLibrary, kernels_to_keep

LIB = PatternLibrary.patdnn()


def assert_structure(dense: torch.Tensor, sparse: torch.Tensor, entry: dict, library: PatternLibrary = LIB):
    """``sparse`` has exactly the structure ``entry`` promises and is the projection of ``dense``.

    pattern / connectivity: every nonzero 3x3 kernel lies inside one library pattern (pattern) and
    exactly kernels_to_keep(K*C, rate) kernels are nonzero, the ones of largest norm. block: inside
    each block of rows the same round((1 - sparsity) * cols) columns are kept, those of largest norm.
    Kept values are the dense ones, unchanged.
    """
    d, s = dense.detach().double().cpu().numpy(), sparse.detach().double().cpu().numpy()
    assert s.shape == d.shape
    kept = s != 0
    np.testing.assert_array_equal(s[kept], d[kept])
    if entry["kind"] in ("pattern", "connectivity"):
        kernels = kept.reshape(*s.shape[:2], 9)
        nonzero = kernels.any(axis=2)
        if entry["kind"] == "pattern":
            inside = ~(kernels[:, :, None, :] & ~library.masks.reshape(1, 1, library.size, 9)).any(axis=3)
            assert inside.any(axis=2)[nonzero].all(), "a kernel fits no library pattern"
            d = d * library.masks[np.argmax(inside, axis=2)]   # connectivity ranks the projected kernels
        assert nonzero.sum() == kernels_to_keep(nonzero.size, entry.get("connectivity", 1.0))
        norms = np.sqrt((d ** 2).sum(axis=(2, 3)))
        if (~nonzero).any():
            assert norms[nonzero].min() >= norms[~nonzero].max()
    elif entry["kind"] == "block":
        s2, d2 = s.reshape(s.shape[0], -1), d.reshape(d.shape[0], -1)
        rows, cols = s2.shape
        br = entry["block_rows"]
        for r0 in range(0, rows, br):
            cols_kept = (s2[r0:r0 + br] != 0).any(axis=0)
            assert ((s2[r0:r0 + br] != 0) == cols_kept).all(), f"block at row {r0} keeps different columns per row"
            assert cols_kept.sum() == round((1 - entry["sparsity"]) * cols)
            norms = np.sqrt((d2[r0:r0 + br] ** 2).sum(axis=0))
            if (~cols_kept).any() and cols_kept.any():
                assert norms[cols_kept].min() >= norms[~cols_kept].max()
    else:
        raise AssertionError(f"unknown kind {entry['kind']}")


def _project(w, entry):
    if entry["kind"] == "pattern":
        return project_pattern_connectivity(w, LIB, entry.get("connectivity", 1.0))
    if entry["kind"] == "connectivity":
        return project_connectivity(w, entry["connectivity"])
    return project_block_punched(w, entry["block_rows"], entry["sparsity"])


PROJECTION_CASES = [   # (weight shape, entry)
    ((8, 6, 3, 3), {"kind": "pattern"}),
    ((16, 8, 3, 3), {"kind": "pattern", "connectivity": 3.6}),
    ((7, 5, 3, 3), {"kind": "pattern", "connectivity": 35.0}),        # keeps one kernel
    ((12, 5, 3, 3), {"kind": "connectivity", "connectivity": 2.5}),
    ((4, 4, 3, 3), {"kind": "connectivity", "connectivity": 1.0}),
    ((10, 7), {"kind": "block", "block_rows": 4, "sparsity": 0.5}),    # last block has 2 rows
    ((16, 12, 1, 1), {"kind": "block", "block_rows": 8, "sparsity": 0.75}),
    ((5, 9), {"kind": "block", "block_rows": 1, "sparsity": 0.0}),
]


@pytest.mark.parametrize("shape,entry", PROJECTION_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_yields_exactly_the_promised_structure(shape, entry, dtype):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    p = _project(w, entry)
    assert p.dtype == dtype and p.device == w.device and not p.requires_grad
    assert_structure(w, p, entry)
    torch.testing.assert_close(_project(p, entry), p, rtol=0, atol=0)   # a projection is idempotent


def test_pattern_projection_keeps_the_pattern_with_most_energy():
    w = torch.zeros(1, 1, 3, 3)
    w.view(9)[[0, 1, 3, 4]] = torch.tensor([5.0, 4.0, 3.0, 0.1])   # exactly pattern (0, 1, 3, 4)
    w.view(9)[8] = 0.2
    expected = w.clone()
    expected.view(9)[8] = 0
    torch.testing.assert_close(project_patterns(w, LIB), expected)


def test_projections_accept_half_precision_and_weights_that_require_grad():
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    p = project_patterns(w.half(), LIB)
    assert p.dtype == torch.float16
    assert_structure(w.half(), p, {"kind": "pattern"})


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(4, 8, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, padding=1), relu2=nn.ReLU(),
        point=nn.Conv2d(8, 12, 1), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
        fc=nn.Linear(12, 5)))


CONFIG = [
    {"module": "conv1", "kind": "connectivity", "connectivity": 3.0},
    {"module": "conv2", "kind": "pattern", "patterns": 8, "connectivity": 2.0},
    {"module": "point", "kind": "block", "block_rows": 5, "sparsity": 0.5},
    {"module": "fc", "kind": "block", "block_rows": 2, "sparsity": 0.25},
]


def batches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(n)]


def train_epoch(model, opt, pruner=None, seed=0):
    for x, y in batches(seed=seed):
        loss = nn.functional.cross_entropy(model(x), y)
        if pruner is not None:
            loss = loss + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_default_library_is_extracted_from_the_pattern_layers_weights():
    model = tiny_model()
    pruner = ADMMPruner(model, CONFIG)
    assert pruner.pattern_library == PatternLibrary.extract(model.conv2.weight.detach().numpy(), 8, 4)
    assert ADMMPruner(model, CONFIG, LIB).pattern_library == LIB
    three_taps = PatternLibrary.from_taps([(1, 4, 7), (3, 4, 5)])   # a given library sets the defaults
    pruner = ADMMPruner(model, [{"module": "conv2", "kind": "pattern"}], three_taps)
    assert pruner.constraints[0].options["taps"] == 3
    assert_structure(model.conv2.weight, pruner.Z["conv2"], {"kind": "pattern"}, three_taps)


def test_admm_step_updates_z_and_u_and_keeps_the_multiplier_when_rho_grows():
    model = tiny_model()
    pruner = ADMMPruner(model, CONFIG, LIB, rho=0.1, rho_growth=2.0, rho_max=10.0)
    train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), pruner)
    u_old = {c.name: pruner.U[c.name].clone() for c in pruner.constraints}
    pruner.step()
    assert pruner.rho == pytest.approx(0.2)
    for c in pruner.constraints:
        w = c.weight.detach()
        z = c.project(w + u_old[c.name])
        torch.testing.assert_close(pruner.Z[c.name], z)
        torch.testing.assert_close(0.2 * pruner.U[c.name], 0.1 * (u_old[c.name] + w - z))
        assert_structure(w + u_old[c.name], pruner.Z[c.name], dict(c.options, kind=c.kind))


def test_penalty_is_half_rho_times_the_squared_distance_to_z_minus_u():
    model = tiny_model()
    pruner = ADMMPruner(model, CONFIG, LIB, rho=0.5)
    for c in pruner.constraints:
        pruner.U[c.name].normal_(0, 0.01)
    penalty = pruner.penalty()
    expected = sum(((c.weight - pruner.Z[c.name] + pruner.U[c.name]) ** 2).sum() for c in pruner.constraints)
    torch.testing.assert_close(penalty, 0.25 * expected)
    penalty.backward()
    for c in pruner.constraints:
        torch.testing.assert_close(c.weight.grad, 0.5 * (c.weight - pruner.Z[c.name] + pruner.U[c.name]).detach())


def test_admm_residual_falls_over_steps():
    model = tiny_model()
    pruner = ADMMPruner(model, CONFIG, LIB, rho=0.3, rho_growth=1.5, rho_max=10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = [sum(pruner.residuals().values())]
    for epoch in range(10):
        train_epoch(model, opt, pruner, seed=epoch)
        pruner.step()
        history.append(sum(pruner.residuals().values()))
    assert set(pruner.residuals()) == {e["module"] for e in CONFIG}
    # ADMM may wander while U builds up; then rho wins and W meets its projection
    assert history[-1] < 0.05 * history[0], history
    assert max(history[-3:]) < min(history[:5]), history


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2),
], ids=["sgd_momentum_wd", "adam"])
@pytest.mark.parametrize("path", ["admm", "oneshot"])
def test_masks_survive_retraining_and_squash_bakes_them_in(make_opt, path):
    model = tiny_model()
    dense = {c["module"]: model.get_submodule(c["module"]).weight.detach().clone() for c in CONFIG}
    if path == "admm":
        pruner = ADMMPruner(model, CONFIG, LIB)
        opt = make_opt(model.parameters())
        train_epoch(model, opt, pruner)
        pruner.step()
        dense = {name: model.get_submodule(name).weight.detach().clone() for name in dense}
        masks = pruner.prune()
        assert pruner.penalty() == 0
    else:
        pruner = oneshot_prune(model, CONFIG, LIB)
        masks = pruner.masks
        opt = make_opt(model.parameters())   # built after pruning: weight_orig is the same Parameter
    assert set(masks) == set(dense)
    for entry in CONFIG:
        module = model.get_submodule(entry["module"])
        assert isinstance(module.weight_orig, nn.Parameter) and "weight_mask" in dict(module.named_buffers())
        assert_structure(dense[entry["module"]], module.weight, entry)

    for epoch in range(3):
        train_epoch(model, opt, seed=epoch + 1)
    for entry in CONFIG:
        w = model.get_submodule(entry["module"]).weight
        assert (w[masks[entry["module"]] == 0] == 0).all(), f"{entry['module']}: a pruned weight came back"
        assert not torch.equal(w, dense[entry["module"]] * masks[entry["module"]]), "training did not run"

    pruner.squash()
    for entry in CONFIG:
        module = model.get_submodule(entry["module"])
        assert not hasattr(module, "weight_orig") and isinstance(module.weight, nn.Parameter)
        assert ((module.weight == 0) >= (masks[entry["module"]] == 0)).all()


def test_oneshot_prune_is_the_projection_and_composes_with_torch_prune():
    model = tiny_model()
    expected = project_pattern_connectivity(model.conv2.weight, LIB, 2.0)
    oneshot_prune(model, CONFIG[1:2], LIB)
    torch.testing.assert_close(model.conv2.weight, expected)
    assert torch.nn.utils.prune.is_pruned(model)


def test_prune_twice_and_squash_before_prune_are_errors():
    model = tiny_model()
    pruner = ADMMPruner(model, CONFIG, LIB)
    with pytest.raises(RuntimeError, match="before prune"):
        pruner.squash()
    pruner.prune()
    with pytest.raises(RuntimeError, match="already"):
        pruner.prune()
    with pytest.raises(RuntimeError, match="after prune"):
        pruner.step()


REJECTED = [   # (configuration entry, error message must contain)
    ({"module": "conv9", "kind": "pattern"}, "no module named 'conv9'"),
    ({"module": "conv2", "kind": "pattern", "connectivity": 0.5}, "'conv2': connectivity rate"),
    ({"module": "conv2", "kind": "connectivity", "connectivity": float("inf")}, "'conv2': connectivity rate"),
    ({"module": "conv2", "kind": "connectivity", "connectivity": float("nan")}, "'conv2': connectivity rate"),
    ({"module": "conv2", "kind": "connectivity", "connectivity": "3"}, "'conv2': connectivity rate"),
    ({"module": "conv2", "kind": "connectivity"}, "'conv2': kind 'connectivity' needs option(s) ['connectivity']"),
    ({"module": "point", "kind": "block", "block_rows": 4, "sparsity": 1.0}, "'point': block sparsity"),
    ({"module": "fc", "kind": "block", "block_rows": 4, "sparsity": -0.1}, "'fc': block sparsity"),
    ({"module": "fc", "kind": "block", "block_rows": 0, "sparsity": 0.5}, "'fc': block_rows"),
    ({"module": "fc", "kind": "block", "block_rows": 4, "sparsity": float("nan")}, "'fc': block sparsity"),
    ({"module": "point", "kind": "pattern"}, "pattern pruning of 'point': needs a 3x3 nn.Conv2d"),
    ({"module": "fc", "kind": "connectivity", "connectivity": 2.0}, "connectivity pruning of 'fc': needs a 3x3"),
    ({"module": "conv2", "kind": "block", "block_rows": 4, "sparsity": 0.5}, "block pruning of 'conv2': needs an nn.Linear"),
    ({"module": "relu1", "kind": "pattern"}, "pattern pruning of 'relu1'"),
    ({"module": "conv2", "kind": "patterns"}, "'conv2': unknown pruning kind 'patterns'"),
    ({"module": "conv2", "kind": "pattern", "conectivity": 2.0}, "'conv2': unknown option(s) ['conectivity']"),
    ({"module": "conv2", "kind": "pattern", "patterns": 6}, "'conv2': asks for 6 patterns x 4 taps"),
    ({"module": "conv2", "kind": "pattern", "taps": 0}, "'conv2': taps must be a positive integer"),
    ({"module": "conv2", "kind": "circulant", "block": 4}, "circulant of 'conv2': needs an nn.Linear"),
    ({"module": "point", "kind": "circulant", "block": 8}, "circulant of 'point': block 8 must be >= 2 and divide"),
    ({"module": "point", "kind": "circulant", "block": 4, "quantize": {"scheme": "uniform", "bits": 4}},
     "'point': kind 'circulant' ties weights"),
    ({"module": "fc", "kind": "column_combine", "group": 1}, "'fc': group must be >= 2"),
    ({"module": "conv1", "kind": "column_combine", "group": 2}, "column combining of 'conv1': needs an nn.Linear"),
]


@pytest.mark.parametrize("entry,message", REJECTED, ids=[m for _, m in REJECTED])
def test_pruner_rejects_bad_configuration_naming_the_module(entry, message):
    for make in (lambda cfg: ADMMPruner(tiny_model(), cfg, LIB), lambda cfg: oneshot_prune(tiny_model(), cfg, LIB)):
        with pytest.raises(ValueError) as err:
            make([entry])
        assert message in str(err.value)


def test_pruner_rejects_a_module_configured_twice_and_bad_rho():
    with pytest.raises(ValueError, match="'conv2' appears more than once"):
        ADMMPruner(tiny_model(), [CONFIG[1], CONFIG[1]], LIB)
    for kw in ({"rho": 0.0}, {"rho": -1.0}, {"rho_growth": 0.5}, {"rho": 1.0, "rho_max": 0.1}, {"rho_every": 0}):
        with pytest.raises(ValueError, match="ADMMPruner: rho"):
            ADMMPruner(tiny_model(), CONFIG, LIB, **kw)


def test_pruned_model_state_dict_round_trips_with_weights_only_load(tmp_path):
    model = tiny_model()
    pruner = oneshot_prune(model, CONFIG, LIB)
    pruner.squash()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = tiny_model()
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    x = batches(1)[0][0]
    torch.testing.assert_close(fresh(x), model(x))


def test_circulant_retraining_trains_the_tied_values_and_squash_keeps_the_structure():
    from tvm_patterns.sparsity.circulant import is_block_circulant

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    pruner = oneshot_prune(model, [{"module": "0", "kind": "circulant", "block": 8}])
    start = model[0].weight.detach().clone()
    assert is_block_circulant(start.numpy(), 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        loss = model(torch.randn(16, 32)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert is_block_circulant(model[0].weight.detach().numpy(), 8)   # the forward's weight, every step
    pruner.squash()
    w = model[0].weight.detach()
    assert isinstance(model[0].weight, nn.Parameter) and not (w == start).all()
    assert is_block_circulant(w.numpy(), 8)


def test_admm_pulls_towards_circulant_and_column_combined_weights():
    from tvm_patterns.sparsity.circulant import is_block_circulant
    from tvm_patterns.sparsity.column_combine import is_column_combined

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    config = [{"module": "0", "kind": "circulant", "block": 4}, {"module": "2", "kind": "column_combine", "group": 4}]
    pruner = ADMMPruner(model, config, rho=0.1, rho_growth=2.0, rho_max=10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = None
    for _ in range(6):
        for _ in range(10):
            loss = model(torch.randn(16, 32)).pow(2).mean() + pruner.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        pruner.step()
        first = first or pruner.residuals()
    last = pruner.residuals()
    assert all(last[n] < first[n] for n in last), (first, last)
    pruner.prune()
    pruner.squash()
    assert is_block_circulant(model[0].weight.detach().numpy(), 4)
    assert is_column_combined(model[2].weight.detach().numpy(), 4)
