"""The NTK flow against the network's own output for kinked activations (derivations/dmft.md §2.1).

A two-layer μP network of width S is integrated directly (its first-layer fields h_i = W_i x/√D
and readout weights z_i, 4th-order Runge–Kutta with a fixed step, independent of dmft's solvers)
in two ways on the P = 8 task of `benchmarks/dmft_vs_networks.py`, γ0 = 1:
- "network": Δ = y − γ0⁻¹⟨z φ(h)⟩, the network's actual output (exact gradient flow);
- "NTK flow": Δ carried as a state with ∂tΔ = −KΔ/P, K = ⟨φφᵀ⟩ + Φ⁰⊙⟨z²φ'φ'ᵀ⟩ of the same neurons.
For smooth φ the two are the same dynamics; for ReLU the NTK over-counts the neurons that slide
along the kink, at every step size and width. Prints 𝓛(2) and 𝓛(4) of both, and of the NTK flow's
own read-out ⟨zφ(h)⟩/γ0.

    python benchmarks/ntk_flow_vs_readout.py                         # relu and tanh, S = 16384
    python benchmarks/ntk_flow_vs_readout.py --width 65536 --steps 0.02
"""

from __future__ import annotations

import argparse
import os
from functools import partial
import sys

# benchmarks/ holds a script named dmft.py: keep it from shadowing the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dmft.activations import get_activation  # noqa: E402


def rk4_step(field, state, dt):
    add = lambda s, k, c: jax.tree_util.tree_map(lambda a, b: a + c * b, s, k)  # noqa: E731
    k1 = field(state)
    k2 = field(add(state, k1, dt / 2))
    k3 = field(add(state, k2, dt / 2))
    k4 = field(add(state, k3, dt))
    return jax.tree_util.tree_map(lambda s, a, b, c, d: s + dt / 6 * (a + 2 * b + 2 * c + d),
                                  state, k1, k2, k3, k4)


def run(activation: str, width: int, dt: float, gamma0: float = 1.0, t_end: float = 4.0):
    rng = np.random.default_rng(0)  # the P = 8 task of dmft_vs_networks.py
    x = rng.standard_normal((8, 8))
    y = jnp.asarray(np.sign(rng.standard_normal(8)))
    num_train = x.shape[0]
    kx = jnp.asarray(x @ x.T / x.shape[1])
    act = get_activation(activation)
    key_u, key_r = jax.random.split(jax.random.PRNGKey(1))
    u = jax.random.normal(key_u, (width // 2, num_train)) @ jnp.linalg.cholesky(kx).T
    r = jax.random.normal(key_r, (width // 2,))
    h0, z0 = jnp.concatenate([u, u]), jnp.concatenate([r, -r])  # antithetic: f(0) = 0

    def output(h, z):
        return jnp.mean(z[:, None] * act.phi(h), axis=0) / gamma0

    def velocities(h, z, delta):
        grad = z[:, None] * act.dphi(h)
        return (gamma0 / num_train) * (grad * delta) @ kx, (gamma0 / num_train) * act.phi(h) @ delta

    def network(state):
        h, z = state
        return velocities(h, z, y - output(h, z))

    def ntk_flow(state):
        h, z, delta = state
        phi, grad = act.phi(h), z[:, None] * act.dphi(h)
        ntk = phi.T @ phi / width + kx * (grad.T @ grad / width)
        return (*velocities(h, z, delta), -ntk @ delta / num_train)

    steps = int(round(t_end / dt))
    saved = [int(round(t / dt)) for t in (2.0, 4.0)]

    @partial(jax.jit, static_argnums=0)
    def march(field, state):
        return jax.lax.scan(lambda s, _: (rk4_step(field, s, dt),) * 2, state, None, length=steps)[1]

    def loss(f):
        return 0.5 * jnp.mean((f - y) ** 2, axis=-1)

    h, z = march(network, (h0, z0))
    net = loss(jax.vmap(output)(h, z))
    h, z, delta = march(ntk_flow, (h0, z0, y))
    flow = 0.5 * jnp.mean(delta**2, axis=-1)
    flow_readout = loss(jax.vmap(output)(h, z))
    return [np.asarray(v)[[i - 1 for i in saved]] for v in (net, flow, flow_readout)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", default="relu,tanh")
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--steps", default="0.02,0.005", help="Runge–Kutta steps")
    args = parser.parse_args()
    print("| φ | width | step | network 𝓛(2) / 𝓛(4) | NTK flow 𝓛(2) / 𝓛(4) "
          "| NTK flow's read-out 𝓛(2) / 𝓛(4) |")
    print("|---|---|---|---|---|---|")
    for activation in args.activations.split(","):
        for dt in (float(s) for s in args.steps.split(",")):
            net, flow, readout = run(activation, args.width, dt)
            print(f"| {activation} | {args.width} | {dt} | {net[0]:.5f} / {net[1]:.5f} "
                  f"| {flow[0]:.5f} / {flow[1]:.5f} | {readout[0]:.5f} / {readout[1]:.5f} |",
                  flush=True)


if __name__ == "__main__":
    main()
