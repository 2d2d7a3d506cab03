"""Derive the infinite-width equations of an architecture mechanically.

The architecture becomes a straight-line program of dense layers (`Dense` ops, the NETSOR-style
MatMul + Nonlin chain). Each op is turned into equations by the infinite-width rules, one layer
at a time (static single assignment: a layer's equation names the previous layer's kernels and
never inlines them):

- forward (kernel) rule, NTK parameterization (docs/conventions.md §1a):
  Σ^1 = σ_w² x·x'/D + σ_b², Σ^{l+1} = σ_w² E[φ(u)φ(v)] + σ_b², (u, v) ~ N(0, Σ^l);
- tangent rule: Θ^1 = Σ^1, Θ^{l+1} = Σ^{l+1} + σ_w² E[φ'(u)φ'(v)] Θ^l;
- residual block h^{l+1} = h^l + (α/√L) branch(h^l): Σ^{l+1} = Σ^l + (α²/L)[σ_w² E[φφ] + σ_b²],
  Θ^{l+1} = Θ^l + (α²/L)[σ_w² E[φφ] + σ_b² + σ_w² E[φ'φ'] Θ^l];
- μP with richness γ0 (docs/conventions.md §1b): each MatMul by W^l gives a forward Gaussian source
  u^{l+1} ~ GP(0, Φ^l), its transpose a backward source r^l ~ GP(0, G^{l+1}), the weight's
  gradient-flow update the γ0 Δ-memory terms and the correlation of W(0) with later fields
  the causal responses A, B (Bordelon & Pehlevan 2022; derivations/dmft.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import sympy as sp

from .._errors import InputError
from ..spec import Architecture, Training
from . import _ir as ir
from ._ir import (
    Act, BatchWeight, DualKernel, Equation, ErrorSignal, Expect, Field, FuncDeriv,
    GaussianProcess, Kernel, MatrixForm, Node, Notation, Response, Scalar, TimeDerivative, add,
    data_sum, integral, mul, step_sum,
)

# Declared input symbols of the layer maps (what `dmft verify --quantity` accepts).
q1 = sp.Symbol("q1", positive=True)
q2 = sp.Symbol("q2", positive=True)
c = sp.Symbol("c", real=True)
theta_prev = sp.Symbol("theta_prev", real=True)
kx = sp.Symbol("kx", real=True)

LAYER_SYMBOLS_DOC = (
    "layer 1: kx = x·x'/D; layer l >= 2: q1 = Σ^{l-1}(x,x), q2 = Σ^{l-1}(x',x'), "
    "c = Σ^{l-1}(x,x'), theta_prev = Θ^{l-1}(x,x'); the spec's sigma_w, sigma_b (and "
    "alpha_res, L for residual nets) may be written as symbols"
)


def _activation(name: str):
    from ..activations import get_activation

    return get_activation(name)


def _rename_to_declared(expr: sp.Expr | None) -> sp.Expr | None:
    """The activation's SymPy duals use its own (q1, q2, c); map them onto ours by name."""
    if expr is None:
        return None
    mapping = {s: {"q1": q1, "q2": q2, "c": c}[s.name] for s in expr.free_symbols
               if s.name in ("q1", "q2", "c")}
    return expr.xreplace(mapping)


def _exact(value: float) -> sp.Rational:
    """A float spec value as the exact decimal it was written as (1.4 -> 7/5)."""
    return sp.Rational(repr(float(value)))


# ----------------------------------------------------------------------------------------------
# The program: one Dense op per weight matrix.


@dataclasses.dataclass(frozen=True)
class Dense:
    """h^{layer} = [h^{layer-1} +] scale · W^{layer-1} φ(h^{layer-1}) / √fan_in (+ bias)."""

    layer: int
    source: Literal["input", "hidden"]
    residual: bool = False
    readout: bool = False


def program(arch: Architecture, residual: bool = False) -> tuple[Dense, ...]:
    """The straight-line program of an L-hidden-layer MLP: L + 1 dense ops."""
    L = arch.hidden_layers
    ops = [Dense(1, "input")]
    ops += [Dense(l, "hidden", residual=residual) for l in range(2, L + 1)]
    ops.append(Dense(L + 1, "hidden", readout=True))
    return tuple(ops)


# ----------------------------------------------------------------------------------------------
# Kernel recursions.


@dataclasses.dataclass(frozen=True, eq=False)
class LayerMap:
    """One layer's recursion: the printed IR equation and the scalar SymPy map it implements.

    ``expr`` is in the declared ``inputs`` (kx for layer 1; q1, q2, c, theta_prev above) and
    the scalar parameters (σ_w, σ_b, α, L); ``numeric()`` substitutes the spec's values.
    """

    quantity: str
    layer: int
    equation: Equation
    expr: sp.Expr
    inputs: tuple[sp.Symbol, ...]
    parameters: Mapping[sp.Symbol, sp.Expr]

    def numeric(self) -> sp.Expr:
        return self.expr.xreplace(dict(self.parameters))


def _sigma(l: int, a: str = "x", b: str = "x'") -> Kernel:
    return Kernel("Sigma", l, data=(a, b), time=(None, None))


def _theta(l: int) -> Kernel:
    return Kernel("Theta", l, data=("x", "x'"), time=(None, None))


def _sigmadot(l: int) -> Kernel:
    return Kernel("Sigmadot", l, data=("x", "x'"), time=(None, None))


def _kx() -> Node:
    return Notation(r"\frac{x\cdot x'}{D}", "x·x'/D")


def _block_expressions(arch: Architecture, residual_scale, dual, dual_derivative):
    """Per layer l = 1..L+1, the SymPy (Σ^l, Θ^l, Σ̇^l) of the network's own kernel maps
    (`dmft.network`): the layers' equations, composed block by block, with the activation's
    closed-form dual substituted where it has one and β = α/L^e (`_branch_scale`). Layer 1 is in kx = x·x'/D."""
    from ..network import KernelMap, mlp

    network = mlp(dataclasses.replace(arch, residual_scale=residual_scale))
    mup = arch.parameterization == "mup"
    dual_fns = {}
    if dual is not None:
        dual_fns[sp.Function("K_phi")] = sp.Lambda((q1, q2, c), dual)
    if dual_derivative is not None:
        dual_fns[sp.Function("Kdot_phi")] = sp.Lambda((q1, q2, c), dual_derivative)
    scalars = {ir.branch_scale: _branch_scale(arch)}
    if mup:  # μP kernels are those of σ_w = 1, σ_b = 0 (docs/conventions.md §1b): no σ symbols to print
        scalars.update({ir.sigma_w: sp.Integer(1), ir.sigma_b: sp.Integer(0)})
    out = []
    for l, block in enumerate(network.blocks, start=1):
        km = network.kernel_map(block)
        if l == 1:
            km = KernelMap(*(e.xreplace({c: kx, theta_prev: 0, ir.sigmadot_prev: 0}) for e in km))
        exprs = []
        for e in (km.nngp, km.ntk, km.derivative):
            for fn, lam in dual_fns.items():
                e = e.replace(fn, lam)
            exprs.append(e.xreplace(scalars))
        out.append(tuple(exprs))
    return out


