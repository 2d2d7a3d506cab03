"""The model of a network: layer kernel maps equal their printed equations, networks compose,
kernels are exact on the diagonal for any input, losses and dynamics are what they say."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
from dmft.network import (
    MSE,
    NTK,
    STATE_SYMBOLS,
    Dense,
    Elementwise,
    GradientFlow,
    KernelState,
    MuP,
    Residual,
    lower_kernel_map,
    mlp,
    serial,
)
from dmft.sampler import FiniteNetwork

CLOSED_FORM = ["relu", "erf", "abs", "step", "linear", "cos"]


def _random_state(rng, size=6):
    """A valid kernel state: Σ from a random Gram matrix, Θ and Σ̇ of the same shape."""
    x = rng.normal(size=(size, 3)) * rng.uniform(0.3, 2.0)
    sigma = x @ x.T / 3
    q = np.diag(sigma).copy()
    return KernelState(sigma, rng.normal(size=sigma.shape), rng.normal(size=sigma.shape),
                       q[:, None], q[None, :])


def _printed_value(layer, state, index, i, j):
    """Entry (i, j) of output `index` of the layer's SymPy map, evaluated by SymPy itself (the
    activation's closed-form dual substituted for K_phi, K̇_phi; 30 digits)."""
    expr = layer.kernel_map()[index]
    functions = {}
    for inner in getattr(layer, "branch", (layer,)):
        if isinstance(inner, Elementwise):
            act = dmft.get_activation(inner.activation)
            names = [sp.Symbol(n, real=True) for n in ("q1", "q2", "c")]
            free = {s.name: s for s in act.dual_expr.free_symbols}
            args = [free.get(n.name, n) for n in names]
            functions["K_phi"] = sp.Lambda(tuple(args), act.dual_expr)
            functions["Kdot_phi"] = sp.Lambda(tuple(args), act.dual_derivative_expr)
    for name, fn in functions.items():
        expr = expr.replace(sp.Function(name), fn)
    values = dict(zip(STATE_SYMBOLS, (state.nngp[i, j], state.ntk[i, j], state.derivative[i, j],
                                      state.var1[i, 0], state.var2[0, j])))
    values.update(layer.kernel_parameters())
    return float(sp.N(expr.subs({s: sp.Float(v, 30) for s, v in values.items()}), 30))


@pytest.mark.parametrize("activation", CLOSED_FORM)
def test_each_layer_kernel_map_equals_its_printed_equation(activation):
    rng = np.random.default_rng(abs(hash(activation)) % 2**32)
    layers = [Dense(1.3, 0.2), Elementwise(activation),
              Residual((Elementwise(activation), Dense(0.9, 0.1)), 0.4)]
    for layer in layers:
        state = _random_state(rng)
        numeric = lower_kernel_map(layer)(KernelState(*map(jnp.asarray, state)))
        for index in range(5):
            out = np.broadcast_to(np.asarray(numeric[index]), state.nngp.shape)
            for i, j in [(0, 1), (3, 5), (4, 1)]:  # off-diagonal: the diagonal has its own test
                expected = _printed_value(layer, state, index, i, j)
                # float64 lowering of the same expression: round-off of a few operations
                assert out[i, j] == pytest.approx(expected, rel=1e-11, abs=1e-13), (layer, index)


def test_serial_network_is_the_architecture_shorthand(rng):
    x = rng.normal(size=(7, 4))
    arch = dmft.Architecture(2, "erf", "ntk", sigma_w=1.4, sigma_b=0.3)
    dense = Dense(1.4, 0.3)
    composed = serial(dense, Elementwise("erf"), dense, Elementwise("erf"), dense)
    assert composed == mlp(arch)
    a, b = dmft.layer_kernels(arch, x), dmft.layer_kernels(composed, x)
    for p, q in zip(a.ntk + a.nngp, b.ntk + b.nngp):
        np.testing.assert_array_equal(p, q)  # the same object, so the same numbers


def test_mup_network_refuses_weight_and_bias_scales():
    with pytest.raises(dmft.InputError, match="sigma_w"):
        serial(Dense(1.5), Elementwise("relu"), Dense(), parameterization=MuP(1.0))


