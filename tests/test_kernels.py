"""Layer kernels agree with neural-tangents and with the closed-form depth recursion."""

import numpy as np
import pytest

from dmft import Architecture, Spec, Data, kernels, layer_kernels

# The three MLPs of ../shared/reference/neural_tangents_public.npz (see its meta_json).
NT_CONFIGS = {
    "relu_w1.3_b0.1": Architecture(2, "relu", "ntk", sigma_w=1.3, sigma_b=0.1),
    "erf_w1.2_b0.2": Architecture(2, "erf", "ntk", sigma_w=1.2, sigma_b=0.2),
    "gelu_w1.0_b0": Architecture(2, "gelu", "ntk", sigma_w=1.0, sigma_b=0.0),
}


def relative_error(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def off_diagonal(matrix):
    return matrix[~np.eye(matrix.shape[0], dtype=bool)]


@pytest.mark.parametrize("name", sorted(NT_CONFIGS))
def test_every_layer_matches_neural_tangents(nt_reference, name):
    arch = NT_CONFIGS[name]
    x, x_test = nt_reference["x"], nt_reference["x_test"]
    train = layer_kernels(arch, x)
    test = layer_kernels(arch, x_test, x)
    for layer in (1, 2, 3):
        for kind in ("nngp", "ntk"):
            ours = getattr(train, kind)[layer - 1]
            theirs = nt_reference[f"{name}_{kind}_L{layer}"]
            # Off the diagonal both sides evaluate the same closed forms in float64: agreement to
            # ~1e-15 is expected, 1e-12 leaves room for a different order of operations.
            assert relative_error(off_diagonal(ours), off_diagonal(theirs)) < 1e-12
            # On the diagonal neural-tangents evaluates the ReLU derivative map at a correlation
            # rounded just below 1, where arccos loses √ε ≈ 1.5e-8 relative; ours is exact there
            # (test_diagonal_is_exact_for_relu). So the diagonal is held to 1e-7 relative.
            np.testing.assert_allclose(np.diag(ours), np.diag(theirs), rtol=1e-7)
    assert relative_error(test.ntk[-1], nt_reference[f"{name}_ntk_test_train"]) < 1e-12


# symbolic.md §2.6, "golden depth test": ReLU, σ_w² = 2, σ_b = 0, |x|²/D = 1, x·x'/D = 0.3.
GOLDEN_RELU_NTK = {1: 0.661840, 2: 1.034601, 3: 1.404034, 4: 1.765827, 5: 2.119000, 6: 2.463778}


@pytest.mark.parametrize("hidden_layers", sorted(GOLDEN_RELU_NTK))
def test_relu_depth_recursion_matches_golden_values(hidden_layers):
    # Unit vectors with overlap 0.3 in D = 2: with σ_w² = 2 the first layer's kernel is
    # Σ¹ = [[1, 0.3], [0.3, 1]], the golden set-up.
    x = np.array([[1.0, 0.0], [0.3, np.sqrt(1 - 0.3**2)]])
    arch = Architecture(hidden_layers, "relu", "ntk", sigma_w=np.sqrt(2.0))
    ntk = layer_kernels(arch, x).ntk[-1]
    # The golden values are printed to 6 decimals: agreement to 5e-7 is all they can certify.
    assert abs(ntk[0, 1] - GOLDEN_RELU_NTK[hidden_layers]) < 5e-7


def test_blocked_evaluation_equals_one_block(rng):
    arch = Architecture(3, "erf", "ntk", sigma_w=1.5, sigma_b=0.3)
    x = rng.standard_normal((37, 4))
    whole = layer_kernels(arch, x, block_size=64)
    tiled = layer_kernels(arch, x, block_size=8)  # 5 × 5 tiles, the last ones padded, mirrored
    for a, b in zip(whole.ntk + whole.nngp, tiled.ntk + tiled.nngp):
        # Same elementwise arithmetic; only the x·x' matmul may sum in another order (1 ulp).
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)
    cross = layer_kernels(arch, x[:11], x, block_size=8)
    np.testing.assert_allclose(cross.ntk[-1], whole.ntk[-1][:11], rtol=1e-14)