def _branch_scale(arch: Architecture) -> sp.Expr:
    """β = α/L^e of a residual block (docs/conventions.md §2c), e = ``residual_exponent`` exact
    (1/2 depth-μP: α/√L; 1 CompleteP: α/L)."""
    return ir.residual_alpha / ir.num_hidden ** _exact(arch.residual_exponent)


def _recursions(arch, ops, dual, dual_derivative, parameters, residual_scale):
    nngp, ntk, derivative = [], [], []
    mup = arch.parameterization == "mup"
    w2, b2 = (sp.Integer(1), sp.Integer(0)) if mup else (ir.sigma_w**2, ir.sigma_b**2)
    beta2 = _branch_scale(arch) ** 2
    expressions = _block_expressions(arch, residual_scale, dual, dual_derivative)
    for op in ops:
        l = op.layer
        s_expr, t_expr, sdot_expr = expressions[l - 1]
        if op.source == "input":
            s_rhs = add(mul(Scalar(w2), _kx()), Scalar(b2))
            nngp.append(LayerMap(f"nngp_L{l}", l, Equation(_sigma(l), s_rhs, f"nngp_L{l}"),
                                 s_expr, (kx,), parameters))
            ntk.append(LayerMap(f"ntk_L{l}", l, Equation(_theta(l), _sigma(l), f"ntk_L{l}"),
                                t_expr, (kx,), parameters))
            continue
        prev = l - 1
        cov = (_sigma(prev, "x", "x"), _sigma(prev, "x'", "x'"), _sigma(prev))
        branch_rhs = add(mul(Scalar(w2), DualKernel(0, cov, dual)), Scalar(b2))
        sdot_rhs = mul(Scalar(w2), DualKernel(1, cov, dual_derivative))
        inputs = (q1, q2, c)
        if op.residual:
            s_rhs = add(_sigma(prev), mul(Scalar(beta2), branch_rhs))
            t_rhs = add(_theta(prev), mul(Scalar(beta2), add(branch_rhs,
                                                             mul(_sigmadot(l), _theta(prev)))))
            note = (f"residual block, branch scale α/L^β = {residual_scale}/"
                    f"{arch.hidden_layers}^{_exact(arch.residual_exponent)}")
        else:
            s_rhs = branch_rhs
            t_rhs = add(_sigma(l), mul(_sigmadot(l), _theta(prev)))
            note = ""
        nngp.append(LayerMap(f"nngp_L{l}", l, Equation(_sigma(l), s_rhs, f"nngp_L{l}", note=note),
                             s_expr, inputs, parameters))
        derivative.append(LayerMap(f"nngp_derivative_L{l}", l,
                                   Equation(_sigmadot(l), sdot_rhs, f"nngp_derivative_L{l}"),
                                   sdot_expr, inputs, parameters))
        ntk.append(LayerMap(f"ntk_L{l}", l, Equation(_theta(l), t_rhs, f"ntk_L{l}", note=note),
                            t_expr, inputs + (theta_prev,), parameters))
    return tuple(nngp), tuple(ntk), tuple(derivative)


# ----------------------------------------------------------------------------------------------
# DMFT (μP) and lazy-limit equations.


@dataclasses.dataclass(frozen=True, eq=False)
class DMFTSystem:
    """The dynamics' equations, grouped in titled sections (in print order).

    ``fields[l]`` is the IR of the h^l field equation (μP; lowered by `lower_expression`).
    """

    sections: tuple[tuple[str, tuple[Equation, ...]], ...]
    fields: Mapping[int, Equation] = dataclasses.field(default_factory=dict)
    backward: Mapping[int, Equation] = dataclasses.field(default_factory=dict)

    def equations(self) -> tuple[Equation, ...]:
        return tuple(eq for _, eqs in self.sections for eq in eqs)


@dataclasses.dataclass(frozen=True)
class Outputs:
    """The loss and the number C of outputs the dynamics are printed for (docs/conventions.md
    §2b): Δ = −P ∂𝓛/∂f is y − f for "mse" and y − softmax(f) for "cross_entropy".

    ``count`` None means not known: one output for MSE, C ≥ 2 classes for cross-entropy. With
    several outputs (or cross-entropy) f and Δ carry the output index c (`index`).
    """

    loss: str = "mse"
    count: int | None = None

    @property
    def cross_entropy(self) -> bool:
        return self.loss == "cross_entropy"

    @property
    def index(self) -> str | None:
        """"c" when f and Δ carry an output index, None for one MSE output."""
        return "c" if self.cross_entropy or (self.count or 1) > 1 else None

    def size(self) -> str:
        """"C = 3" when the count is known, else "C"."""
        return "C" if self.count is None else f"C = {self.count}"


def _error_rhs(outputs: Outputs, time: str, point: str = "mu") -> Node:
    """y_μ − f_μ(k) (one MSE output), y_μc − f_μc(k), or y_μc − softmax(f_μ(k))_c."""
    p_tex, p_text = ir._index_latex(point), ir._index_text(point)
    if outputs.index is None:
        return Notation(rf"y_{p_tex} - f_{p_tex}({time})", f"y_{p_text} − f_{p_text}({time})")
    if not outputs.cross_entropy:
        return Notation(rf"y_{{{p_tex} c}} - f_{{{p_tex} c}}({time})",
                        f"y_{p_text}c − f_{p_text}c({time})")
    return Notation(rf"y_{{{p_tex} c}} - \operatorname{{softmax}}\!\left(f_{{{p_tex}}}({time})"
                    rf"\right)_c", f"y_{p_text}c − softmax(f_{p_text}({time}))_c")


def loss_text(outputs: Outputs, batch: bool = False) -> str:
    """The loss as printed: (1/2P) Σ_μ (f_μ − y_μ)² (Σ_c over several outputs), or
    (1/P) Σ_μ [logsumexp(f_μ) − y_μ · f_μ]; over batch k with 1/B for SGD (``batch``)."""
    over = "Σ_(μ ∈ batch k)" if batch else "Σ_μ"
    size = "B" if batch else "P"
    if outputs.cross_entropy:
        return f"(1/{size}) {over} [logsumexp(f_μ) − y_μ · f_μ]"
    if outputs.index is None:
        return f"(1/2{size}) {over} (f_μ − y_μ)²"
    return f"(1/2{size}) {over} Σ_c (f_μc − y_μc)²"


