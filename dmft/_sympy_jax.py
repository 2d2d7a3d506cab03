"""SymPy → JAX: the one lowering every symbolic source goes through."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import sympy as sp

JAX_FUNCTIONS: dict[str, Callable] = {
    "erf": jax.scipy.special.erf,
    "erfc": jax.scipy.special.erfc,
    "loggamma": jax.scipy.special.gammaln,
    "gamma": lambda x: jnp.exp(jax.scipy.special.gammaln(x)),
}
"""SymPy function → JAX mapping for `sympy.lambdify` (the default maps erf to `math.erf`)."""


def lambdify_jax(args, expr, functions: Mapping[str, Callable] | None = None) -> Callable:
    """A jit/vmap/grad-safe JAX function of ``expr`` (an expression or a tuple of them), with
    common subexpressions shared; ``functions`` adds name → JAX mappings for undefined
    SymPy functions such as ``K_phi``."""
    return sp.lambdify(args, expr, modules=[{**JAX_FUNCTIONS, **(functions or {})}, "jax"],
                       cse=True)
