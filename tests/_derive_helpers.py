"""Shared set-up of the tests that hold the equations ``dmft derive`` prints equal to the solvers
(tests/test_derive_discrete.py, tests/test_derive_residual.py): small data and training rules, the
printed equations by label, their lowering on a step or time grid, and the march of the printed
deep-linear (φ = identity) equations on exact Gaussian source coefficients, for any L, plain or
residual, under GD / SGD (step sums) or gradient flow (time integrals on a given quadrature)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from dmft import Data, Training
from dmft.activations import get_activation
from dmft.symbolic import Expect, Mul, Scalar, eta0, gamma0, lower_expression, num_train


def equations(derivation) -> dict:
    """The printed DMFT equations of `derivation` by label ("h1", "z2", "A1", "readout", …)."""
    return {eq.label: eq for eq in derivation.dmft.equations()}


def gd_training(eta, steps=0, **rule):
    """GD (or ``optimizer="sgd"``, …) with learning rate η0, saving the steps 0..`steps`."""
    rule = {"optimizer": "gd", **rule}
    return Training(tuple(eta * k for k in range(steps + 1)), learning_rate=eta, **rule)


def small_data(seed, num_train=5, num_test=2, input_dim=8):
    """Gaussian inputs and the targets sin(x·v/√D) + 0.3; `num_test` = 0 gives no test set."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, input_dim))
    y = np.sin(x @ rng.standard_normal(input_dim) / np.sqrt(input_dim)) + 0.3
    if not num_test:
        return Data(x, y)
    return Data(x[:num_train], y[:num_train], x_test=x[num_train:], y_test=y[num_train:])


@dataclasses.dataclass(frozen=True, eq=False)
class VolterraWeights:
    """A causal quadrature given by its weight matrix: ∫_0^{t_k} F ds ≈ Σ_s w[k, s] F(t_s).

    It stands in for `dmft.symbolic.CausalQuadrature` in `lower_expression` (which only calls
    ``weights(times)``), so the printed integrals can be lowered with any solver's weights."""

    matrix: np.ndarray

    def weights(self, times):
        assert self.matrix.shape == (len(times), len(times))
        return jnp.asarray(self.matrix)


def lower_on_steps(node, num_steps, scalars, activation, quadrature=None):
    """``lower_expression`` on num_steps + 1 grid points; `quadrature` (e.g. `VolterraWeights`)
    fixes the time integrals of a flow equation, a step sum needs none."""
    extra = {} if quadrature is None else {"quadrature": quadrature}
    return lower_expression(node, times=jnp.zeros(num_steps + 1), scalars=scalars,
                            activation=activation, **extra)


def printed_coefficient(rhs, scalars):
    """A printed ``c ⟨…⟩`` → (c as a float, the node inside ⟨⟩)."""
    coefficient, expect = rhs.factors if isinstance(rhs, Mul) else (Scalar(sp.Integer(1)), rhs)
    assert isinstance(expect, Expect), rhs.text()
    return float(coefficient.value.xreplace(scalars)), expect.body


def printed_average(rhs, num_steps, scalars, activation):
    """A printed ``c ⟨body⟩``: the body lowered, vmapped over the samples and averaged."""
    coefficient, inside = printed_coefficient(rhs, scalars)
    body = lower_on_steps(inside, num_steps, scalars, activation)
    fn = lambda shared, per_sample: coefficient * jnp.mean(  # noqa: E731
        jax.vmap(lambda fields: body({**shared, **fields}))(per_sample), axis=0)
    return dataclasses.replace(body, fn=fn)


def at_step(lowered, k):
    """Evaluate ``lowered`` and take step k of its axis "k" (the other axes keep their order)."""
    axis = lowered.axes.index("k")
    return lambda *env: jnp.take(lowered(*env) if len(env) == 1 else lowered.fn(*env), k,
                                 axis=axis)