def _error_equation(outputs: Outputs, time: str, point: str = "mu") -> Equation:
    """Δ_μ(k) = y_μ − f_μ(k), or its output-indexed / cross-entropy form with the loss noted."""
    note = ""
    if outputs.index is not None:
        note = (f"Δ = −P ∂𝓛/∂f, 𝓛 = {loss_text(outputs)}, {outputs.size()} outputs"
                + (" (classes); softmax over c" if outputs.cross_entropy else ""))
    return Equation(ErrorSignal(point, time, outputs.index), _error_rhs(outputs, time, point),
                    "error_signal", note=note)


def _output_structure(outputs: Outputs, time: str) -> Equation:
    """The index structure of the μP process with C outputs (derivations/multi_output_dmft.md
    eq:mo_process, eq:mo_ntk): the forward drive Δ_α g^ℓ_α is Σ_c Δ_αc g^ℓ_αc."""
    lhs = Notation(rf"\Delta_{{\alpha}}({time})\,g^{{\ell}}_{{\alpha}}({time})",
                   f"Δ_α({time}) g^ℓ_α({time})")
    rhs = Notation(rf"\sum_{{c=1}}^{{C}} \Delta_{{\alpha c}}({time})\,g^{{\ell}}_{{\alpha c}}"
                   rf"({time})", f"Σ_c Δ_αc({time}) g^ℓ_αc({time})")
    note = (f"{outputs.size()} outputs (derivations/multi_output_dmft.md): the scalar equations "
            "above hold over (point, output) pairs. Every backward field carries the output "
            "index c: g^l_μc = φ'(h^l_μ) z^l_μc, z^l_μc, r^l_μc ~ GP(0, G^(l+1)) with "
            "G^l(μc, αd) = ⟨ g^l_μc g^l_αd ⟩ and G^(L+1)(c, d) = δ_cd (r^L: C static N(0, 1) "
            "per neuron, z^L_c = w^L_c), the responses A^l(μ, αd) and B^l(μc, α) and the memory "
            "terms likewise; h^l is driven by Σ_c Δ_αc g^l_αc, z^l_μc by Σ_(α,d) "
            "G^(l+1)(μc, αd) Δ_αd φ(h^l_α); K(μc, αd) = Σ_l G^(l+1)(μc, αd) Φ^l_μα, "
            "K(0) = K_0 ⊗ I_C; f_μc = γ0⁻¹ ⟨ z^L_c φ(h^L_μ) ⟩")
    return Equation(lhs, rhs, "outputs", note=note)


def _output_kernel_sum(point: str, time: str) -> Node:
    """Σ_d K_{μc,αd}(t) Δ_αd(t): the NTK over (point, output) pairs acting on Δ."""
    p_tex, p_text = ir._index_latex(point), ir._index_text(point)
    return Notation(rf"\sum_{{d=1}}^{{C}} K_{{{p_tex} c,\alpha d}}({time})\,\Delta_{{\alpha d}}"
                    rf"({time})", f"Σ_d K_{p_text}c,αd({time}) Δ_αd({time})")


def _phi_kernel(l: int, time=("t", "s")) -> Node:
    if l == 0:
        return Kernel("Kx", None, time=(None, None))
    return Kernel("Phi", l, time=time)


def _g_kernel(l: int, L: int, time=("t", "s")) -> Node:
    return Scalar(sp.Integer(1)) if l == L + 1 else Kernel("G", l, time=time)


