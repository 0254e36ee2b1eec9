"""One recipe for a whole network: the config (for ``oneshot_prune`` / ``ADMMPruner``) that compresses
every layer of any ``nn.Module`` the way PatDNN/PCONV do, and why each layer left out stays dense.

    config = whole_network_config(model)                        # 3x3: pattern + connectivity, 1x1/FC: blocks
    config = whole_network_config(model, by_type={"linear": {"sparsity": 0.9}}, by_name={"fc": None})
"""
from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger(__name__)

LAYER_TYPES = ("conv3x3", "grouped3x3", "depthwise3x3", "conv1x1", "linear")
# A layer with fewer weights is not worth a sparse kernel's index tables; a depthwise conv costs its
# activations, not its weights, and is pruned at any size (docs/design.md#depthwise-planes).
MIN_WEIGHTS = 1024


def layer_type(module: nn.Module) -> str | None:
    """The recipe's name for a layer (one of LAYER_TYPES), None for a layer it does not compress."""
    if isinstance(module, nn.Linear):
        return "linear"
    if not isinstance(module, nn.Conv2d) or module.dilation != (1, 1):
        return None
    if module.kernel_size == (1, 1):
        return "conv1x1" if module.groups == 1 else None
    if module.kernel_size != (3, 3):
        return None
    if module.groups == 1:
        return "conv3x3"
    # one input channel a group: each filter has one kernel (a channel multiplier may give several filters a channel)
    return "depthwise3x3" if module.groups == module.in_channels else "grouped3x3"


def whole_network_config(model: nn.Module, *, connectivity: float = 3.6, sparsity: float = 0.75,
                         block_rows: int = 8, patterns: int = 8, taps: int = 4, filter_block: int = 0,
                         skip_first: bool = True,
                         by_type: dict | None = None, by_name: dict | None = None,
                         dense: list | None = None) -> list[dict]:
    """Config entries for every layer of ``model``:

    3x3 convs -> pattern (``patterns`` shapes of ``taps`` of 9) + ``connectivity``; grouped 3x3 ->
    the same, connectivity within the layer; depthwise 3x3 -> pattern only (a depthwise kernel is its
    channel's only one); 1x1 convs and linear layers -> block pruning (``block_rows``, ``sparsity``).
    ``filter_block`` > 0: the 3x3 convs (groups=1) take the "filter_block_pattern" kind instead, blocks
    of that many filters sharing kernels and patterns (a kernel with load reuse across filters).
    Kept dense, with the reason appended to ``dense`` as (module name, reason) and logged: the stem
    (a conv on the 3 image channels, when ``skip_first``), layers other than depthwise convs under
    MIN_WEIGHTS weights, and layers of other shapes.

    by_type: {layer type: options to override, or None to keep that type dense}; by_name: the same
    per module name (it wins over by_type); an override naming another kind (e.g. {"kind": "circulant",
    "block": 16} or {"kind": "column_combine", "group": 4} for 1x1 / linear layers) replaces the
    default entry instead of being merged into it. Layer types: LAYER_TYPES.
    """
    by_type, by_name = dict(by_type or {}), dict(by_name or {})
    unknown = [t for t in by_type if t not in LAYER_TYPES]
    if unknown:
        raise ValueError(f"by_type: unknown layer type {unknown[0]!r} (one of {', '.join(LAYER_TYPES)})")
    modules = dict(model.named_modules())
    missing = [n for n in by_name if n not in modules]
    if missing:
        raise ValueError(f"by_name: the model has no module {missing[0]!r}")
    if isinstance(filter_block, bool) or not isinstance(filter_block, int) or filter_block < 0:
        raise ValueError(f"filter_block must be an integer >= 0 (0: free patterns), got {filter_block!r}")
    conv3x3 = ({"kind": "filter_block_pattern", "filters": filter_block} if filter_block else {"kind": "pattern"})
    defaults = {
        "conv3x3": {**conv3x3, "patterns": patterns, "taps": taps, "connectivity": connectivity},
        "grouped3x3": {"kind": "pattern", "patterns": patterns, "taps": taps, "connectivity": connectivity},
        "depthwise3x3": {"kind": "pattern", "patterns": patterns, "taps": taps, "connectivity": 1.0},
        "conv1x1": {"kind": "block", "block_rows": block_rows, "sparsity": sparsity},
        "linear": {"kind": "block", "block_rows": block_rows, "sparsity": sparsity},
    }
    config, kept_dense = [], []
    for name, module in modules.items():
        kind = layer_type(module)
        if kind is None:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                kept_dense.append((name, f"{module.__class__.__name__} of kernel "
                                         f"{getattr(module, 'kernel_size', '')} groups "
                                         f"{getattr(module, 'groups', 1)}: no sparse kind for it"))
            continue
        override = by_name[name] if name in by_name else by_type.get(kind, {})
        if override is None:
            kept_dense.append((name, "kept dense by by_name" if name in by_name else f"kept dense by by_type[{kind!r}]"))
            continue
        if skip_first and kind == "conv3x3" and module.in_channels <= 3 and name not in by_name:
            kept_dense.append((name, f"the stem ({module.in_channels} input channels)"))
            continue
        if module.weight.numel() < MIN_WEIGHTS and kind != "depthwise3x3" and name not in by_name:
            kept_dense.append((name, f"{module.weight.numel()} weights: too small to pay"))
            continue
        base = defaults[kind] if override.get("kind", defaults[kind]["kind"]) == defaults[kind]["kind"] else {}
        config.append({"module": name, **base, **override})   # another kind: its own options only
    for name, reason in kept_dense:
        log.info("%s: %s", name, reason)
    if dense is not None:
        dense.extend(kept_dense)
    return config