class LinearSources:
    """φ = identity makes every field linear in the Gaussian sources: a field is its coefficient
    array over the M source coordinates u^1 (Q), then for ℓ = 2..L u^ℓ (Q, T) and r^{ℓ−1} (Q, T),
    then r^L (a scalar), whose covariance C is block diagonal (K^x; Φ^{ℓ−1} for u^ℓ; G^{ℓ+1} for
    r^ℓ; 1); the blocks Φ and G are entered as they are built."""

    def __init__(self, kx, num_steps, num_layers):
        q, t = kx.shape[0], num_steps + 1
        self.q, self.t, self.num_layers = q, t, num_layers
        self.offsets, start = {"u1": 0}, q
        for layer in range(2, num_layers + 1):
            self.offsets[f"u{layer}"], self.offsets[f"r{layer - 1}"] = start, start + q * t
            start += 2 * q * t
        self.offsets[f"r{num_layers}"] = start
        self.size = start + 1
        self.cov = np.zeros((self.size, self.size))
        self.cov[:q, :q] = kx
        self.cov[-1, -1] = 1.0

    def _shape(self, name):
        if name == "u1":
            return (self.q,)
        return () if name == f"r{self.num_layers}" else (self.q, self.t)

    def unit(self, name):
        """The source itself: (M, Q) for u^1, (M, Q, T) for u^ℓ (ℓ >= 2) and r^ℓ (ℓ < L), (M,)
        for r^L."""
        shape = self._shape(name)
        count = int(np.prod(shape, dtype=int))
        out = np.zeros((self.size, count))
        out[self.offsets[name] + np.arange(count), np.arange(count)] = 1.0
        return out.reshape((self.size, *shape))

    def set_block(self, name, kernel):
        """The covariance of u^ℓ (Φ^{ℓ−1}) or r^ℓ (G^{ℓ+1}): ``kernel`` (Q, T, Q, T), zero where
        unknown."""
        start, n = self.offsets[name], self.q * self.t
        self.cov[start:start + n, start:start + n] = kernel.reshape(n, n)

    def expect(self, a, b):
        """⟨a b⟩ = aᵀ C b for coefficient arrays a (M, ...), b (M, ...): shape a[1:] + b[1:]."""
        left = np.tensordot(a, self.cov, axes=(0, 0))
        return np.tensordot(left, b, axes=(left.ndim - 1, 0))

    def derivative(self, field, name):
        """∂field/∂source for a source of shape (Q, T): field.shape[1:] + (Q, T)."""
        start, n = self.offsets[name], self.q * self.t
        block = field[start:start + n].reshape(self.q, self.t, *field.shape[1:])
        return np.moveaxis(block, (0, 1), (-2, -1))


def _symmetric_row(kernel, k, row):
    """Row and column k of a symmetric kernel (Q, T, Q, T) from ``row`` = K[:, k, :, :k+1]."""
    kernel[:, k, :, : k + 1] = row
    kernel[:, : k + 1, :, k] = np.moveaxis(row, (0, 1, 2), (2, 0, 1))


