"""What a figure says about its run: the title (activation, depth, parameterization, its scales,
P) and the time axis label (gradient-flow time t of docs/conventions.md §2)."""

from __future__ import annotations


def run_title(spec, regime: str | None = None) -> str:
    """Two short lines, e.g. ``"relu, L = 3, NTK param., σ_w = 1.4, σ_b = 0.1"`` and
    ``"P = 8 train, 4 test; lazy limit (closed form)"``; `regime` replaces the second line's
    description of what is drawn."""
    arch, data = spec.architecture, spec.data
    if arch.parameterization == "ntk":
        scales = rf"NTK param., $\sigma_w = {arch.sigma_w:g}$, $\sigma_b = {arch.sigma_b:g}$"
    else:
        scales = rf"$\mu$P, $\gamma_0 = {arch.gamma0:g}$"
    first = f"{arch.activation}, $L = {arch.hidden_layers}$, {scales}"
    points = f"$P = {data.num_train}$" + (f", $P_\\mathrm{{test}} = {data.num_test}$" if data.num_test else "")
    return f"{first}\n{points}" + (f"; {regime}" if regime else "")


def time_label(spec=None) -> str:
    """The time axis: gradient-flow time t, with the flow's learning rate (docs/conventions.md §2)."""
    if spec is None:
        return "gradient-flow time $t$"
    if spec.architecture.parameterization == "ntk":
        return r"gradient-flow time $t$ ($\eta = 1$)"
    return r"gradient-flow time $t$ ($\eta = \gamma_0^2 N$)"
