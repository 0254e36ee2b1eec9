"""ADMM pruning (PatDNN): training is pulled towards the projection of the weights onto the structure.

The constraint "W has the structure" becomes W = Z with Z in the structure set, solved in scaled
form: minimise loss(W) + rho/2 ||W - Z + U||^2 over W (the user's own epochs), then
Z = proj(W + U), U += W - Z. The user's loop stays theirs::

    pruner = ADMMPruner(model, config, rho=1e-3)
    for epoch in range(epochs):
        for x, y in loader:
            loss = criterion(model(x), y) + pruner.penalty()
            opt.zero_grad(); loss.backward(); opt.step()
        pruner.step()                  # Z, U and the rho schedule
    pruner.prune()                     # hard masks; fine-tune with them, then
    pruner.squash()
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tvm_patterns.sparsity import PatternLibrary

from .oneshot import MaskPruner


class ADMMPruner(MaskPruner):
    """config: list of dicts keyed by module name (see ``tvm_patterns.compress.kinds``).

    rho: the starting penalty weight; every ``rho_every`` calls of ``step()`` it is multiplied by
    ``rho_growth``, up to ``rho_max``. U is the scaled dual (the multiplier divided by rho), so it
    is rescaled by old_rho / new_rho whenever rho changes, which keeps the multiplier itself.
    """

    def __init__(self, model: nn.Module, config, library: PatternLibrary | None = None, *,
                 rho: float = 1e-3, rho_growth: float = 1.5, rho_every: int = 1, rho_max: float = 1.0):
        for key, value, low in (("rho", rho, 0.0), ("rho_growth", rho_growth, 1.0), ("rho_max", rho_max, rho)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low and value > 0):
                raise ValueError(f"ADMMPruner: {key} must be a finite number >= {low} (and > 0), got {value!r}")
        if isinstance(rho_every, bool) or not isinstance(rho_every, int) or rho_every < 1:
            raise ValueError(f"ADMMPruner: rho_every must be a positive integer, got {rho_every!r}")
        super().__init__(model, config, library)
        self.rho, self.rho_growth, self.rho_every, self.rho_max = float(rho), float(rho_growth), rho_every, float(rho_max)
        self.steps = 0
        with torch.no_grad():
            self.Z = {c.name: c.project(c.weight) for c in self.constraints}
            self.U = {c.name: torch.zeros_like(c.weight) for c in self.constraints}

    def penalty(self) -> torch.Tensor:
        """rho/2 * sum over modules of ||W - Z + U||^2: add it to the loss before ``backward()``.

        Zero (and no gradient) once ``prune()`` has made the masks hard.
        """
        if self.pruned:
            return torch.zeros((), device=self.constraints[0].weight.device)
        total = sum((c.weight - self.Z[c.name] + self.U[c.name]).pow(2).sum() for c in self.constraints)
        return 0.5 * self.rho * total

    @torch.no_grad()
    def step(self) -> None:
        """End of an epoch: Z = proj(W + U), U += W - Z, then the rho schedule."""
        if self.pruned:
            raise RuntimeError("ADMMPruner.step() after prune(): the masks are already hard")
        for c in self.constraints:
            w = c.weight.detach()
            self.Z[c.name] = c.project(w + self.U[c.name])
            self.U[c.name] += w - self.Z[c.name]
        self.steps += 1
        if self.steps % self.rho_every == 0:
            new_rho = min(self.rho * self.rho_growth, self.rho_max)
            for u in self.U.values():
                u.mul_(self.rho / new_rho)
            self.rho = new_rho

    @torch.no_grad()
    def residuals(self) -> dict[str, float]:
        """{module name: ||W - Z||}, the primal residual: how far each weight is from its structure."""
        return {c.name: float((c.weight.detach() - self.Z[c.name]).norm()) for c in self.constraints}
