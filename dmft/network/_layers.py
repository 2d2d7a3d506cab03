"""Layer kinds. Each kind lives here in one place: its finite-width parameters and forward map
(used by the sampler), its infinite-width kernel map (used by `dmft.kernels` and printed by
`dmft derive`) and its term of the NTK sum (used by the sampler and the DMFT solvers).

A layer acts on a stream h of width N. Its kernel map acts on the stream's kernel state

    (Σ, Θ, Σ̇, q1, q2) = (NNGP, NTK, last Σ̇, Σ(x, x), Σ(x', x'))

and is written once, as SymPy expressions in the symbols below; the numeric map is lowered from
those expressions (`lower_kernel_map`), so the printed equation and the computed number are the
same object. The maps (docs/conventions.md §1a, §2c):

    Dense(σ_w, σ_b):   Σ' = σ_w² Σ + σ_b²,  Θ' = Σ' + σ_w² Θ,  Σ̇' = σ_w² Σ̇
    Elementwise(φ):    Σ' = K_φ(q1, q2, Σ), Θ' = K̇_φ(q1, q2, Σ) Θ,  Σ̇' = K̇_φ(q1, q2, Σ)
    Residual(β, B):    Σ' = Σ + β² Σ_B,     Θ' = Θ + β² Θ_B,  Σ̇' = Σ̇_B

with K_φ(q1, q2, c) = E[φ(u)φ(v)], K̇_φ = E[φ'(u)φ'(v)] over (u, v) ~ N(0, [[q1, c], [c, q2]])
(the activation's dual maps) and (Σ_B, Θ_B, Σ̇_B) the branch B's map of the same state: the
cross terms of a residual block vanish because the branch weights are independent with mean 0.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import sympy as sp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import InputError
from .._sympy_jax import lambdify_jax
from ._parameterization import Parameterization

# The kernel state entering a layer, as symbols (what `dmft verify --quantity` accepts).
c = sp.Symbol("c", real=True)                      # Σ(x, x')
theta_prev = sp.Symbol("theta_prev", real=True)    # Θ(x, x')
sigmadot_prev = sp.Symbol("sigmadot_prev", real=True)  # Σ̇(x, x') of the last activation
q1 = sp.Symbol("q1", positive=True)                # Σ(x, x)
q2 = sp.Symbol("q2", positive=True)                # Σ(x', x')
STATE_SYMBOLS = (c, theta_prev, sigmadot_prev, q1, q2)

# Layer parameters (the same symbols `dmft derive` prints).
sigma_w = sp.Symbol("sigma_w", positive=True)
sigma_b = sp.Symbol("sigma_b", nonnegative=True)
branch_scale = sp.Symbol("beta_res", positive=True)

K_phi = sp.Function("K_phi")        # E[φ(u)φ(v)]
Kdot_phi = sp.Function("Kdot_phi")  # E[φ'(u)φ'(v)]


class KernelMap(NamedTuple):
    """A layer's kernel map: the outgoing (Σ, Θ, Σ̇, q1, q2) as SymPy expressions in
    `STATE_SYMBOLS` and the layer's parameter symbols."""

    nngp: sp.Expr
    ntk: sp.Expr
    derivative: sp.Expr
    var1: sp.Expr
    var2: sp.Expr

    @classmethod
    def identity(cls) -> KernelMap:
        return cls(c, theta_prev, sigmadot_prev, q1, q2)

    def then(self, outer: KernelMap) -> KernelMap:
        """The composition: `outer` applied to the state this map produces."""
        mapping = dict(zip(STATE_SYMBOLS, self))
        return KernelMap(*(expr.xreplace(mapping) for expr in outer))


class KernelState(NamedTuple):
    """Numeric kernel state: Σ (P1, P2), Θ (P1, P2), Σ̇ (P1, P2), q1 (P1, 1), q2 (1, P2).

    The same maps run on the diagonal alone with Σ = q1 = q2 (all (P,)).
    """

    nngp: Float[Array, "P1 P2"]
    ntk: Float[Array, "P1 P2"]
    derivative: Float[Array, "P1 P2"]
    var1: Float[Array, "P1 1"]
    var2: Float[Array, "1 P2"]