def _dmft_mup(arch: Architecture, ops: tuple[Dense, ...],
              outputs: Outputs = Outputs()) -> DMFTSystem:
    """The μP single-site process, one Dense op at a time.

    With several outputs or cross-entropy (``outputs.index``) the output dynamics carry the
    output index c and one equation states the process's index structure (`_output_structure`).

    A residual block h^l = h^{l-1} + β W^{l-1} φ(h^{l-1})/√N (β = α/L^e) applies the same rules
    to its branch: the weight's update carries an extra β (∂f/∂W ∝ β), so the memory terms
    have strength γ0 β, and the skip adds g^l to g^{l-1} = g^l + β φ'(h^{l-1}) z^{l-1}.
    """
    L = arch.hidden_layers
    g0, P = ir.gamma0, ir.num_train
    beta = _branch_scale(arch)
    residual_ops = {op.layer for op in ops if op.residual}
    sources, fields_eqs, backward_eqs, closure, responses = [], [], [], [], []
    field_map, backward_map = {}, {}
    for op in ops:
        l = op.layer
        strength = g0 * beta if op.residual else g0
        # Forward rule: a MatMul into a hidden layer l <= L gives h^l and its source u^l.
        if not op.readout:
            static = l == 1
            u = Field("u", l, "mu", None if static else "t")
            sources.append(Equation(u, GaussianProcess(u, _phi_kernel(l - 1,
                                    (None, None) if static else ("t", "s"))),
                                    f"source_u{l}", relation="~",
                                    note="static (time independent)" if static else ""))
            memory = add(
                Scalar(sp.Integer(0)) if l == 1 else Response("A", l - 1),
                mul(Scalar(1 / P), _phi_kernel(l - 1, (None, None) if l == 1 else ("t", "s")),
                    ErrorSignal("alpha", "s")),
            )
            branch = add(u, mul(Scalar(strength), integral("s", "t", data_sum(
                "alpha", mul(memory, Field("g", l, "alpha", "s"))))))
            if op.residual:
                rhs = add(Field("h", l - 1), mul(Scalar(beta), branch))
                note = "residual: the same neuron's stream, branch scale β = α/L^e"
            else:
                rhs = branch
                note = "A^0 = 0: the input layer has no backward source" if l == 1 else ""
            eq = Equation(Field("h", l), rhs, f"h{l}", note=note)
            fields_eqs.append(eq)
            field_map[l] = eq
        # Backward rule: the transpose of the MatMul reading φ(h^{l-1}) gives z^{l-1}, r^{l-1}.
        k = l - 1
        if k >= 1:
            last = k == L
            r = Field("r", k, None if last else "mu", None if last else "t")
            sources.append(Equation(r, GaussianProcess(r, _g_kernel(k + 1, L)), f"source_r{k}",
                                    relation="~",
                                    note="G^{L+1} = 1: one static N(0,1) scalar per neuron"
                                    if last else ""))
            memory = add(
                Scalar(sp.Integer(0)) if last else Response("B", k),
                mul(Scalar(1 / P), _g_kernel(k + 1, L), ErrorSignal("alpha", "s")),
            )
            rhs = add(r, mul(Scalar(strength), integral("s", "t", data_sum(
                "alpha", mul(memory, Act(Field("h", k, "alpha", "s")))))))
            # z^L = w^L is one number per neuron: it carries no data index.
            z = Field("z", k, None if last else "mu")
            eq = Equation(z, rhs, f"z{k}",
                          note="B^L = 0; z^L = w^L carries no data index" if last else "")
            backward_eqs.append(eq)
            backward_map[k] = eq
            if op.residual:  # skip connection: ∂f/∂h^k = ∂f/∂h^{k+1} + β φ'(h^k) ⊙ (branch)
                g_rhs = add(Field("g", k + 1), mul(Scalar(beta), Act(Field("h", k), 1), z))
            else:
                g_rhs = mul(Act(Field("h", k), 1), z)
            backward_eqs.append(Equation(Field("g", k), g_rhs, f"g{k}"))
    for l in range(1, L + 1):
        closure.append(Equation(Kernel("Phi", l), Expect(mul(Act(Field("h", l, "mu", "t")),
                                                             Act(Field("h", l, "alpha", "s")))),
                                f"Phi{l}"))
        closure.append(Equation(Kernel("G", l), Expect(mul(Field("g", l, "mu", "t"),
                                                           Field("g", l, "alpha", "s"))),
                                f"G{l}"))
    for l in range(1, L):
        # with strength γ0 β in a residual block the responses are normalized by it
        norm = g0 * beta if (l + 1) in residual_ops else g0
        responses.append(Equation(Response("A", l), mul(Scalar(1 / norm), Expect(FuncDeriv(
            Act(Field("h", l, "mu", "t")), Field("r", l, "alpha", "s")))), f"A{l}",
            note="causal: 0 for s >= t"))
        responses.append(Equation(Response("B", l), mul(Scalar(1 / norm), Expect(FuncDeriv(
            Field("g", l + 1, "mu", "t"), Field("u", l + 1, "alpha", "s")))), f"B{l}",
            note=f"0 for s > t; at s = t the Onsager term ⟨φ''(h^{l + 1}) z^{l + 1}⟩, diagonal in μα"))
    # K = Σ over weight matrices W^l (l = 0..L) of G^{l+1}(t,t) Φ^l(t,t); a residual branch's
    # gradient carries β, so its term carries β².
    ntk_terms = [mul(Scalar(beta**2) if (l + 1) in residual_ops else Scalar(sp.Integer(1)),
                     _g_kernel(l + 1, L, ("t", "t")), _phi_kernel(l, ("t", "t")))
                 for l in range(0, L + 1)]
    ntk = Equation(Kernel("K", None, time=("t", None)), add(*ntk_terms), "ntk")
    output = [
        ntk,
        Equation(Field("f", None, "mu", "t"),
                 mul(Scalar(1 / g0), Expect(mul(Field("z", L, None), Act(Field("h", L, "mu", "t"))))),
                 "readout", note="the read-out, exact for every φ; the solvers take Δ from it"),
        Equation(TimeDerivative(Field("f", None, "mu", "t")),
                 mul(Scalar(1 / P), data_sum("alpha", mul(Kernel("K", None, time=("t", None)),
                                                          ErrorSignal("alpha", "t")))),
                 "output", note="Δ_α(t) = y_α − f_α(t), f_μ(0) = 0; for kinked φ it over-counts "
                                "the neurons that slide along a kink (derivations/dmft.md §2.1)"),
    ]
    test = [
        Equation(TimeDerivative(Field("f", None, "star", "t")),
                 mul(Scalar(1 / P), data_sum("alpha", mul(
                     Kernel("K", None, data=("star", "alpha"), time=("t", None)),
                     ErrorSignal("alpha", "t")))),
                 "test",
                 note="test points x_⋆ join the index set: u^1 ~ N(0, K^x) over train ∪ test; "
                      "every Σ_α runs over train only"),
    ]
    if outputs.index is not None:
        output, test = [ntk, *_flow_outputs(L, outputs)], [_flow_output_test(outputs)]
    if residual_ops:
        lazy = [
            Equation(Field("h", "l"), add(Field("h", "l-1"), mul(Scalar(beta), Field("u", "l"))),
                     "lazy_h", note="γ0 → 0, residual blocks; h^1 = u^1"),
            Equation(Field("z", "l"), Field("r", "l"), "lazy_z", note="γ0 → 0"),
        ]
    else:
        lazy = [
            Equation(Field("h", "l"), Field("u", "l"), "lazy_h", note="γ0 → 0"),
            Equation(Field("z", "l"), Field("r", "l"), "lazy_z", note="γ0 → 0"),
        ]
    lazy += [
        Equation(Kernel("K", None, time=("t", None)),
                 Notation(r"\Theta^{(L+1)}(x_\mu,x_\alpha)\big|_{\sigma_w=1,\sigma_b=0}",
                          "Θ^(L+1)(x_μ,x_α) at σ_w=1, σ_b=0"),
                 "lazy_ntk", note="static; corrections are O(γ0²): K(t) = K(0) + γ0² K₂(t) + …"),
    ]
    sections = (
        ("Gaussian sources (independent across layers)", tuple(sources)),
        ("Forward fields", tuple(fields_eqs)),
        ("Backward fields", tuple(backward_eqs)),
        ("Closure", tuple(closure)),
        ("Response functions", tuple(responses)),
        ("NTK and output dynamics", tuple(output)),
        ("Test points", tuple(test)),
        ("Lazy limit", tuple(lazy)),
    )
    return DMFTSystem(tuple((t, e) for t, e in sections if e), field_map, backward_map)


def _flow_outputs(L: int, outputs: Outputs) -> tuple[Equation, ...]:
    """f_μc(t) = γ0⁻¹⟨z^L_c(t) φ(h^L_μ(t))⟩, ∂_t f_μc = (1/P) Σ_α Σ_d K_{μc,αd} Δ_αd, the error
    signal and the index structure (derivations/multi_output_dmft.md eq:mo_ntk)."""
    readout = mul(Scalar(1 / ir.gamma0), Expect(mul(Field("z", L, None, output="c"),
                                                    Act(Field("h", L, "mu", "t")))))
    velocity = mul(Scalar(1 / ir.num_train), data_sum("alpha", _output_kernel_sum("mu", "t")))
    return (
        Equation(Field("f", None, "mu", "t", "c"), readout, "readout",
                 note="the read-out, exact for every φ; the solvers take Δ from it"),
        Equation(TimeDerivative(Field("f", None, "mu", "t", "c")), velocity, "output",
                 note="f_μ(0) = 0; for kinked φ it over-counts the neurons that slide along a "
                      "kink (derivations/dmft.md §2.1)"),
        _error_equation(outputs, "t"),
        _output_structure(outputs, "t"),
    )