def test_diagonal_is_exact_for_relu(rng):
    # On the diagonal the ReLU maps are q -> σ_w² q / 2 and Σ̇ = σ_w² / 2 exactly; the stable
    # closed form must not lose √ε there (arccos(1 − ε) would leave relative errors ~1e-8).
    x = rng.standard_normal((6, 5))
    sigma_w2, sigma_b2 = 1.7, 0.3
    arch = Architecture(4, "relu", "ntk", sigma_w=np.sqrt(sigma_w2), sigma_b=np.sqrt(sigma_b2))
    out = layer_kernels(arch, x)
    q = sigma_w2 * np.sum(x * x, axis=1) / 5 + sigma_b2
    theta = q
    for layer in range(5):
        # A few ulps: the recursions are evaluated in a different order of operations.
        np.testing.assert_allclose(np.diag(out.nngp[layer]), q, rtol=1e-14)
        np.testing.assert_allclose(np.diag(out.ntk[layer]), theta, rtol=1e-14)
        q = sigma_w2 * q / 2 + sigma_b2
        theta = q + sigma_w2 / 2 * theta


def test_kernels_symmetric_and_positive_semidefinite(rng):
    arch = Architecture(3, "tanh", "ntk", sigma_w=1.7, sigma_b=0.2)
    x = rng.standard_normal((20, 3))
    out = layer_kernels(arch, x)
    for matrix in out.ntk + out.nngp:
        np.testing.assert_allclose(matrix, matrix.T, rtol=1e-13, atol=1e-15)
        assert np.linalg.eigvalsh(matrix).min() > -1e-12 * np.abs(matrix).max()


def test_kernels_result_keys(rng):
    x = rng.standard_normal((5, 3))
    spec = Spec(Architecture(2, "relu"), Data(x, np.ones(5), x_test=x[:2]))
    arrays = kernels(spec)
    expected = {f"{k}_L{l}" for k in ("nngp", "ntk") for l in (1, 2, 3)}
    assert expected | {"ntk_test_train", "nngp_test_train"} == set(arrays)
    # Test points that coincide with training points give the training rows back.
    np.testing.assert_allclose(arrays["ntk_test_train"], arrays["ntk_L3"][:2], rtol=1e-13)


def test_mup_kernels_are_the_unit_ntk_kernels(rng):
    x = rng.standard_normal((4, 3))
    mup = layer_kernels(Architecture(2, "erf", "mup", gamma0=0.7), x)
    ntk = layer_kernels(Architecture(2, "erf", "ntk"), x)
    for a, b in zip(mup.ntk, ntk.ntk):
        np.testing.assert_array_equal(a, b)


def test_residual_kernels_equal_the_derived_depth_mup_recursion(rng):
    from dmft.symbolic import derive, lower_recursion

    x = rng.standard_normal((5, 3))
    for name in ("relu", "erf"):
        arch = Architecture(3, name, "ntk", sigma_w=1.3, sigma_b=0.2, residual_scale=1.5)
        nngp, ntk = lower_recursion(derive(arch))(x)
        ours = layer_kernels(arch, x)
        for a, b in zip(ours.nngp + ours.ntk, nngp + ntk):
            # One source of truth: the printed recursion, lowered, evaluates the same closed
            # forms in float64, in another order of operations.
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=1e-12)
        plain = layer_kernels(arch.__class__(3, name, "ntk", sigma_w=1.3, sigma_b=0.2), x)
        assert np.max(np.abs(plain.ntk[-1] - ours.ntk[-1])) > 1e-2  # the option changes the kernel


@pytest.mark.parametrize("name", ["relu", "abs"])
def test_homogeneous_kernels_at_extreme_scales(rng, name):
    # φ positively homogeneous and σ_b = 0: Σ(a x, a x') = a² Σ(x, x') at every layer. With
    # a = 2^±450 the variances are ~1e±270, where q1·q2 over- or underflows float64.
    x = rng.standard_normal((7, 5))
    arch = Architecture(3, name, "ntk", sigma_w=1.4)
    base = layer_kernels(arch, x, x[:4])
    for a in (2.0**450, 2.0**-450):
        scaled = layer_kernels(arch, a * x, a * x[:4])
        for got, want in zip(scaled.nngp + scaled.ntk, base.nngp + base.ntk):
            # a power of two scales every operation exactly (the angles see the same ρ): only
            # a different order of summation in the matmul could move the last bits
            np.testing.assert_allclose(got, a * a * want, rtol=1e-14, atol=0)