def test_deep_scanned_stack_equals_the_unrolled_symbolic_recursion(rng):
    # 12 identical hidden blocks: layer_kernels scans them; lower_recursion unrolls the printed maps
    arch = dmft.Architecture(12, "erf", "ntk", sigma_w=1.2, sigma_b=0.1)
    x = rng.normal(size=(5, 3))
    lowered = dmft.symbolic.lower_recursion(dmft.derive(arch))(x)
    kernels = dmft.layer_kernels(arch, x)
    for l in range(13):
        # two float64 evaluations of the same recursion: round-off grows mildly with depth
        np.testing.assert_allclose(kernels.nngp[l], lowered[0][l], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(kernels.ntk[l], lowered[1][l], rtol=1e-12, atol=1e-14)


def _relu_diagonal(x, sigma_w, sigma_b, depth):
    """Σ_xx, Θ_xx of a ReLU MLP by the exact 1-D recursion (E[φ²] = q/2, E[φ'²] = 1/2)."""
    q = sigma_w**2 * np.sum(x * x, -1) / x.shape[1] + sigma_b**2
    theta = q.copy()
    for _ in range(depth):
        q = sigma_w**2 * q / 2 + sigma_b**2
        theta = q + sigma_w**2 * theta / 2
    return q, theta


@settings(max_examples=25, deadline=None)
@given(points=st.integers(1, 9), dim=st.integers(1, 120), depth=st.integers(1, 6),
       sigma_w=st.floats(0.2, 3.0), sigma_b=st.floats(0.0, 1.0), scale=st.floats(0.01, 30.0),
       seed=st.integers(0, 2**31))
def test_relu_kernel_diagonal_is_exact_for_any_inputs(points, dim, depth, sigma_w, sigma_b, scale,
                                                       seed):
    x = scale * np.random.default_rng(seed).normal(size=(points, dim))
    kernels = dmft.layer_kernels(dmft.Architecture(depth, "relu", "ntk", sigma_w=sigma_w,
                                                   sigma_b=sigma_b), x)
    q, theta = _relu_diagonal(x, sigma_w, sigma_b, depth)
    # a few ulps per layer: the same recursion in another order of operations
    np.testing.assert_allclose(np.diag(kernels.nngp[-1]), q, rtol=1e-13)
    np.testing.assert_allclose(np.diag(kernels.ntk[-1]), theta, rtol=1e-13)


@pytest.mark.parametrize("bad, match", [
    (np.ones(5), "shape"),
    (np.full((3, 2), np.nan), "non-finite"),
    (np.ones((3, 2)) * (1 + 1j), "real"),
])
def test_layer_kernels_rejects_bad_inputs(bad, match):
    with pytest.raises(dmft.InputError, match=match):
        dmft.layer_kernels(dmft.Architecture(1), bad)


def test_layer_kernels_rejects_mismatched_dimensions(rng):
    with pytest.raises(dmft.InputError, match="D = 3"):
        dmft.layer_kernels(dmft.Architecture(1), rng.normal(size=(4, 2)), rng.normal(size=(4, 3)))


def test_mse_error_signal_is_minus_p_times_the_loss_gradient(rng):
    loss = MSE()
    for size in (1, 5, 17):
        f, y = rng.normal(size=size), rng.normal(size=size)
        gradient = jax.grad(lambda f: loss.value(f, y))(jnp.asarray(f))
        # Δ = −P ∂𝓛/∂f exactly (docs/conventions.md §2b); round-off only
        np.testing.assert_allclose(loss.error_signal(f, y), -size * gradient, rtol=1e-13)
        assert loss.value(f, y) == pytest.approx(0.5 * np.mean((f - y) ** 2), rel=1e-14)


@pytest.mark.parametrize("param", [NTK(), MuP(0.7)])
def test_gradient_flow_moves_f_by_the_network_ntk(param, rng):
    # ∂t f = (1/P) K Δ at any width: the dynamics, the loss and the layer sum agree
    dense = Dense() if param.name == "mup" else Dense(1.3, 0.2)
    net = serial(dense, Elementwise("tanh"), dense, Elementwise("tanh"), dense, parameterization=param)
    finite = FiniteNetwork(net, 16, 3, MSE(), GradientFlow())
    x, y = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=5))
    params = finite.init(jax.random.key(3))
    velocity = finite.flow(params, x, y)
    _, df_dt = jax.jvp(lambda p: finite.predict(p, x), (params,), (velocity,))
    kernel = finite.kernels(params, x)["ntk"]
    expected = kernel @ MSE().error_signal(finite.predict(params, x), y) / 5
    np.testing.assert_allclose(df_dt, expected, rtol=1e-10, atol=1e-12)  # round-off of sums
    np.testing.assert_allclose(kernel, finite.ntk_by_jacobian(params, x), rtol=1e-10, atol=1e-12)


