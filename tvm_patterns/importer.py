"""``from_pytorch``: torch.export -> Relax with the (compressed) weights bound as constants."""
from __future__ import annotations

from collections import Counter

import torch
import tvm
from tvm.relax.frontend.torch import from_exported_program

from .passes.rewrite import LAYER_NAMES_ATTR, mask_key, weight_key


def check_float32(model: torch.nn.Module, example_inputs) -> None:
    """Refuse floating-point weights or inputs other than float32, naming the first one: TVM's
    importer fails on them with an unrelated TypeError (mixed dtypes) or an unsupported ScalarType."""
    tensors = [(f"weight '{n}'", t) for n, t in model.named_parameters()]
    tensors += [(f"buffer '{n}'", t) for n, t in model.named_buffers()]
    tensors += [(f"input {i}", t) for i, t in enumerate(example_inputs) if isinstance(t, torch.Tensor)]
    for what, t in tensors:
        if t.is_floating_point() and t.dtype != torch.float32:
            raise ValueError(f"{what} is {t.dtype}: only float32 models are imported; convert with "
                             "model.float() and pass float32 inputs")


def from_pytorch(model: torch.nn.Module, example_inputs) -> tvm.IRModule:
    """Import a PyTorch model in eval mode; weights become Relax constants.

    ``torch.nn.utils.prune`` masks and parametrizations are traced as ``weight_orig * weight_mask``
    of two constants, which the build's FoldConstant turns into the pruned weight. The module
    records which torch module each conv / linear weight came from, so the rewrite pass reports
    layers by their torch names ("features.3").
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    check_float32(model, example_inputs)
    model = model.eval()
    with torch.no_grad():
        ep = torch.export.export(model, tuple(example_inputs))
        weights = {}
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight.detach().cpu().numpy()   # the effective (masked) weight
                weights[name] = w.T if isinstance(module, torch.nn.Linear) else w  # linear: imported transposed
    names = {weight_key(w): name for name, w in weights.items()}
    masks = Counter(mask_key(w) for w in weights.values())
    names.update({mask_key(w): name for name, w in weights.items() if masks[mask_key(w)] == 1})
    mod = from_exported_program(ep, unwrap_unit_return_tuple=True)
    return mod.with_attr(LAYER_NAMES_ATTR, names)