def _flow_output_test(outputs: Outputs) -> Equation:
    """∂_t f_⋆c = (1/P) Σ_α Σ_d K_{⋆c,αd}(t) Δ_αd(t) at the test points."""
    velocity = mul(Scalar(1 / ir.num_train), data_sum("alpha", _output_kernel_sum("star", "t")))
    return Equation(TimeDerivative(Field("f", None, "star", "t", "c")), velocity, "test",
                    note="test points x_⋆ join the index set: u^1 ~ N(0, K^x) over train ∪ test; "
                         "every Σ_α runs over train only")


def _lazy_ntk_cross_entropy(arch: Architecture, outputs: Outputs) -> DMFTSystem:
    """Kernel gradient flow under cross-entropy: no closed form, the kernel ODE
    ∂_t f_μc = (1/P) Σ_α K_μα Δ_αc with Δ = y − softmax(f), test points through K_⋆X."""
    L = arch.hidden_layers
    theta = Notation(rf"\Theta^{{({L + 1})}}", f"Θ^({L + 1})")

    def velocity(point):
        kernel = Kernel("K", None, data=(point, "alpha"), time=(None, None))
        return mul(Scalar(1 / ir.num_train), data_sum("alpha", mul(kernel, ErrorSignal(
            "alpha", "t", "c"))))

    eqs = (
        Equation(Kernel("K", None, time=(None, None)), theta, "lazy_ntk",
                 note="static NTK of the output layer, the same for every output (K ⊗ I_C)"),
        _error_equation(outputs, "t"),
        Equation(TimeDerivative(Field("f", None, "mu", "t", "c")), velocity("mu"), "lazy_flow",
                 note="f(0) = 0; no closed form: softmax makes the kernel ODE nonlinear in f"),
        Equation(TimeDerivative(Field("f", None, "star", "t", "c")), velocity("star"),
                 "lazy_flow_test", note="test points through the same K_⋆X; every Σ_α runs "
                                        "over the training points"),
    )
    return DMFTSystem((("Lazy (kernel gradient flow) dynamics", eqs),))


def _lazy_ntk(arch: Architecture, outputs: Outputs = Outputs()) -> DMFTSystem:
    """Kernel gradient flow: f = (I − e^{−Kt/P}) y for MSE (each output column alike), the kernel
    ODE for cross-entropy (`_lazy_ntk_cross_entropy`)."""
    if outputs.cross_entropy:
        return _lazy_ntk_cross_entropy(arch, outputs)
    L = arch.hidden_layers
    theta = Notation(rf"\Theta^{{({L + 1})}}", f"Θ^({L + 1})")
    eqs = (
        Equation(Kernel("K", None, time=(None, None)), theta, "lazy_ntk",
                 note="static NTK of the output layer"),
        Equation(Field("f", None, "mu", "t"),
                 Notation(r"\left[\left(I - e^{-K t/P}\right) y\right]_\mu",
                          "[(I − exp(−K t/P)) y]_μ"),
                 "lazy_f", note="f(0) = 0; ∂_t f = (1/P) K Δ, Δ = y − f" + _columns(outputs)),
        Equation(Field("f", None, "star", "t"),
                 Notation(r"\left[K_{\star X} K^{-1}\left(I - e^{-K t/P}\right) y\right]_\star",
                          "[K_⋆X K⁻¹ (I − exp(−K t/P)) y]_⋆"),
                 "lazy_test"),
    )
    return DMFTSystem((("Lazy (kernel gradient flow) dynamics", eqs),))


# ----------------------------------------------------------------------------------------------
# Discrete training rules: gradient descent and SGD (docs/conventions.md §2a).
#
# Step k sits at t = k·η0. Every ∫_0^t ds of the flow becomes the left sum η0 Σ_{s<k} over the
# completed steps (derivations/finite_step_dmft.md eq:gd_weights, eq:gd_process), the error
# signal of step s is ω_s ⊙ Δ_s (ω = P/B on step s's batch, 0 elsewhere; 1 for GD), and the
# output is the read-out identity at every step (eq:gd_output), never an Euler step of f.

DISCRETE_RULES = ("gd", "sgd")


def _signal(sgd: bool, time: str = "s", data: str = "alpha", output: str | None = None) -> Node:
    """The step's error signal: ω_α(s) Δ_α(s) for SGD, Δ_α(s) for GD (ω ≡ 1); Δ_αc(s) with an
    output index (ω acts on the point index, the same for every output)."""
    delta = ErrorSignal(data, time, output)
    return mul(BatchWeight(data, time), delta) if sgd else delta


def _columns(outputs: Outputs) -> str:
    """The note of an MSE closed form with several outputs: y is (P, C), one column per output."""
    if outputs.index is None:
        return ""
    return f"; y is (P, C), {outputs.size()}: every output column follows the same K (K ⊗ I_C)"


def _lazy_gd_closed_form(test: bool = False) -> MatrixForm:
    """[(I − (I − η0K/P)^k) y]_μ, and [K_⋆X K⁻¹ (I − (I − η0K/P)^k) y]_⋆ with ``test``
    (derivations/finite_step_two_layer.md eq:lazy_gd)."""
    P, Q = ir.num_train, sp.Symbol("Q", positive=True, integer=True)
    kernel, y = sp.MatrixSymbol("K", P, P), sp.MatrixSymbol("y", P, 1)
    identity = sp.Identity(P)
    step = sp.MatAdd(identity, sp.MatMul(-ir.eta0 / P, kernel, evaluate=False), evaluate=False)
    train = sp.MatMul(sp.MatAdd(identity, -sp.MatPow(step, ir.step_k), evaluate=False), y,
                      evaluate=False)
    if not test:
        return MatrixForm(train, "mu")
    cross = sp.MatrixSymbol("K_starX", Q, P)
    return MatrixForm(sp.MatMul(cross, sp.Inverse(kernel), train, evaluate=False), "star")


def _lazy_step(sgd: bool, point: str = "mu", outputs: Outputs = Outputs()) -> Equation:
    """f_μ(k+1) = f_μ(k) + (η0/P) Σ_α K_μα [ω_α(k)] Δ_α(k): one step of the linearised model
    (f_μc, Δ_αc with an output index; K acts on the point index, the same for every output)."""
    kernel = Kernel("K", None, data=(point, "alpha"), time=(None, None))
    c = outputs.index
    rhs = add(Field("f", None, point, "k", c), mul(Scalar(ir.eta0 / ir.num_train), data_sum(
        "alpha", mul(kernel, _signal(sgd, "k", output=c)))))
    if point != "mu":
        note = "every Σ_α runs over the training points"
    elif outputs.cross_entropy:
        note = ("f(0) = 0; the step of the linearised model, exact in the lazy limit; no closed "
                "form: Δ(k) = y − softmax(f(k)) is nonlinear in f")
    else:
        note = "f(0) = 0; the step of the linearised model, exact in the lazy limit"
    return Equation(Field("f", None, point, "k+1", c), rhs, "lazy_step" if point == "mu"
                    else "lazy_step_test", note=note)