Params = Any


@dataclasses.dataclass(frozen=True)
class Dense:
    """A dense layer h ↦ σ_w·s·W h + σ_b b with W (N_out, N_in), b (N_out,) i.i.d. N(0, 1) and the
    parameterization's scale s (1/√N_in, or 1/(γ0 N_in) for a μP read-out).

    ``width=None`` means the network's hidden width N; the read-out (the last dense layer of a
    network) has one output.
    """

    weight_std: float = 1.0
    bias_std: float = 0.0
    width: int | None = None

    def __post_init__(self):
        if not self.weight_std > 0 or not self.bias_std >= 0:
            raise InputError(f"Dense: need weight_std > 0 and bias_std >= 0, got {self}")

    @property
    def has_bias(self) -> bool:
        return self.bias_std > 0

    def kernel_map(self) -> KernelMap:
        nngp = sigma_w**2 * c + sigma_b**2
        return KernelMap(nngp, nngp + sigma_w**2 * theta_prev, sigma_w**2 * sigmadot_prev,
                         sigma_w**2 * q1 + sigma_b**2, sigma_w**2 * q2 + sigma_b**2)

    def kernel_parameters(self) -> dict[sp.Symbol, float]:
        return {sigma_w: self.weight_std, sigma_b: self.bias_std}

    def kernel_functions(self) -> dict[str, Callable]:
        return {}

    def out_width(self, fan_in: int, width: int) -> int:
        return self.width or width

    def init(self, key: PRNGKeyArray, fan_in: int, fan_out: int) -> Params:
        k_w, k_b = jax.random.split(key)
        params = {"W": jax.random.normal(k_w, (fan_out, fan_in))}
        if self.has_bias:
            params["b"] = jax.random.normal(k_b, (fan_out,))
        return params

    def apply(self, params: Params, h: Float[Array, "P N_in"], param: Parameterization,
              readout: bool) -> Float[Array, "P N_out"]:
        scale = self.weight_std * param.weight_scale(h.shape[-1], readout)
        out = scale * h @ params["W"].T
        return out + self.bias_std * params["b"] if self.has_bias else out

    def ntk_term(self, features, gradients, param: Parameterization):
        """This layer's part of the NTK, G^{out} ⊙ (σ_w² Φ^{in} + σ_b²): η Σ_{W,b} ∂f∂f for any
        width, with Φ^{in} = φ(h)·φ(h)/N_in and G^{out} = ⟨g g⟩ of the layer's output (= 1 for
        the read-out)."""
        return gradients * (self.weight_std**2 * features + self.bias_std**2)

    def num_params(self, fan_in: int, fan_out: int) -> int:
        return fan_out * fan_in + (fan_out if self.has_bias else 0)


@dataclasses.dataclass(frozen=True)
class Elementwise:
    """The activation h ↦ φ(h), φ a known name or a SymPy expression in x (`dmft.activations`)."""

    activation: str

    @functools.cached_property
    def _activation(self):
        from ..activations import get_activation

        return get_activation(self.activation)

    @property
    def kinked(self) -> bool:
        """Whether φ is built from pieces (Max, Min, Abs, Heaviside, sign, Piecewise), so that φ'
        may jump: adaptive ODE steps crawl there (conservative: Max(0, x)**2 counts)."""
        return self._activation.expr.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign,
                                         sp.Piecewise)

    def kernel_map(self) -> KernelMap:
        k, kdot = K_phi(q1, q2, c), Kdot_phi(q1, q2, c)
        return KernelMap(k, kdot * theta_prev, kdot, K_phi(q1, q1, q1), K_phi(q2, q2, q2))

    def kernel_parameters(self) -> dict[sp.Symbol, float]:
        return {}

    def kernel_functions(self) -> dict[str, Callable]:
        act = self._activation
        return {"K_phi": act.dual, "Kdot_phi": act.dual_derivative}

    def out_width(self, fan_in: int, width: int) -> int:
        return fan_in

    def init(self, key: PRNGKeyArray, fan_in: int, fan_out: int) -> Params:
        return ()

    def apply(self, params: Params, h, param: Parameterization, readout: bool):
        return self._activation.phi(h)

    def num_params(self, fan_in: int, fan_out: int) -> int:
        return 0