def march_printed_deep_linear(derivation, kx, y, num_steps, *, eta=None, omega=None,
                              weights=None):
    """f(k) (train ∪ test) and K(k) (train) of the printed equations of a deep linear network
    (φ = identity, any L, plain or residual), marched on exact Gaussian source coefficients.

    Discrete rules (`eta`, `omega`): the printed step sums. Gradient flow (`weights`, a causal
    (T, T) weight matrix w): the printed time integrals lowered with ∫_0^{t_k} F ds =
    Σ_s w[k, s] F(t_s). A printed response c⟨δX(t)/δS(s)⟩ is the functional derivative, so on the
    grid it is c ∂X_k/∂S_s / w[k, s] (the discrete derivative over the weight that the integral it
    enters gives it; GD's printed c carries the 1/η0 of its step sums itself).

    Within step k, in the order the printed dependencies allow: the forward sweep ℓ = 1..L (h^ℓ(k),
    Φ^ℓ row k, A^ℓ(k, s) from ∂h^ℓ(k)/∂r^ℓ), the backward sweep ℓ = L..1 (z^ℓ(k), g^ℓ(k), G^ℓ
    row k, B^{ℓ−1}(k, s) from ∂g^ℓ(k)/∂u^ℓ, s <= k), then the read-out f(k) and Δ(k). A residual
    block (h^{ℓ+1} = h^ℓ + β[…], g^ℓ = g^{ℓ+1} + β φ'(h^ℓ) z^ℓ) keeps this order.
    """
    arch = derivation.architecture
    L, p, q, t = arch.hidden_layers, y.size, kx.shape[0], num_steps + 1
    flow = weights is not None
    now = "t" if flow else "k"  # the printed time index: t (flow) or the step k
    scalars = {**derivation.parameters, gamma0: arch.gamma0, num_train: p}
    if not flow:
        scalars[eta0] = eta
    quadrature = VolterraWeights(np.asarray(weights)) if flow else None
    activation = get_activation("linear")
    eqs = equations(derivation)
    layers = range(1, L + 1)
    names = [f"{n}{layer}" for layer in layers for n in "hzg"] + ["ntk"]
    fns = {n: lower_on_steps(eqs[n].rhs, num_steps, scalars, activation, quadrature)
           for n in names}
    src = LinearSources(kx, num_steps, L)
    m = src.size
    h = {layer: np.zeros((m, q, t)) for layer in layers}
    g = {layer: np.zeros((m, q, t)) for layer in layers}
    z = {layer: np.zeros((m, q, t)) for layer in range(1, L)} | {L: np.zeros((m, t))}
    phi, gk, a, b = ({layer: np.zeros((q, t, q, t)) for layer in layers} for _ in range(4))
    delta, f = np.zeros((p, t)), []
    scales = {}
    for layer in range(1, L):
        for kind, num, den in (("A", ("h", layer), ("r", layer)),
                               ("B", ("g", layer + 1), ("u", layer + 1))):
            scale, body = printed_coefficient(eqs[f"{kind}{layer}"].rhs, scalars)
            field = body.num.arg if kind == "A" else body.num  # ⟨δφ(h)/δr⟩, ⟨δg/δu⟩
            assert (field.name, field.layer, body.den.name, body.den.layer) == (*num, *den)
            scales[kind, layer] = scale
    readout_scale, _ = printed_coefficient(eqs["readout"].rhs, scalars)

    def step(name, k, fields):
        fn = fns[name]
        shared = {"Kx": kx[:, :p], "Delta": delta}
        if not flow:
            shared["omega"] = omega[:t].T
        for layer in layers:
            shared |= {f"Phi{layer}": phi[layer][:, :, :p], f"G{layer}": gk[layer][:, :, :p],
                       f"A{layer}": a[layer][:, :, :p], f"B{layer}": b[layer][:, :, :p]}
        values = jax.vmap(lambda fl: fn({**shared, **fl}))(
            {key: jnp.asarray(v) for key, v in fields.items()})
        return np.take(np.asarray(values), k, axis=1 + fn.axes.index(now))

    def response(kind, layer, k, field, source):
        """Row k of the printed response A^ℓ or B^ℓ, (Q, Q, T) over (μ, α, s)."""
        d = scales[kind, layer] * src.derivative(field, source)
        if not flow:
            return d
        cell = np.asarray(weights)[k]
        # where the integral gives no weight (s >= k) the discrete process has no response either
        assert np.all(np.abs(d[..., cell == 0]) < 1e-12)
        return np.where(cell > 0, d / np.where(cell > 0, cell, 1.0), 0.0)

    for k in range(t):
        for layer in layers:  # forward sweep
            fields = {f"u{layer}": src.unit(f"u{layer}"), f"g{layer}": g[layer][:, :p]}
            if layer > 1:
                fields[f"h{layer - 1}"] = h[layer - 1]
            h[layer][:, :, k] = step(f"h{layer}", k, fields)
            _symmetric_row(phi[layer], k, src.expect(h[layer][:, :, k], h[layer][:, :, : k + 1]))
            if layer < L:
                src.set_block(f"u{layer + 1}", phi[layer])
                a[layer][:, k] = response("A", layer, k, h[layer][:, :, k], f"r{layer}")
        for layer in reversed(layers):  # backward sweep
            z[layer][..., k] = step(f"z{layer}", k, {f"r{layer}": src.unit(f"r{layer}"),
                                                     f"h{layer}": h[layer][:, :p]})
            fields = {f"h{layer}": h[layer], f"z{layer}": z[layer]}
            if layer < L:
                fields[f"g{layer + 1}"] = g[layer + 1]
            g[layer][:, :, k] = step(f"g{layer}", k, fields)
            _symmetric_row(gk[layer], k, src.expect(g[layer][:, :, k], g[layer][:, :, : k + 1]))
            if layer > 1:
                src.set_block(f"r{layer - 1}", gk[layer])
                b[layer - 1][:, k] = response("B", layer - 1, k, g[layer][:, :, k], f"u{layer}")
        f.append(readout_scale * src.expect(z[L][:, k], h[L][:, :, k]))
        delta[:, k] = y - f[-1][:p]
    kernels = {"Kx": kx[:p, :p]}
    for layer in layers:
        kernels[f"Phi{layer}"] = phi[layer][:p, :, :p]
        kernels[f"G{layer}"] = gk[layer][:p, :, :p]
    ntk = np.asarray(fns["ntk"](kernels))
    return np.array(f), np.transpose(ntk, [fns["ntk"].axes.index(x) for x in (now, "mu", "alpha")])
