"""Sharding of Monte Carlo samples over all devices (one mesh axis, ``"samples"``).

Random numbers are always drawn as the full ``(S, ...)`` array from the key and only then
placed on the mesh, so the draws (and hence the answer, up to the order of floating-point
reductions) do not depend on the number of devices. Sample averages ``⟨·⟩`` are contractions
over the sharded axis, which XLA lowers to cross-device reductions.
"""

from __future__ import annotations

import numbers

import jax
from jax.sharding import NamedSharding, PartitionSpec

from .._errors import InputError

SAMPLE_AXIS = "samples"


def sample_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over the first `num_devices` devices (all by default), axis ``"samples"``.

    The axis is `AxisType.Auto`: Explicit axes break vmap/diffrax (notes style_ecosystem §2.6).
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= len(devices):
        raise InputError(f"solver.devices = {n!r}: need an integer in [1, {len(devices)}] "
                         f"({len(devices)} devices available)")
    try:
        return jax.make_mesh((n,), (SAMPLE_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=devices[:n])
    except ValueError as error:
        raise InputError(f"solver.devices = {n}: no mesh of {n} devices ({_one_line(error)})") \
            from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def largest_divisor_at_most(value: int, limit: int) -> int:
    """The number of devices to use so that each holds the same number of samples."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1 \
            or isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise InputError(f"solver.num_samples = {value!r} and solver.devices = {limit!r} must be "
                         "integers >= 1")
    for n in range(min(value, limit), 0, -1):
        if value % n == 0:
            return n
    return 1


def shard_samples(x: jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
    """Place `x` (leading axis = samples) on `mesh`, split along its leading axis."""
    if x.ndim == 0 or x.shape[0] % mesh.size:
        raise InputError(f"solver.num_samples: {x.shape[:1] or 'a scalar'} samples cannot be split "
                         f"evenly over solver.devices = {mesh.size}")
    spec = PartitionSpec(SAMPLE_AXIS, *([None] * (x.ndim - 1)))
    try:
        return jax.device_put(x, NamedSharding(mesh, spec))
    except ValueError as error:
        raise InputError(f"solver.devices: cannot shard the samples ({_one_line(error)})") from None


def replicate(x: jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
    """Place `x` on every device of `mesh`."""
    try:
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
    except ValueError as error:
        raise InputError(f"solver.devices: cannot replicate onto the mesh ({_one_line(error)})") \
            from None


def constrain_samples(x: jax.Array, mesh: jax.sharding.Mesh | None) -> jax.Array:
    """Inside jit: keep `x` split along its leading (sample) axis."""
    if mesh is None or mesh.size == 1:
        return x
    spec = PartitionSpec(SAMPLE_AXIS, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


__all__ = ["SAMPLE_AXIS", "constrain_samples", "largest_divisor_at_most", "replicate",
           "sample_mesh", "shard_samples"]