def _error_and_batches(sgd: bool, training, outputs: Outputs = Outputs()) -> tuple[Equation, ...]:
    """Δ_μ(k) = y_μ − f_μ(k) (y_μc − softmax(f_μ(k))_c for cross-entropy), and for SGD the batch
    weights ω_μ(k) and how batches are drawn."""
    eqs = [_error_equation(outputs, "k")]
    if sgd:
        eqs.append(Equation(
            BatchWeight("mu", "k"),
            Notation(r"\frac{P}{B}\,\mathbb{1}[\mu \in \mathcal{B}_k]", "(P/B) 1[μ ∈ batch k]"),
            "batch_weights",
            note=f"B = {training.batch_size}: every epoch a fresh permutation of the P points "
                 f"from numpy.random.default_rng(seed = {training.seed}), cut into ⌊P/B⌋ "
                 "consecutive batches of B points (a remainder sits out that epoch); the same "
                 "batches in the limit and at finite width"))
    return tuple(eqs)


def _lazy_steps(arch: Architecture, training, outputs: Outputs = Outputs()) -> DMFTSystem:
    """The NTK parameterization under "gd" / "sgd": the lazy step recursion, and for GD with MSE
    its closed form f_k = (I − (I − η0K/P)^k) y (test points through K_⋆X K⁻¹); cross-entropy
    has none, f(k+1) = f(k) + (η0/P) K (ω ⊙ Δ(k)) with Δ = y − softmax(f) is the dynamics."""
    L = arch.hidden_layers
    sgd = training.optimizer == "sgd"
    theta = Notation(rf"\Theta^{{({L + 1})}}", f"Θ^({L + 1})")
    eqs = [Equation(Kernel("K", None, time=(None, None)), theta, "lazy_ntk",
                    note="static NTK of the output layer"),
           *_error_and_batches(sgd, training, outputs), _lazy_step(sgd, outputs=outputs),
           _lazy_step(sgd, "star", outputs)]
    if not sgd and not outputs.cross_entropy:
        eqs += [
            Equation(Field("f", None, "mu", "k"), _lazy_gd_closed_form(), "lazy_f",
                     note="the step recursion summed: f(0) = 0, Δ(k) = (I − η0K/P)^k y; it "
                          "diverges once η0 λ_max(K)/P > 2" + _columns(outputs)),
            Equation(Field("f", None, "star", "k"), _lazy_gd_closed_form(test=True), "lazy_test",
                     note="K⁻¹(I − (I − η0K/P)^k) = (η0/P) Σ_{j<k} (I − η0K/P)^j, which also "
                          "holds for singular K"),
        ]
    title = "Lazy (kernel " + ("SGD" if sgd else "gradient descent") + ") dynamics, step k at t = kη0"
    return DMFTSystem(((title, tuple(eqs)),))


def _forward_steps(op: Dense, beta, sgd: bool) -> tuple[Equation, Equation]:
    """Source u^l and field h^l_μ(k) = u^l_μ(k) + γ0 η0 Σ_{s<k} Σ_α [A^{l-1}_μα(k,s)
    + (1/P) Φ^{l-1}_μα(k,s) ω_α(s) Δ_α(s)] g^l_α(s) (eq:gd_process; residual: eq:res_process)."""
    l = op.layer
    strength = ir.gamma0 * beta if op.residual else ir.gamma0
    static = l == 1
    u = Field("u", l, "mu", None if static else "k")
    source = Equation(u, GaussianProcess(u, _phi_kernel(l - 1, (None, None) if static
                                                        else ("k", "s"))),
                      f"source_u{l}", relation="~",
                      note="static (step independent)" if static else "on the step grid")
    memory = add(
        Scalar(sp.Integer(0)) if l == 1 else Response("A", l - 1, time=("k", "s")),
        mul(Scalar(1 / ir.num_train), _phi_kernel(l - 1, (None, None) if static else ("k", "s")),
            _signal(sgd)),
    )
    branch = add(u, mul(Scalar(strength), step_sum("s", "k", data_sum(
        "alpha", mul(memory, Field("g", l, "alpha", "s"))))))
    if op.residual:
        rhs = add(Field("h", l - 1, time="k"), mul(Scalar(beta), branch))
        note = "residual: the same neuron's stream, branch scale β = α/L^e"
    else:
        rhs = branch
        note = "A^0 = 0: the input layer has no backward source" if static else ""
    return source, Equation(Field("h", l, time="k"), rhs, f"h{l}", note=note)


def _backward_steps(op: Dense, L: int, beta, sgd: bool) -> tuple[Equation, Equation, Equation]:
    """Source r^l, z^l_μ(k) = r^l_μ(k) + γ0 η0 Σ_{s≤k} Σ_α B^l_μα(k,s) φ(h^l_α(s)) + γ0 η0
    Σ_{s<k} Σ_α (1/P) G^{l+1}_μα(k,s) ω_α(s) Δ_α(s) φ(h^l_α(s)), and g^l, for l = op.layer − 1."""
    k = op.layer - 1
    strength = ir.gamma0 * beta if op.residual else ir.gamma0
    last = k == L
    r = Field("r", k, None if last else "mu", None if last else "k")
    source = Equation(r, GaussianProcess(r, _g_kernel(k + 1, L, ("k", "s"))), f"source_r{k}",
                      relation="~", note="G^{L+1} = 1: one static N(0,1) scalar per neuron"
                      if last else "on the step grid")
    h = Act(Field("h", k, "alpha", "s"))
    terms = [r]
    if not last:  # ℬ reaches the current step: g^{l+1}(k) depends on u^{l+1}(k) through h^{l+1}(k)
        terms.append(mul(Scalar(strength), step_sum("s", "k", data_sum(
            "alpha", mul(Response("B", k, time=("k", "s")), h)), inclusive=True)))
    terms.append(mul(Scalar(strength), step_sum("s", "k", data_sum("alpha", mul(
        Scalar(1 / ir.num_train), _g_kernel(k + 1, L, ("k", "s")), _signal(sgd), h)))))
    z = Field("z", k, None if last else "mu", "k")
    z_eq = Equation(z, add(*terms), f"z{k}",
                    note="B^L = 0; z^L = w^L carries no data index" if last else "")
    if op.residual:  # skip connection: ∂f/∂h^k = ∂f/∂h^{k+1} + β φ'(h^k) ⊙ (branch)
        g_rhs = add(Field("g", k + 1, time="k"), mul(Scalar(beta), Act(Field("h", k, time="k"), 1),
                                                     z))
    else:
        g_rhs = mul(Act(Field("h", k, time="k"), 1), z)
    return source, z_eq, Equation(Field("g", k, time="k"), g_rhs, f"g{k}")


