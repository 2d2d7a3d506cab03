"""Sharpness of a finite-width network: the Gauss–Newton λ_max(K)/P and the Hessian's λ_max(η∇²𝓛).

With 𝓛 = (1/2P) Σ_μ (f_μ − y_μ)² the Hessian splits into a Gauss–Newton and a functional part,

    η ∇²𝓛 = η JᵀJ/P + (η/P) Σ_μ (f_μ − y_μ) ∇²f_μ,        J = ∂f/∂θ  (P × #params),

and the nonzero eigenvalues of η JᵀJ/P are those of η J Jᵀ/P = K/P, the empirical NTK over P. So
`ntk_sharpness` = λ_max(K)/P is the Gauss–Newton sharpness in time units (docs/conventions.md §5)
and `hessian_sharpness` = λ_max(η ∇²𝓛) the full one: one step θ ↦ θ − η0 η ∇𝓛 of gradient descent
is linearly unstable along the top eigenvector once η0 · λ_max(η∇²𝓛) > 2.

`lanczos_top_eigenvalue` runs the plain three-term Lanczos recursion on Hessian–vector products
(`jax.jvp` of `jax.grad`, forward over reverse): it keeps three parameter-sized vectors, never the
Krylov basis, so its memory is that of a few gradients at any width. Without reorthogonalisation
the basis loses orthogonality once a Ritz value converges, and the tridiagonal matrix then repeats
converged eigenvalues ("ghosts"); its largest Ritz value stays an estimate of λ_max from below
that only improves with the number of steps. How fast it converges depends on the gap at the top
of the spectrum: when the Gauss–Newton outlier λ_max(K)/P dominates, a few steps suffice; when the
functional part (O(γ0) in μP at initialisation, with a dense spectrum of both signs) sets the
top, there is little gap and the estimate approaches λ_max slowly from below, so raise the
number of steps (``sampler.hessian_steps``) there; benchmarks/hessian_sharpness.py measures the
change from tripling them. An exact invariant subspace (the recursion's β = 0)
ends the recursion: later diagonal entries are set to the first Rayleigh quotient, which lies
inside the spectrum, so they cannot raise the maximum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ..network import MSE

#: a Lanczos step whose new β is below this fraction of the largest |α| + β so far ends the
#: recursion (an invariant Krylov subspace, up to round-off)
BREAKDOWN = 1e-12


def lanczos_top_eigenvalue(matvec, start: Float[Array, " n"], steps: int) -> Array:
    """Largest Ritz value of `steps` Lanczos steps of the symmetric operator `matvec` from `start`.

    Exact (to round-off) for steps ≥ n on an n-dimensional operator; jit- and vmap-compatible."""
    if steps < 1:
        raise ValueError(f"Lanczos needs at least one step, got {steps}")
    v = start / jnp.linalg.norm(start)

    def body(j, carry):
        v_prev, v, beta, broken, scale, alphas, betas = carry
        w = matvec(v) - beta * v_prev
        alpha = jnp.vdot(w, v)
        w = w - alpha * v
        w = w - jnp.vdot(w, v) * v  # one local re-orthogonalisation against v (round-off)
        beta_new = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta_new)
        ends = broken | (beta_new <= BREAKDOWN * scale)
        alpha = jnp.where(broken, alphas[0], alpha)
        alphas = alphas.at[j].set(alpha)
        betas = betas.at[j].set(jnp.where(ends, 0.0, beta_new))
        v_next = jnp.where(ends, jnp.zeros_like(w), w / jnp.where(ends, 1.0, beta_new))
        return v, v_next, jnp.where(ends, 0.0, beta_new), ends, scale, alphas, betas

    zeros = jnp.zeros(steps, v.dtype)
    init = (jnp.zeros_like(v), v, jnp.zeros((), v.dtype), jnp.zeros((), bool),
            jnp.zeros((), v.dtype), zeros, zeros)
    *_, alphas, betas = jax.lax.fori_loop(0, steps, body, init)
    tridiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.linalg.eigvalsh(tridiagonal)[-1]


def ntk_sharpness(ntk: Float[Array, "P P"]) -> Array:
    """λ_max(K)/P of an empirical NTK over the P training points (the Gauss–Newton sharpness of
    the MSE, `MSE.sharpness`)."""
    return MSE().sharpness(ntk)


def hessian_matvec(net, params, x, y, offset=0.0):
    """v ↦ η ∇²𝓛(θ) v on flattened parameters, 𝓛 the full-batch loss of `net` on (x, y) (of
    f − offset in centred training)."""
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda p: net.loss_value(unravel(p), x, y, offset))
    eta = net.learning_rate
    return lambda v: eta * jax.jvp(grad, (flat,), (v,))[1], flat


def gauss_newton_matvec(net, params, x):
    """v ↦ η JᵀJ v / P on flattened parameters (the Gauss–Newton part of η ∇²𝓛 for the MSE; for
    C outputs J is the (PC × #params) Jacobian)."""
    flat, unravel = ravel_pytree(params)
    predict = lambda p: net.predict(unravel(p), x)  # noqa: E731
    eta, P = net.learning_rate, x.shape[0]

    def matvec(v):
        _, jv = jax.jvp(predict, (flat,), (v,))
        (jtjv,) = jax.vjp(predict, flat)[1](jv)
        return eta * jtjv / P

    return matvec, flat


def start_vector(key, size: int, dtype) -> Array:
    """The Lanczos start of one member: N(0, I) from `key` (fixed over the saved times)."""
    return jax.random.normal(key, (size,), dtype)


def hessian_sharpness(net, params, x, y, key, steps: int, offset=0.0) -> Array:
    """λ_max(η ∇²𝓛(θ)) of `net` at `params` on (x, y) (of f − offset in centred training) by
    `steps` Lanczos steps from a random start drawn from `key`."""
    matvec, flat = hessian_matvec(net, params, x, y, offset)
    return lanczos_top_eigenvalue(matvec, start_vector(key, flat.size, flat.dtype), steps)


def gauss_newton_sharpness(net, params, x, key, steps: int) -> Array:
    """λ_max(η JᵀJ/P) by Lanczos (equal to `ntk_sharpness` of the empirical NTK; a check)."""
    matvec, flat = gauss_newton_matvec(net, params, x)
    return lanczos_top_eigenvalue(matvec, start_vector(key, flat.size, flat.dtype), steps)
