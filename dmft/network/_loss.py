"""Losses: the value 𝓛(f, y) and the error signal Δ = −P ∂𝓛/∂f, the only place Δ is formed."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax.nn import logsumexp, softmax
from jaxtyping import Array, Float

from .._errors import InputError


@dataclasses.dataclass(frozen=True)
class MSE:
    """𝓛 = (1/2P) Σ_μ ‖f_μ − y_μ‖² and Δ = y − f (docs/conventions.md §2, §2b).

    Works on numpy and JAX arrays alike. By default points are the last axis (one output per
    point, (..., P)); with ``rows=True`` the arrays are (..., P, C), one row of C outputs per
    point, and the squared error is summed over the outputs. Any leading axes (time, batch, seed)
    are kept. Cost O(P C) per evaluation.
    """

    name = "mse"

    def value(self, f: Float[Array, "... P"], y: Float[Array, "... P"], rows: bool = False
              ) -> Float[Array, "..."]:
        squared = (f - y) ** 2
        if rows:
            squared = squared.sum(axis=-1)
        return 0.5 * squared.mean(axis=-1)

    def error_signal(self, f: Float[Array, "... P"], y: Float[Array, "... P"], rows: bool = False
                     ) -> Float[Array, "... P"]:
        return y - f

    def sharpness(self, ntk: Float[Array, "... P P"], f=None) -> Float[Array, "..."]:
        """The Gauss–Newton sharpness λ_max(K)/P in time units of the kernel K over the P training
        points: the output Hessian is the identity, so it is also λ_max(K ⊗ I_C)/P for C outputs
        and needs no f. Cost O(P³) per kernel."""
        ntk = jnp.asarray(ntk)
        symmetric = 0.5 * (ntk + jnp.swapaxes(ntk, -1, -2))
        return jnp.linalg.eigvalsh(symmetric)[..., -1] / ntk.shape[-1]


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
    """𝓛 = (1/P) Σ_μ [logsumexp(f_μ) − y_μ·f_μ] and Δ = y − softmax(f) (docs/conventions.md §2b).

    Logits f and target rows y (one-hot or probabilities) have shape (..., P, C): points are the
    second-to-last axis, classes the last (``rows`` is accepted for a signature shared with `MSE`;
    the rows are always there). Cost O(P C) per evaluation.
    """

    name = "cross_entropy"

    def value(self, f: Float[Array, "... P C"], y: Float[Array, "... P C"], rows: bool = True
              ) -> Float[Array, "..."]:
        return (logsumexp(f, axis=-1) - (y * f).sum(axis=-1)).mean(axis=-1)

    def error_signal(self, f: Float[Array, "... P C"], y: Float[Array, "... P C"],
                     rows: bool = True) -> Float[Array, "... P C"]:
        return y - softmax(f, axis=-1)

    def sharpness(self, ntk: Float[Array, "... P P"], f: Float[Array, "... P C"]
                  ) -> Float[Array, "..."]:
        """The Gauss–Newton sharpness λ_max(H^{1/2} (K ⊗ I_C) H^{1/2})/P at logits f, with the
        softmax Hessians H = blockdiag(H_μ), H_μ = diag(p_μ) − p_μ p_μᵀ, p = softmax(f): the
        Gauss–Newton matrix of 𝓛 in time units. Cost O((PC)³) per kernel."""
        ntk, p = jnp.asarray(ntk), softmax(jnp.asarray(f), axis=-1)
        hessian = p[..., :, None] * jnp.eye(p.shape[-1]) - p[..., :, None] * p[..., None, :]
        values, vectors = jnp.linalg.eigh(hessian)  # (..., P, C), (..., P, C, C)
        root = (vectors * jnp.sqrt(jnp.clip(values, 0.0, None))[..., None, :]) @ jnp.swapaxes(
            vectors, -1, -2)  # H_μ^{1/2}, symmetric
        # M[μc, αd] = Σ_e H_μ^{1/2}[c, e] K_μα H_α^{1/2}[e, d]
        matrix = jnp.einsum("...mce,...ma,...aed->...mcad", root, ntk, root)
        num_train, size = ntk.shape[-1], ntk.shape[-1] * p.shape[-1]
        matrix = matrix.reshape(*matrix.shape[:-4], size, size)
        matrix = 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))
        return jnp.linalg.eigvalsh(matrix)[..., -1] / num_train


Loss = MSE | CrossEntropy
_LOSSES = {"mse": MSE, "cross_entropy": CrossEntropy}


def loss_from_name(name: str) -> Loss:
    """The loss object of ``training.loss`` (docs/conventions.md §2b)."""
    if name not in _LOSSES:
        raise InputError(f"training.loss must be one of {tuple(_LOSSES)}, got {name!r}")
    return _LOSSES[name]()


__all__ = ["MSE", "CrossEntropy", "Loss", "loss_from_name"]