def _closure_and_responses(L: int, residual_ops, beta):
    """Φ^l, G^l at the steps (k, s), and the responses normalised by γ0η0 (γ0βη0 in a residual
    block), so that they enter the step sums like the flow's A, B enter its integrals."""
    closure, responses = [], []
    for l in range(1, L + 1):
        closure.append(Equation(Kernel("Phi", l, time=("k", "s")), Expect(mul(
            Act(Field("h", l, "mu", "k")), Act(Field("h", l, "alpha", "s")))), f"Phi{l}"))
        closure.append(Equation(Kernel("G", l, time=("k", "s")), Expect(mul(
            Field("g", l, "mu", "k"), Field("g", l, "alpha", "s"))), f"G{l}"))
    for l in range(1, L):
        norm = ir.gamma0 * ir.eta0 * (beta if (l + 1) in residual_ops else 1)
        responses.append(Equation(Response("A", l, time=("k", "s")), mul(Scalar(1 / norm), Expect(
            FuncDeriv(Act(Field("h", l, "mu", "k")), Field("r", l, "alpha", "s")))), f"A{l}",
            note="strictly causal: 0 for s >= k; a derivative of the discrete process itself"))
        responses.append(Equation(Response("B", l, time=("k", "s")), mul(Scalar(1 / norm), Expect(
            FuncDeriv(Field("g", l + 1, "mu", "k"), Field("u", l + 1, "alpha", "s")))), f"B{l}",
            note=f"0 for s > k; s = k included: g^{l + 1}(k) depends on u^{l + 1}(k) through "
                 f"h^{l + 1}(k)"))
    return closure, responses


def _dmft_mup_steps(arch: Architecture, ops: tuple[Dense, ...], training,
                    outputs: Outputs = Outputs()) -> DMFTSystem:
    """The μP single-site process of "gd" / "sgd" (derivations/finite_step_dmft.md §2, §5):
    the flow's process of `_dmft_mup` with η0 Σ_{s<k} for ∫_0^t ds, ω ⊙ Δ for Δ, and the
    read-out f_μ(k) = γ0⁻¹⟨z^L(k) φ(h^L_μ(k))⟩ at every step in place of ∂_t f = KΔ/P."""
    L = arch.hidden_layers
    sgd = training.optimizer == "sgd"
    beta = _branch_scale(arch)
    residual_ops = {op.layer for op in ops if op.residual}
    sources, fields_eqs, backward_eqs = [], [], []
    field_map, backward_map = {}, {}
    for op in ops:
        if not op.readout:
            source, eq = _forward_steps(op, beta, sgd)
            sources.append(source)
            fields_eqs.append(eq)
            field_map[op.layer] = eq
        if op.layer >= 2:
            source, z_eq, g_eq = _backward_steps(op, L, beta, sgd)
            sources.append(source)
            backward_eqs += [z_eq, g_eq]
            backward_map[op.layer - 1] = z_eq
    closure, responses = _closure_and_responses(L, residual_ops, beta)
    ntk_terms = [mul(Scalar(beta**2) if (l + 1) in residual_ops else Scalar(sp.Integer(1)),
                     _g_kernel(l + 1, L, ("k", "k")), _phi_kernel(l, ("k", "k")))
                 for l in range(0, L + 1)]
    c = outputs.index
    readout = mul(Scalar(1 / ir.gamma0), Expect(mul(Field("z", L, None, "k", c),
                                                    Act(Field("h", L, "mu", "k")))))
    output = [
        Equation(Kernel("K", None, time=("k", None)), add(*ntk_terms), "ntk"),
        Equation(Field("f", None, "mu", "k", c), readout, "readout",
                 note="the read-out identity at every step, f_μ(0) = 0; not an Euler step "
                      "f(k+1) = f(k) + (η0/P) K ω⊙Δ, which misses the O(η0²γ0²) curvature of "
                      "the step (derivations/finite_step_dmft.md §1)"),
        *_error_and_batches(sgd, training, outputs),
        *([] if c is None else [_output_structure(outputs, "s")]),
    ]
    test = [Equation(Field("f", None, "star", "k", c), ir.substitute(readout, {
        Field("h", L, "mu", "k"): Field("h", L, "star", "k")}), "test",
        note="test points x_⋆ join the index set: u^1 ~ N(0, K^x) over train ∪ test; every Σ_α "
             "runs over train only")]
    lazy = [
        Equation(Field("h", "l", time="k"), add(Field("h", "l-1", time="k"),
                                                mul(Scalar(beta), Field("u", "l", time="k")))
                 if residual_ops else Field("u", "l", time="k"), "lazy_h",
                 note="γ0 → 0" + (", residual blocks; h^1 = u^1" if residual_ops else "")),
        Equation(Field("z", "l", time="k"), Field("r", "l", time="k"), "lazy_z", note="γ0 → 0"),
        Equation(Kernel("K", None, time=("k", None)),
                 Notation(r"\Theta^{(L+1)}(x_\mu,x_\alpha)\big|_{\sigma_w=1,\sigma_b=0}",
                          "Θ^(L+1)(x_μ,x_α) at σ_w=1, σ_b=0"), "lazy_ntk", note="static"),
        _lazy_step(sgd, outputs=outputs),
    ]
    if not sgd and not outputs.cross_entropy:
        lazy.append(Equation(Field("f", None, "mu", "k"), _lazy_gd_closed_form(), "lazy_f",
                             note="γ0 → 0: the lazy step recursion summed, f(0) = 0"
                                  + _columns(outputs)))
    sections = (
        ("Gaussian sources (independent across layers), on the step grid k = 0, 1, …",
         tuple(sources)),
        ("Forward fields", tuple(fields_eqs)),
        ("Backward fields", tuple(backward_eqs)),
        ("Closure", tuple(closure)),
        ("Response functions", tuple(responses)),
        ("NTK and output at step k (t = kη0)", tuple(output)),
        ("Test points", tuple(test)),
        ("Lazy limit", tuple(lazy)),
    )
    return DMFTSystem(tuple((t, e) for t, e in sections if e), field_map, backward_map)


# ----------------------------------------------------------------------------------------------
# The Derivation object.


