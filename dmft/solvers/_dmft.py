"""The DMFT entry point: pick a solver family for a "mup" spec and run it.

Every method (lazy and DMFT) is a small immutable object with a ``solve(spec) -> Solution``
method and a ``from_table(table)`` classmethod that reads the spec's ``[solver]`` table (its
``method`` key ignored); options are checked by `dmft._options`. `solve_dmft` dispatches:

    method = "auto"          deep_linear if φ is the identity (MSE), two_layer if L = 1 and φ is smooth,
                             else monte_carlo
    method = "two_layer"     exact McKean–Vlasov particle dynamics (L = 1, any φ)
    method = "two_layer_moments"  exact moment closure (L = 1, φ = identity)
    method = "deep_linear"   exact Gaussian closure (φ = identity, any L)
    method = "monte_carlo"   self-consistent Monte Carlo over the fields (any L, any φ)
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np
import sympy as sp

from .._errors import InputError
from .._options import MIN_TOLERANCE, check_training_rule  # noqa: F401 - re-exported
from .._precision import require_float64
from ..spec import Spec
from ._solution import Solution


class DMFTMethod(Protocol):
    """What `solve_dmft` needs from a method object."""

    def solve(self, spec: Spec) -> Solution: ...


# method name -> (module, class name); imported lazily so that a missing solver family only
# fails when it is asked for.
_METHODS: dict[str, tuple[str, str]] = {
    "two_layer": ("._two_layer", "TwoLayerDMFT"),
    "two_layer_moments": ("._two_layer", "TwoLayerMoments"),
    "deep_linear": ("._deep_linear", "DeepLinearDMFT"),
    "monte_carlo": ("._deep_nonlinear", "MonteCarloDMFT"),
}


def dmft_methods() -> tuple[str, ...]:
    """Names accepted by ``solver.method`` for a "mup" spec (besides "auto")."""
    return tuple(_METHODS)


def _method_class(name: str) -> type:
    module_name, class_name = _METHODS[name]
    try:
        module = importlib.import_module(module_name, __package__)
    except ModuleNotFoundError as error:  # a solver family that is not installed
        raise InputError(f"solver.method = {name!r} is not available: {error}") from None
    return getattr(module, class_name)


def auto_method_name(spec: Spec) -> str:
    """The method "auto" resolves to: deep_linear for φ = id under the MSE, two_layer for L = 1
    with a smooth φ, else monte_carlo (so φ = id under cross-entropy goes to those two; its fixed time
    step also suits kinked φ at L = 1: an adaptive solver crawls there, since the flow is
    non-smooth on the neurons that slide along a kink)."""
    activation = spec.architecture.activation
    if is_identity_activation(activation) and spec.training.loss == "mse":
        return "deep_linear"
    if spec.architecture.hidden_layers == 1 and not is_piecewise_activation(activation):
        return "two_layer"
    return "monte_carlo"


def method_from_spec(spec: Spec) -> DMFTMethod:
    """The method object named by ``spec.solver`` (``method`` key, default "auto")."""
    table = dict(spec.solver)
    name = table.pop("method", "auto")
    if not isinstance(name, str) or (name != "auto" and name not in _METHODS):
        raise InputError(
            f"solver.method = {name!r} is not a DMFT method; use one of "
            f"{['auto', *_METHODS]}"
        )
    if name == "auto":
        name = auto_method_name(spec)
    return _method_class(name).from_table(table)


def solve_dmft(spec: Spec, method: DMFTMethod | None = None) -> Solution:
    """The feature-learning (μP, richness γ0) infinite-width dynamics of `spec`.

    ``method=None`` reads the spec's ``[solver]`` table. Raises `InputError` for an "ntk" spec
    (its limit is lazy: use `solve_lazy`) and for options the method cannot honour.
    """
    require_float64("dmft.solvers.solve_dmft")
    check_mup(spec)
    if method is None:
        method = method_from_spec(spec)
    return method.solve(spec)


# ----------------------------------------------------------------------------------------------
# Helpers shared by the DMFT methods.


def check_mup(spec: Spec, method=None) -> None:
    """InputError unless `spec` is a μP network (the DMFT's parameterization) whose training rule
    and loss `method` honours (its ``optimizers`` / ``losses`` class attributes) and, for a
    residual spec (``architecture.residual_scale``), a method whose class attribute
    ``residual`` is True (without a method only the parameterization is checked; every method's
    ``solve`` calls this with itself)."""
    param = spec.architecture.parameterization
    if param != "mup":
        raise InputError(
            f'architecture.parameterization = "{param}" has a lazy limit; the DMFT solvers need '
            '"mup" (use dmft.solvers.solve_lazy for "ntk")'
        )
    if method is not None:
        check_training_rule(spec, method, f"the DMFT method {type(method).__name__}")
    if (spec.architecture.residual_scale is not None and method is not None
            and not getattr(method, "residual", False)):
        raise InputError(
            "architecture.residual_scale: the residual muP DMFT is derived (dmft derive) but not "
            'solved yet; use parameterization = "ntk" for its lazy limit'
        )


def is_identity_activation(name: str) -> bool:
    """Whether the activation `name` is φ(x) = x (checked symbolically)."""
    from ..activations import X, get_activation

    return sp.simplify(get_activation(name).expr - X) == 0


def is_piecewise_activation(name: str) -> bool:
    """Whether φ is built from pieces (Max, Min, Abs, Heaviside, sign, Piecewise): kinks or jumps,
    so that φ' may jump (conservative: Max(0, x)**2 counts, although its φ' is continuous)."""
    from ..activations import get_activation

    return get_activation(name).expr.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign,
                                         sp.Piecewise)


def readout_terms(r, z_memory, phi_u, phi_h, gamma0):
    """Per-sample terms of the read-out f = γ0⁻¹⟨z^L φ(h^L)⟩ with the zero-mean control variate
    r φ(u^L) (eq:mc_readout): γ0⁻¹[r (φ(h) − φ(u)) + (z − r) φ(h)], shapes (S, Q).

    z − r = `z_memory` is passed apart (it is ∝ γ0, so nothing cancels as γ0 → 0); r^L ⟂ u^L makes
    ⟨r φ(u^L)⟩ = 0, so f(0) = 0 exactly at every S, antithetic pairs or not.
    """
    return (r * (phi_h - phi_u) + z_memory * phi_h) / gamma0


def input_kernel(spec: Spec) -> np.ndarray:
    """Φ^0 = x·x'/D over the training points followed by the test points, (P + P_test)²."""
    data = spec.data
    x = data.x_train if data.x_test is None else np.concatenate([data.x_train, data.x_test])
    return x @ x.T / data.input_dim


__all__ = [
    "DMFTMethod",
    "auto_method_name",
    "dmft_methods",
    "method_from_spec",
    "solve_dmft",
]
