"""Finite width against the limit: ensemble statistics, 1/N fits and deviations.

For every observable O (loss, f, NTK entries, Φ^ℓ, G^ℓ) and width N:

    mean_N = ⟨O⟩_seeds,  stderr_N = sd_seeds(O)/√S,  N·Var_N = N · var_seeds(O)
    mean_N = a + b/N     (weighted least squares over widths, weights 1/stderr_N²)

and, when the infinite-width prediction is available, mean_N − O_∞ (the finite-width bias, O(1/N))
and the single-network RMS deviation sqrt⟨(O − O_∞)²⟩ (O(1/√N) where one network converges).

Uncentred NTK-parameterized networks (the default network of the conventions). Their f(0) ~
N(0, Σ^{L+1}) is O(1) at every width while the limit starts at f(0) = 0, so one network's f and
loss never approach the limit, and the ensemble means of f and 𝓛 carry O(1)/√S seed noise at
every N: their 1/N fits are noise. What converges is the NTK and the layer kernels (per network),
and the ensemble means. `compare` therefore adds, when t = 0 is a saved time, the observables
``f_train_cv``, ``f_test_cv`` and ``loss_train_cv``: the same quantities with an exactly zero-mean
control variate of f(0) removed (eq:lazy-variance, per network: y − f(t) ≈ A_t (y − f(0)),
A_t = e^{−Θt/P}),

    f_cv(t)    = f(t) − A_t f(0)                                    (E f(0) = 0 exactly)
    f*_cv(t)   = f*(t) − [f*(0) − Θ_{*X} Θ^{-1}(I − A_t) f(0)]
    𝓛_cv(t)    = 𝓛(t) − [q_t − E(q_t | hidden layers)],   q_t = |A_t (y − f(0))|²/2P,
                 E(q_t | hidden) = (|A_t y|² + tr A_t C A_t)/2P,  C = σ_w² Φ̂^L(0) + σ_b²,

(given the hidden layers, f(0) is exactly Gaussian with covariance C, so the bracket has mean
zero). For GD and SGD, A_t and Θ^{-1}(I − A_t) become the lazy step products A_k, M_k of
`dmft.sampler._propagator.lazy_response`. Their ensemble means estimate the same E f(t), E 𝓛(t) without bias, one network's
deviation is O(1/√N) and the seed noise O(1/√(NS)), so their 1/N fits measure the finite-width
bias. Their limits are the lazy f and 𝓛_lazy + tr Cov f(t)/2P. Centred networks
(``--centered``) need none of this: f(0) = 0 there. `Comparison.quantities` says in words what
each observable's mean, fit and deviation are about; the table prints it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jaxtyping import Float

from .._errors import DmftError, InputError
from ..spec import Spec
from ._sample import Samples

#: observables compared with the limit, in report order
OBSERVABLES = ("loss_train", "loss_test", "accuracy_train", "accuracy_test", "f_train", "f_test",
               "ntk", "ntk_test_train", "sharpness", "hessian_sharpness")


@dataclasses.dataclass(frozen=True, eq=False)
class InverseWidthFit:
    """mean(N) = limit + slope/N, elementwise, with 1σ uncertainties from the standard errors.

    ``chi2`` and ``dof`` (= #widths − 2) measure how well 1/N describes the data.
    """

    limit: np.ndarray
    limit_err: np.ndarray
    slope: np.ndarray
    slope_err: np.ndarray
    chi2: np.ndarray
    dof: int


def fit_inverse_width(
    widths, means: Float[np.ndarray, "W ..."], stderrs: Float[np.ndarray, "W ..."] | None = None
) -> InverseWidthFit:
    """Weighted least squares of mean(N) = a + b/N over the widths (axis 0), per element.

    With zero or missing standard errors the fit is unweighted and the uncertainties are those
    of unit errors. Needs at least two distinct widths.
    """
    try:
        widths = np.asarray(widths, dtype=np.float64).reshape(-1)
        means = np.asarray(means, dtype=np.float64)
        stderrs = np.ones_like(means) if stderrs is None else np.asarray(stderrs, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"a 1/N fit needs numeric widths, means and standard errors: {error}") from None
    if len(np.unique(widths)) < 2 or np.any(widths <= 0) or not np.all(np.isfinite(widths)):
        raise InputError(f"a 1/N fit needs at least two distinct positive widths, got {widths.tolist()}")
    if means.ndim == 0 or means.shape[0] != widths.size or stderrs.shape != means.shape:
        raise InputError(f"a 1/N fit needs one mean and one standard error per width: widths "
                         f"{widths.size}, means {means.shape}, standard errors {stderrs.shape}")
    shape = (-1,) + (1,) * (means.ndim - 1)
    x = (1.0 / widths).reshape(shape)
    positive = np.all(stderrs > 0, axis=0)
    weights = np.where(positive, 1.0 / np.where(stderrs > 0, stderrs, 1.0) ** 2, 1.0)
    s0 = weights.sum(0)
    s1 = (weights * x).sum(0)
    s2 = (weights * x * x).sum(0)
    sy = (weights * means).sum(0)
    sxy = (weights * x * means).sum(0)
    det = s0 * s2 - s1 * s1
    limit = (s2 * sy - s1 * sxy) / det
    slope = (s0 * sxy - s1 * sy) / det
    residual = means - limit - slope * x
    return InverseWidthFit(
        limit=limit,
        limit_err=np.sqrt(s2 / det),
        slope=slope,
        slope_err=np.sqrt(s0 / det),
        chi2=(weights * residual**2).sum(0),
        dof=len(widths) - 2,
    )


def ensemble_statistics(values: Float[np.ndarray, "S ..."], width: int) -> dict[str, np.ndarray]:
    """Mean, standard error of the mean and N·variance over the seed axis 0."""
    values = np.asarray(values)
    seeds = values.shape[0]
    var = values.var(axis=0, ddof=1) if seeds > 1 else np.zeros(values.shape[1:])
    return {"mean": values.mean(axis=0), "stderr": np.sqrt(var / seeds), "nvar": width * var}


def _lazy_layer_kernels(spec: Spec, num_times: int) -> dict[str, np.ndarray]:
    """Frozen Φ^ℓ and G^ℓ (ℓ = 1..L) of the lazy limit, with the sampler's normalisation:
    Φ^ℓ = (Σ^{ℓ+1} − σ_b²)/σ_w², G^ℓ = Σ̇^{ℓ+1} ⊙ G^{ℓ+1}, G^{L+1} = 1 (g^ℓ = √N ∂f/∂h^ℓ).
    Residual networks: `_lazy_residual_layer_kernels`."""
    from ..kernels import layer_kernels

    arch = spec.architecture
    if arch.residual_scale is not None and arch.hidden_layers > 1:
        return _lazy_residual_layer_kernels(spec, num_times)
    gain, bias = (arch.sigma_w**2, arch.sigma_b**2) if arch.parameterization == "ntk" else (1.0, 0.0)
    kernels = layer_kernels(arch, spec.data.x_train)
    L = arch.hidden_layers
    out = {}
    g = np.ones_like(kernels.nngp[0])
    for layer in range(L, 0, -1):
        g = np.asarray(kernels.nngp_derivative[layer]) * g
        out[f"g_L{layer}"] = np.broadcast_to(g, (num_times, *g.shape))
        phi = (np.asarray(kernels.nngp[layer]) - bias) / gain
        out[f"phi_L{layer}"] = np.broadcast_to(phi, (num_times, *phi.shape))
    return out


def _lazy_residual_layer_kernels(spec: Spec, num_times: int) -> dict[str, np.ndarray]:
    """Φ^ℓ and G^ℓ of the lazy limit of a residual network (docs/conventions.md §2c), where
    block ℓ+1 (ℓ = 1..L−1) is h^{ℓ+1} = h^ℓ + β(σ_w W φ(h^ℓ)/√N + σ_b b):

        Φ^ℓ = K_φ(Σ^ℓ)  (the activation's dual map on layer ℓ's NNGP),
        G^ℓ = (1 + β² Σ̇^{ℓ+1}) ⊙ G^{ℓ+1} for a residual block, Σ̇^{ℓ+1} ⊙ G^{ℓ+1} for the read-out,

    with Σ̇^{ℓ+1} = σ_w² K̇_φ(Σ^ℓ) (the stream passes the skip unchanged; the cross terms vanish
    under gradient independence, as for the NTK sum)."""
    from ..activations import get_activation
    from ..kernels import layer_kernels
    from ..network import Residual, mlp

    arch = spec.architecture
    network = mlp(arch)
    kernels = layer_kernels(network, spec.data.x_train)
    act = get_activation(arch.activation)
    L = arch.hidden_layers
    out = {}
    for layer in range(1, L + 1):
        sigma = np.asarray(kernels.nngp[layer - 1])
        q = np.diagonal(sigma)
        phi = np.asarray(act.dual(q[:, None], q[None, :], sigma))
        out[f"phi_L{layer}"] = np.broadcast_to(phi, (num_times, *phi.shape))
    g = np.ones_like(np.asarray(kernels.nngp[0]))
    for layer in range(L, 0, -1):
        block = network.blocks[layer]  # block ℓ+1 maps layer ℓ to ℓ+1
        derivative = np.asarray(kernels.nngp_derivative[layer])
        if isinstance(block[0], Residual):
            g = (1.0 + block[0].scale**2 * derivative) * g
        else:
            g = derivative * g
        out[f"g_L{layer}"] = np.broadcast_to(g, (num_times, *g.shape))
    return out


def infinite_width_limit(spec: Spec, centered: bool = False
                         ) -> tuple[dict[str, np.ndarray] | None, str]:
    """The limit's arrays (``f_train``, ``ntk``, ``loss_train``, ``phi_L{l}``, ...) from
    `dmft.solve`, and a note; ``(None, reason)`` when no limit is available for this spec.

    For uncentred NTK-parameterized networks f(0) ~ N(0, Σ^{L+1}) stays O(1) at every width, so
    the limit of the *mean* loss is 𝓛_lazy(t) + (1/2P) tr Cov f(t) (eq:lazy-variance); that is
    what ``loss_train`` / ``loss_test`` hold then. The mean of f converges to the lazy f.
    """
    try:
        from ..solvers import solve

        solution = solve(spec)
        arrays = solution.arrays(spec.data.y_train, spec.data.y_test)
    except (DmftError, ImportError, NotImplementedError) as error:
        return None, f"no limit: {type(error).__name__}: {' '.join(str(error).split())}"
    arrays = {k: v for k, v in arrays.items() if k != "t"}  # "{obs}_stderr": the limit's MC error
    if spec.architecture.parameterization == "ntk" and not any(k.startswith("phi_L") for k in arrays):
        arrays.update(_lazy_layer_kernels(spec, len(spec.training.times)))
    scalar_mse = spec.training.loss == "mse" and spec.data.num_outputs == 1
    if spec.architecture.parameterization == "ntk" and not centered and not scalar_mse:
        # the mean loss over f(0) ~ N(0, Σ) is derived for one output and the MSE only
        arrays = {k: v for k, v in arrays.items() if not k.startswith(("loss_", "accuracy_"))}
        return arrays, ("limit: the lazy solve; its loss and accuracy are left out, since the "
                        "mean over the O(1) f(0) of uncentred NTK networks is derived for one MSE "
                        "output only (train with --centered to compare them)")
    if spec.architecture.parameterization == "ntk" and not centered:
        from ._propagator import predict_training_fluctuations

        spread = predict_training_fluctuations(spec)
        arrays["loss_train"] = arrays["loss_train"] + spread.f_train.mean(axis=-1) / 2
        if "loss_test" in arrays and spread.f_test is not None:
            arrays["loss_test"] = arrays["loss_test"] + spread.f_test.mean(axis=-1) / 2
    method = solution.diagnostics.get("method", "lazy" if spec.architecture.parameterization == "ntk"
                                      else "dmft")
    return arrays, f"limit: dmft.solve ({method})"


def _observables(samples: Samples, width: int) -> dict[str, np.ndarray]:
    member = samples[width]
    out = {key: member[key] for key in OBSERVABLES if key in member}
    for kind in ("phi", "g"):
        for layer in range(member[kind].shape[2]):
            out[f"{kind}_L{layer + 1}"] = member[kind][:, :, layer]
    return out


def _uncentred_ntk(samples: Samples, spec: Spec) -> bool:
    return spec.architecture.parameterization == "ntk" and not samples.diagnostics.get("centered", False)


def _control_variates(samples: Samples, spec: Spec, limit: dict[str, np.ndarray] | None
                      ) -> tuple[dict[int, dict[str, np.ndarray]], str]:
    """``f_train_cv``, ``f_test_cv``, ``loss_train_cv`` per width for uncentred NTK networks (see
    the module docstring), and a note; empty with the reason when they do not apply."""
    if not _uncentred_ntk(samples, spec):
        return {}, ""
    t = np.asarray(samples.t, dtype=np.float64)
    if t.size == 0 or t[0] != 0.0:
        return {}, "no f(0) control variate: t = 0 is not a saved time"
    if limit is None or "ntk" not in limit:
        return {}, "no f(0) control variate: no lazy NTK"
    arch, data = spec.architecture, spec.data
    first = samples[samples.widths[0]]["f_train"]
    P = data.num_train
    if first.ndim != 3 or first.shape[-1] != P:
        return {}, f"no f(0) control variate: f_train has shape {first.shape}, not (seeds, T, {P})"
    from ._propagator import lazy_response

    theta = np.asarray(limit["ntk"], dtype=np.float64).reshape(-1, P, P)[0]
    decay, growth = lazy_response(spec, theta)  # A_t (e^{−Θt/P} for flow), M_t (Θ^{-1}(I − A_t))
    y = np.asarray(data.y_train, dtype=np.float64).reshape(P)
    a_y = np.einsum("tij,j->ti", decay, y)
    out: dict[int, dict[str, np.ndarray]] = {}
    for width in samples.widths:
        member = samples[width]
        f, f0 = member["f_train"], member["f_train"][:, 0]
        a_f0 = np.einsum("tij,sj->sti", decay, f0)
        cv = {"f_train_cv": f - a_f0}
        # 𝓛 − [q_t − E(q_t | hidden)]: q_t = |A_t(y − f0)|²/2P, f0 | hidden ~ N(0, C)
        cov = arch.sigma_w**2 * member["phi"][:, 0, -1] + arch.sigma_b**2  # (S, P, P)
        q = np.sum((a_y[None] - a_f0) ** 2, axis=-1) / (2 * P)
        expected = (np.sum(a_y**2, axis=-1)[None]
                    + np.einsum("tij,sjk,tik->st", decay, cov, decay)) / (2 * P)
        cv["loss_train_cv"] = member["loss_train"] - (q - expected)
        if "f_test" in member and "ntk_test_train" in limit:
            theta_star = np.asarray(limit["ntk_test_train"], dtype=np.float64)[0]  # (P*, P)
            f0_star = member["f_test"][:, 0]
            shift = f0_star[:, None, :] - np.einsum("qi,tij,sj->stq", theta_star, growth, f0)
            cv["f_test_cv"] = member["f_test"] - shift
        out[width] = cv
    return out, ("f(0) control variates: f_cv = f - A_t f(0) (A_t = e^(-Θt/P) for flow, the lazy "
                 "step product for GD/SGD), loss_cv = loss - [q - E(q|hidden)] "
                 "(zero mean; see dmft.sampler._compare)")


def _describe(name: str, uncentred_ntk: bool, names=()) -> str:
    """What the mean, fit and deviation of observable `name` are about, in one line."""
    kinds = {"loss_train": "train loss", "loss_test": "test loss", "f_train": "f on train inputs",
             "f_test": "f on test inputs", "ntk": "NTK K(t) over train inputs",
             "ntk_test_train": "NTK K(t) test x train",
             "accuracy_train": "train accuracy", "accuracy_test": "test accuracy",
             "sharpness": "Gauss-Newton sharpness (lambda_max(K)/P for MSE)",
             "hessian_sharpness": "Hessian sharpness lambda_max(eta Hess L) (Lanczos)"}
    if name.endswith("_cv"):
        base = name[:-3]
        what = {"f_train": "f(t) - A_t f(0)", "f_test": "f*(t) - [f*(0) - Θ*X M_t f(0)]",
                "loss_train": "train loss minus its zero-mean f(0) term"}[base]
        limit = ("lazy loss + tr Cov f(t)/2P (eq:lazy-variance)" if base.startswith("loss")
                 else "lazy f")
        return (f"ensemble mean of {what} (same mean as {base}, seed noise O(1/sqrt(NS))) "
                f"vs {limit}; one network converges as 1/sqrt(N)")
    if name in kinds:
        what = kinds[name]
        if uncentred_ntk and name.startswith(("loss", "f_")):
            limit = "lazy loss + tr Cov f(t)/2P (eq:lazy-variance)" if name.startswith("loss") else "lazy f"
            text = (f"ensemble mean of {what} vs {limit}; uncentred: seed noise O(1)/sqrt(S) at "
                    f"every N, one network does not converge (random f(0))")
            return text + (f"; its 1/N fit is in {name}_cv" if f"{name}_cv" in names else "")
        if name.startswith("accuracy"):
            return (f"ensemble mean of {what} vs the limit's; a step function of f, so no 1/N "
                    "fit (its mean converges, but not as a + b/N)")
        if name == "hessian_sharpness":
            return (f"ensemble mean of {what}; the limit records only the Gauss-Newton part "
                    "(sharpness), so no deviation")
        return f"ensemble mean of {what} vs the limit's"
    kind, layer = name.split("_L")
    symbol = "Phi" if kind == "phi" else "G"
    return f"ensemble mean of {symbol}^{layer}(t,t) (layer {layer}) vs the limit's"


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """Per observable: statistics per width, the 1/N fit and deviations from the limit.

    ``quantities[name]`` says in one line which quantity the statistics and the fit of `name` are
    about and what it is compared with; ``cv_note`` says whether the f(0) control variates of
    uncentred NTK networks were formed (module docstring); ``divergence_note`` names the members
    (per width, with their first divergent step) that diverged and are not in the statistics.
    ``widths`` are the widths with at least one member that did not diverge."""

    widths: tuple[int, ...]
    stats: dict[str, dict[int, dict[str, np.ndarray]]]
    fits: dict[str, InverseWidthFit]
    limit: dict[str, np.ndarray] | None
    limit_note: str
    summary: dict[str, dict[str, np.ndarray]]
    quantities: dict[str, str] = dataclasses.field(default_factory=dict)
    cv_note: str = ""
    #: which members diverged (GD/SGD) and were left out of the statistics; "" when none did
    divergence_note: str = ""

    def arrays(self) -> dict[str, np.ndarray]:
        """``N{N}_{obs}_mean/_stderr/_nvar``, ``N{N}_{obs}_deviation``, ``limit_{obs}``,
        ``fit_{obs}_limit/_limit_err/_slope/_slope_err/_chi2``, ``summary_{obs}_{stat}``."""
        out: dict[str, Any] = {}
        for name, per_width in self.stats.items():
            for width, stats in per_width.items():
                for stat, value in stats.items():
                    out[f"N{width}_{name}_{stat}"] = value
            if self.limit is not None and name in self.limit:
                out[f"limit_{name}"] = self.limit[name]
                if f"{name}_stderr" in self.limit:
                    out[f"limit_{name}_stderr"] = self.limit[f"{name}_stderr"]
            fit = self.fits.get(name)
            if fit is not None:
                for field in ("limit", "limit_err", "slope", "slope_err", "chi2"):
                    out[f"fit_{name}_{field}"] = getattr(fit, field)
            for stat, value in self.summary.get(name, {}).items():
                out[f"summary_{name}_{stat}"] = value
        return {key: np.asarray(value) for key, value in out.items()}


def _check_limit(limit: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        value = np.asarray(limit[name], dtype=np.float64)
        return np.broadcast_to(value, shape)
    except (TypeError, ValueError):
        raise InputError(f"limit[{name!r}] has shape {np.shape(limit[name])}, but the ensembles' "
                         f"{name} has shape {shape}") from None


def without_diverged(samples: Samples) -> tuple[Samples, str]:
    """`samples` without the members listed in ``diagnostics["diverged"]`` (width → {seed: first
    divergent step}) and without widths none of whose members survived, and a note naming them;
    ``(samples, "")`` when nothing diverged. The survivors' statistics are conditional on not
    diverging, which the note says."""
    diverged = samples.diagnostics.get("diverged") or {}
    if not any(diverged.values()):
        return samples, ""
    members, kept, parts = {}, [], []
    for width in samples.widths:
        bad = {int(seed): int(step) for seed, step in (diverged.get(width) or {}).items()}
        keep = np.asarray([seed not in bad for seed in samples.seeds])
        if bad:
            steps = ", ".join(f"{seed}@{step}" for seed, step in sorted(bad.items()))
            parts.append(f"N = {width}: {len(bad)}/{len(samples.seeds)} seeds diverged "
                         f"(seed@first divergent step: {steps})"
                         + ("; no member left, width left out" if not keep.any() else ""))
        if keep.any():
            members[width] = {key: np.asarray(value)[keep] for key, value in samples[width].items()}
            kept.append(width)
    note = ("diverged members are left out: statistics, fits and deviations are over the members "
            "that did not diverge (conditional on stability); " + "; ".join(parts))
    return dataclasses.replace(samples, widths=tuple(kept), members=members), note


def compare(samples: Samples, spec: Spec, limit: dict[str, np.ndarray] | None = None,
            limit_note: str | None = None) -> Comparison:
    """Ensemble statistics per width, 1/N fits and deviations from the limit (computed with
    `infinite_width_limit` unless given). For uncentred NTK-parameterized networks it adds the
    f(0) control-variate observables ``*_cv`` whose fits measure the 1/N bias (module docstring).
    Members that diverged under a GD/SGD rule are left out and named in ``divergence_note``
    (`without_diverged`); if every member diverged the comparison has no widths.
    Bad input (an empty or mismatched ensemble, a limit of the wrong shape) is an InputError."""
    widths = tuple(getattr(samples, "widths", ()))
    if not widths:
        raise InputError("compare needs ensembles of at least one width (--widths)")
    samples, divergence_note = without_diverged(samples)
    widths = samples.widths
    if limit is None and limit_note is None:
        limit, limit_note = infinite_width_limit(spec, samples.diagnostics.get("centered", False))
    if not widths:
        return Comparison(widths=(), stats={}, fits={}, limit=limit, limit_note=limit_note or "",
                          summary={}, divergence_note=divergence_note)
    observables = {width: _observables(samples, width) for width in widths}
    names = list(observables[widths[0]])
    for width in widths[1:]:
        if list(observables[width]) != names:
            raise InputError(f"ensembles of width {width} record {sorted(observables[width])}, "
                             f"those of width {widths[0]} {sorted(names)}")
    if limit is not None:
        for name in names:
            if name in limit:
                _check_limit(limit, name, observables[widths[0]][name].shape[1:])
    try:
        cv, cv_note = _control_variates(samples, spec, limit)
    except (TypeError, ValueError, np.linalg.LinAlgError) as error:
        raise InputError(f"the f(0) control variates need the spec's data and the lazy limit of "
                         f"these ensembles: {' '.join(str(error).split())}") from None
    if cv:
        limit = dict(limit)
        for key in cv[widths[0]]:
            limit[key] = limit[key[:-3]]
        for width in widths:
            observables[width].update(cv[width])
        order = [n for n in OBSERVABLES if n in observables[widths[0]]]
        names = [n for n in names if n not in OBSERVABLES]
        names = [m for n in order for m in (n, f"{n}_cv") if m in observables[widths[0]]] + names
    uncentred = _uncentred_ntk(samples, spec)
    stats: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    fits: dict[str, InverseWidthFit] = {}
    summary: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        per_width = {}
        target = None
        for width in widths:
            values = observables[width][name]
            per_width[width] = ensemble_statistics(values, width)
            if limit is not None and name in limit:
                target = _check_limit(limit, name, per_width[width]["mean"].shape)
                per_width[width]["deviation"] = per_width[width]["mean"] - target
        stats[name] = per_width
        if len(set(widths)) >= 2 and not name.startswith("accuracy"):
            # accuracy is a step function of f: no 1/N expansion, so no fit
            fits[name] = fit_inverse_width(
                widths,
                np.stack([per_width[w]["mean"] for w in widths]),
                np.stack([per_width[w]["stderr"] for w in widths]),
            )
        rows: dict[str, list[float]] = {"nvar": [], "noise": []}
        if target is not None:
            rows.update(bias=[], member_rms=[])
        for width in widths:
            s = per_width[width]
            rows["nvar"].append(float(np.mean(s["nvar"])))
            rows["noise"].append(float(np.sqrt(np.mean(s["stderr"] ** 2))))
            if "bias" in rows:
                rows["bias"].append(float(np.sqrt(np.mean(s["deviation"] ** 2))))
                member = observables[width][name] - target
                rows["member_rms"].append(float(np.sqrt(np.mean(member**2))))
        summary[name] = {key: np.asarray(value) for key, value in rows.items()}
    quantities = {name: _describe(name, uncentred, names) for name in names}
    return Comparison(widths=widths, stats=stats, fits=fits, limit=limit,
                      limit_note=limit_note or "", summary=summary, quantities=quantities,
                      cv_note=cv_note, divergence_note=divergence_note)
