"""Parameterizations: how a width-N network scales its weights and its learning rate.

Both share the layers' kernel maps: a μP network's γ0 → 0 kernels are those of the NTK
parameterization with σ_w = 1, σ_b = 0 (docs/conventions.md §1b). What differs is the finite-width
forward map of a dense layer, the learning rate η of gradient flow (§2) and the normalisation
c_g of the backward fields g^ℓ = c_g ∂f/∂h^ℓ (§3).
"""

from __future__ import annotations

import dataclasses
import math

from .._errors import InputError


@dataclasses.dataclass(frozen=True)
class NTK:
    """NTK parameterization (§1a): every dense layer is σ_w W h/√fan_in + σ_b b; η = 1."""

    name = "ntk"

    def weight_scale(self, fan_in: int, readout: bool) -> float:
        """Multiplier of W/σ_w in a dense layer (σ_w is the layer's own)."""
        return 1 / math.sqrt(fan_in)

    def learning_rate(self, width: int) -> float:
        """η of gradient flow dθ/dt = −η∇𝓛 (§2)."""
        return 1.0

    def backward_scale(self, width: int) -> float:
        """c_g in g^ℓ = c_g ∂f/∂h^ℓ, so that G^ℓ = ⟨g g⟩ is O(1)."""
        return math.sqrt(width)

    def check_dense(self, weight_std: float, bias_std: float) -> None:
        """Every (σ_w, σ_b) with σ_w > 0, σ_b ≥ 0 is an NTK-parameterized dense layer."""


@dataclasses.dataclass(frozen=True)
class MuP:
    """Mean-field / μP with richness γ0 (§1b): hidden layers W h/√fan_in, the read-out
    w·h/(γ0 fan_in); η = γ0² N, so that ∂_t f = (1/P) K Δ with an O(1) NTK K."""

    gamma0: float = 1.0
    name = "mup"

    def __post_init__(self):
        if not (isinstance(self.gamma0, float | int) and math.isfinite(self.gamma0)
                and self.gamma0 > 0):
            raise InputError(f"architecture.gamma0 must be a finite number > 0, got {self.gamma0!r}")
        object.__setattr__(self, "gamma0", float(self.gamma0))

    def weight_scale(self, fan_in: int, readout: bool) -> float:
        return 1 / (self.gamma0 * fan_in) if readout else 1 / math.sqrt(fan_in)

    def learning_rate(self, width: int) -> float:
        return self.gamma0**2 * width

    def backward_scale(self, width: int) -> float:
        return self.gamma0 * width

    def check_dense(self, weight_std: float, bias_std: float) -> None:
        if weight_std != 1.0 or bias_std != 0.0:
            raise InputError(
                "architecture.sigma_w / sigma_b apply to parameterization = \"ntk\" only; "
                "a \"mup\" network has unit weights and no bias (docs/conventions.md §1b)"
            )


Parameterization = NTK | MuP