Layer = Dense | Elementwise


@dataclasses.dataclass(frozen=True)
class Residual:
    """A residual block h ↦ h + β·B(h) whose branch B is a chain of layers ending in a dense layer
    of the stream's width (§2c: β = α/L^{1/2} in depth-μP)."""

    branch: tuple[Layer, ...]
    scale: float

    def __post_init__(self):
        if not self.branch or not isinstance(self.branch[-1], Dense):
            raise InputError("Residual: the branch must end in a Dense layer")
        if not self.scale > 0:
            raise InputError(f"Residual: scale must be > 0, got {self.scale!r}")

    def kernel_map(self) -> KernelMap:
        inner = KernelMap.identity()
        for layer in self.branch:
            inner = inner.then(layer.kernel_map())
        b2 = branch_scale**2
        return KernelMap(c + b2 * inner.nngp, theta_prev + b2 * inner.ntk, inner.derivative,
                         q1 + b2 * inner.var1, q2 + b2 * inner.var2)

    def kernel_parameters(self) -> dict[sp.Symbol, float]:
        params = {branch_scale: self.scale}
        for layer in self.branch:
            params.update(layer.kernel_parameters())
        return params

    def kernel_functions(self) -> dict[str, Callable]:
        return {name: fn for layer in self.branch for name, fn in layer.kernel_functions().items()}

    def out_width(self, fan_in: int, width: int) -> int:
        return fan_in

    def init(self, key: PRNGKeyArray, fan_in: int, fan_out: int) -> Params:
        keys = jax.random.split(key, len(self.branch))
        return tuple(layer.init(k, fan_in, fan_in) for layer, k in zip(self.branch, keys))

    def apply(self, params: Params, h, param: Parameterization, readout: bool):
        out = h
        for layer, p in zip(self.branch, params):
            out = layer.apply(p, out, param, False)
        return h + self.scale * out

    def ntk_term(self, features, gradients, param: Parameterization):
        """β² G^{out} ⊙ (σ_w² Φ^{in} + σ_b²): the branch's dense layer feeds the stream scaled by β."""
        return self.scale**2 * self.branch[-1].ntk_term(features, gradients, param)

    def num_params(self, fan_in: int, fan_out: int) -> int:
        return sum(layer.num_params(fan_in, fan_in) for layer in self.branch)


@functools.lru_cache(maxsize=512)
def _lowered(kernel_map: KernelMap, parameter_symbols: tuple[sp.Symbol, ...], functions_key):
    return lambdify_jax((*STATE_SYMBOLS, *parameter_symbols), tuple(kernel_map),
                        dict(functions_key))


def lower_kernel_map(layer) -> Callable[[KernelState], KernelState]:
    """The numeric kernel map of `layer` (a layer or a block of them), lowered from its SymPy
    `KernelMap` with the parameters as arguments and K_φ, K̇_φ bound to the activation's dual maps.
    Cost: one dual evaluation of each kind per activation, elementwise over the state."""
    parameters = layer.kernel_parameters()
    symbols = tuple(sorted(parameters, key=str))
    values = tuple(parameters[s] for s in symbols)
    functions = tuple(sorted(layer.kernel_functions().items()))
    fn = _lowered(layer.kernel_map(), symbols, functions)

    def apply(state: KernelState) -> KernelState:
        return KernelState(*fn(*state, *values))

    return apply