@dataclasses.dataclass(frozen=True, eq=False)
class Derivation:
    """Everything derived from one architecture.

    Attributes:
        architecture: the input.
        activation: the activation's name; ``dual`` / ``dual_derivative`` its K and K̇ (SymPy in
            q1, q2, c) or None (numeric tier).
        nngp_recursion, ntk_recursion: one `LayerMap` per layer l = 1..L+1;
        nngp_derivative: Σ̇^l for l = 2..L+1.
        dmft: the μP single-site process, closure, responses, NTK, output dynamics and test
            points; for "ntk" the lazy (kernel gradient flow) dynamics.
        residual_scale: α of residual blocks h^{l+1} = h^l + (α/L^e)·branch, or None
            (e = ``architecture.residual_exponent``).
        training: the `dmft.spec.Training` of a discrete rule ("gd" / "sgd"), whose equations
            `dmft` holds; None for gradient flow.
        outputs: the loss ("mse" or "cross_entropy") and number of outputs the dynamics are
            printed for (`Outputs`).
    """

    architecture: Architecture
    activation: str
    activation_expr: sp.Expr
    dual: sp.Expr | None
    dual_derivative: sp.Expr | None
    nngp_recursion: tuple[LayerMap, ...]
    ntk_recursion: tuple[LayerMap, ...]
    nngp_derivative: tuple[LayerMap, ...]
    dmft: DMFTSystem
    parameters: Mapping[sp.Symbol, sp.Expr]
    residual_scale: float | None = None
    training: Training | None = None
    outputs: Outputs = Outputs()

    def quantities(self) -> tuple[str, ...]:
        maps = self.nngp_recursion + self.ntk_recursion + self.nngp_derivative
        return tuple(m.quantity for m in maps)

    def quantity(self, name: str) -> LayerMap:
        """The layer map called ``name`` (``nngp_L2``, ``ntk_L3``, ``nngp_derivative_L2``)."""
        for m in self.nngp_recursion + self.ntk_recursion + self.nngp_derivative:
            if m.quantity == name:
                return m
        raise InputError(
            f"unknown quantity {name!r} (known for this spec: {', '.join(self.quantities())})"
        )

    def latex(self) -> str:
        from ._printing import derivation_latex

        return derivation_latex(self)

    def __str__(self) -> str:
        from ._printing import derivation_text

        return derivation_text(self)


def _discrete_rule(training: Training | None) -> Training | None:
    """The `Training` of a "gd" / "sgd" rule, None for gradient flow (or no training given)."""
    if training is None:
        return None
    if not isinstance(training, Training):
        raise InputError(f"derive's training must be a dmft.spec.Training, got "
                         f"{type(training).__name__}")
    return training if training.optimizer in DISCRETE_RULES else None


def _outputs(training: Training | None, outputs: int | None) -> Outputs:
    """The loss of ``training`` ("mse" without one) and the number of outputs, checked."""
    loss = "mse" if training is None else training.loss
    if outputs is not None:
        if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
            raise InputError(f"derive's outputs must be an integer >= 1, got {outputs!r}")
        if loss == "cross_entropy" and outputs < 2:
            raise InputError(f'training.loss = "cross_entropy" needs at least 2 outputs '
                             f"(classes), got outputs = {outputs}")
    if loss == "cross_entropy" and training.num_classes is not None:
        if outputs is not None and outputs != training.num_classes:
            raise InputError(f"derive's outputs = {outputs} differs from training.num_classes "
                             f"= {training.num_classes}")
        outputs = training.num_classes
    return Outputs(loss, outputs)


def derive(arch: Architecture, *, residual_scale: float | None = None,
           training: Training | None = None, outputs: int | None = None) -> Derivation:
    """Derive the kernel recursions and the training dynamics of ``arch``.

    Args:
        arch: the architecture (`dmft.spec.Architecture`).
        residual_scale: α for a residual MLP, h^{l+1} = h^l + (α/√L)·(σ_w W^l φ(h^l)/√N
            + σ_b b^l) for the hidden-to-hidden layers (depth-μP branch scaling); None for a
            plain MLP.
        training: the training rule (`dmft.spec.Training`). Gradient flow (None, the default)
            gives the time integrals ∫_0^t ds and ∂_t f = KΔ/P; "gd" and "sgd" give the
            discrete process the solvers march: step sums η0 Σ_{s<k}, the error signal
            ω_k ⊙ Δ_k and the read-out f_k = γ0⁻¹⟨z^L_k φ(h^L_k)⟩ (μP), or the lazy step
            recursion and, for GD, f_k = (I − (I − η0K/P)^k) y (NTK parameterization).
            Its ``loss`` sets the error signal Δ = −P ∂𝓛/∂f: y − f ("mse") or
            y − softmax(f) ("cross_entropy", whose lazy limit has no closed form: the kernel ODE
            or step recursion is printed).
        outputs: the number C of outputs (columns of y, or classes); None: not known (one for
            MSE, C ≥ 2 for cross-entropy, ``training.num_classes`` where given). With C > 1 or
            cross-entropy f and Δ carry an output index c and the μP process states its index
            structure (derivations/multi_output_dmft.md).
    """
    if not isinstance(arch, Architecture):
        raise InputError(f"derive needs a dmft.spec.Architecture, got {type(arch).__name__}")
    discrete = _discrete_rule(training)
    out = _outputs(training, outputs)
    if residual_scale is None:  # forward compatible with an `Architecture.residual_scale` field
        residual_scale = getattr(arch, "residual_scale", None)
    if residual_scale is not None:
        if not (isinstance(residual_scale, (int, float)) and residual_scale > 0):
            raise InputError(f"residual_scale must be a number > 0, got {residual_scale!r}")
    activation = _activation(arch.activation)
    dual = _rename_to_declared(activation.dual_expr)
    dual_derivative = _rename_to_declared(activation.dual_derivative_expr)
    residual = residual_scale is not None
    ops = program(arch, residual=residual)
    parameters = {
        ir.sigma_w: _exact(arch.sigma_w),
        ir.sigma_b: _exact(arch.sigma_b),
        ir.num_hidden: sp.Integer(arch.hidden_layers),
    }
    if residual:
        parameters[ir.residual_alpha] = _exact(residual_scale)
    nngp, ntk, derivative = _recursions(arch, ops, dual, dual_derivative, parameters,
                                        residual_scale)
    if discrete is not None:
        dmft = (_dmft_mup_steps(arch, ops, discrete, out) if arch.parameterization == "mup"
                else _lazy_steps(arch, discrete, out))
    elif arch.parameterization == "mup":
        dmft = _dmft_mup(arch, ops, out)
    else:
        dmft = _lazy_ntk(arch, out)
    return Derivation(
        architecture=arch,
        activation=activation.name,
        activation_expr=activation.expr,
        dual=dual,
        dual_derivative=dual_derivative,
        nngp_recursion=nngp,
        ntk_recursion=ntk,
        nngp_derivative=derivative,
        dmft=dmft,
        parameters=parameters,
        residual_scale=float(residual_scale) if residual else None,
        training=discrete,
        outputs=out,
    )