def test_residual_blocks_have_the_depth_mup_kernel(rng):
    # h^{l+1} = h^l + (α/√L)·branch: Σ^{l+1} = Σ^l + (α²/L)(σ_w² E[φφ] + σ_b²) (conventions §2c)
    x = rng.normal(size=(4, 3))
    arch = dmft.Architecture(3, "relu", "ntk", sigma_w=1.1, sigma_b=0.2, residual_scale=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels = dmft.layer_kernels(arch, x)
    act = dmft.get_activation("relu")
    q = np.diag(kernels.nngp[0])
    for l in (1, 2):
        branch = 1.1**2 * np.asarray(act.dual(q, q, q)) + 0.2**2
        q = q + 0.8**2 / 3 * branch
        np.testing.assert_allclose(np.diag(kernels.nngp[l]), q, rtol=1e-13)  # round-off


@pytest.mark.parametrize("param", [NTK(), MuP(1.3)])
def test_residual_network_ntk_is_the_layer_sum_at_finite_width(param, rng):
    # K = Σ_l (β²) G^{l+1} ⊙ (σ_w² Φ^l + σ_b²) holds exactly for residual blocks too
    dense = Dense() if param.name == "mup" else Dense(1.2, 0.1)
    branch = Residual((Elementwise("tanh"), dense), 0.6)
    net = serial(dense, branch, branch, Elementwise("tanh"), dense, parameterization=param)
    finite = FiniteNetwork(net, 20, 3)
    x = jnp.asarray(rng.normal(size=(5, 3)))
    params = finite.init(jax.random.key(2))
    np.testing.assert_allclose(finite.kernels(params, x)["ntk"], finite.ntk_by_jacobian(params, x),
                               rtol=1e-10, atol=1e-12)  # round-off of two summation orders


def test_finite_network_refuses_blocks_it_cannot_read():
    net = serial(Dense(), Elementwise("tanh"), Elementwise("tanh"), Dense())
    with pytest.raises(dmft.InputError, match="block 2"):
        FiniteNetwork(net, 8, 2)


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 0.75])
def test_residual_exponent_sets_the_branch_scale_alpha_over_L_to_the_beta(exponent, rng):
    # §2c: h^{l+1} = h^l + (α/L^β)·branch; β = 1/2 depth-μP, β = 1 CompleteP, any β >= 0
    x = rng.normal(size=(4, 3))
    L, alpha = 4, 0.9
    arch = dmft.Architecture(L, "erf", "ntk", sigma_w=1.3, residual_scale=alpha,
                             residual_exponent=exponent)
    scales = {block.scale for block in dmft.network.mlp(arch).layers
              if isinstance(block, Residual)}
    assert scales == {alpha / L**exponent}
    kernels = dmft.layer_kernels(arch, x)
    act = dmft.get_activation("erf")
    sigma = kernels.nngp[0]
    for l in range(1, L):
        q = np.diag(sigma)
        sigma = sigma + (alpha / L**exponent) ** 2 * 1.3**2 * np.asarray(
            act.dual(q[:, None], q[None, :], sigma))
        np.testing.assert_allclose(kernels.nngp[l], sigma, rtol=1e-12, atol=1e-14)  # round-off


def test_derive_prints_the_branch_exponent_and_lowers_to_the_kernels(rng):
    from dmft.symbolic import derive, lower_recursion

    x = rng.normal(size=(3, 2))
    arch = dmft.Architecture(3, "relu", "ntk", sigma_w=1.2, residual_scale=1.5,
                             residual_exponent=1.0)
    d = derive(arch)
    nngp, ntk = lower_recursion(d)(x)
    kernels = dmft.layer_kernels(arch, x)
    for symbolic, numeric in zip(nngp + ntk, kernels.nngp + kernels.ntk):
        np.testing.assert_allclose(symbolic, numeric, rtol=1e-12, atol=1e-14)  # round-off
    assert "e = 1" in str(d)
    plain = lower_recursion(derive(dataclasses.replace(arch, residual_exponent=0.5)))(x)[0]
    assert not np.allclose(plain[-1], nngp[-1])  # the exponent changes the kernel
