"""A small typed intermediate representation (IR) of infinite-width equations.

SymPy is the engine for *scalar* algebra only (dual activations, coefficients). Everything that
carries a data index (μ, α), a time index (t, s), a layer, causality or an expectation over the
single-site process is an IR node: an immutable, hashable dataclass that prints itself as LaTeX
(`latex()`) and as terminal text (`text()`), and that `dmft.symbolic.lower_expression` turns into
JAX (einsum plus causal quadrature matrices).

Nodes never inline one layer's equation into another's: equations refer to the kernels of the
previous layer by name (static single assignment per layer), which keeps every expression small.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Union

import sympy as sp

Layer = Union[int, str]
"""A concrete layer (``2``) or a symbolic one (``"l"``, printed ℓ)."""

_GREEK_LATEX = {
    "mu": r"\mu", "alpha": r"\alpha", "nu": r"\nu", "beta": r"\beta",
    "l": r"\ell", "x": "x", "x'": "x'", "t": "t", "s": "s", "star": r"\star",
}
_GREEK_TEXT = {"mu": "μ", "alpha": "α", "nu": "ν", "beta": "β", "l": "ℓ", "star": "⋆"}

# Scalar SymPy leaves shared by every derivation.
gamma0 = sp.Symbol("gamma0", positive=True)
sigma_w = sp.Symbol("sigma_w", positive=True)
sigma_b = sp.Symbol("sigma_b", nonnegative=True)
num_train = sp.Symbol("P", positive=True, integer=True)
residual_alpha = sp.Symbol("alpha_res", positive=True)
num_hidden = sp.Symbol("L", positive=True, integer=True)
branch_scale = sp.Symbol("beta_res", positive=True)  # β of a residual block (dmft.network)
sigmadot_prev = sp.Symbol("sigmadot_prev", real=True)  # Σ̇ entering a layer (dmft.network)
eta0 = sp.Symbol("eta0", positive=True)  # the learning rate of "gd" / "sgd" in time units (§2a)
step_k = sp.Symbol("k", integer=True, nonnegative=True)  # the step index of "gd" / "sgd"
batch_size = sp.Symbol("B", positive=True, integer=True)

_SCALAR_LATEX = {
    "gamma0": r"\gamma_0", "sigma_w": r"\sigma_w", "sigma_b": r"\sigma_b",
    "alpha_res": r"\alpha", "theta_prev": r"\Theta_{\mathrm{prev}}", "kx": "k_x",
    "eta0": r"\eta_0", "K_starX": r"K_{\star X}",
}
_SCALAR_TEXT = {"gamma0": "γ0", "sigma_w": "σ_w", "sigma_b": "σ_b", "alpha_res": "α", "eta0": "η0",
                "K_starX": "K_⋆X"}


def sympy_latex(expr: sp.Basic) -> str:
    """SymPy LaTeX with the package's symbol names (γ0, σ_w, …) and ``\\operatorname`` functions."""
    names = {s: _SCALAR_LATEX[s.name] for s in expr.free_symbols if s.name in _SCALAR_LATEX}
    return sp.latex(expr, symbol_names=names, inv_trig_style="full")


def sympy_text(expr: sp.Basic) -> str:
    text = sp.sstr(expr).replace("sqrt(", "√(")
    for name, pretty in _SCALAR_TEXT.items():
        text = text.replace(name, pretty)
    return text.replace("**", "^")


def _index_latex(index: str) -> str:
    return _GREEK_LATEX.get(index, index)


def _index_text(index: str) -> str:
    return _GREEK_TEXT.get(index, index)


def _layer_latex(layer: Layer | None, shift: int = 0) -> str:
    if layer is None:
        return ""
    if isinstance(layer, int):
        return str(layer + shift)
    base = _index_latex(layer) if layer in _GREEK_LATEX else layer.replace("l", r"\ell ")
    return base if shift == 0 else f"{base}{'+' if shift > 0 else '-'}{abs(shift)}"


def _layer_text(layer: Layer | None) -> str:
    if layer is None:
        return ""
    if isinstance(layer, int):
        return str(layer)
    text = _index_text(layer) if layer in _GREEK_TEXT else layer.replace("l", "ℓ")
    return text if len(text) == 1 else f"({text})"


class Node:
    """Base class of IR expressions: printing plus ``+`` and ``*`` builders."""

    def latex(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def text(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        return ()

    def walk(self):
        """Pre-order iteration over this node and all its descendants."""
        yield self
        for child in self.children():
            yield from child.walk()

    def __add__(self, other: Node) -> Node:
        return add(self, other)

    def __mul__(self, other: Node) -> Node:
        return mul(self, other)

    def __str__(self) -> str:
        return self.text()


@dataclasses.dataclass(frozen=True)
class Scalar(Node):
    """A scalar leaf: a SymPy expression in γ0, σ_w, σ_b, P, … (no indices)."""

    value: sp.Expr

    def latex(self) -> str:
        return sympy_latex(self.value)

    def text(self) -> str:
        text = sympy_text(self.value)
        simple = self.value.is_Atom or (self.value.is_Pow and self.value.exp.is_positive)
        return text if simple else f"({text})"


FieldName = Literal["h", "z", "g", "u", "r", "f"]


@dataclasses.dataclass(frozen=True)
class Field(Node):
    """A single-site field h^ℓ_μ(t) (pre-activation), z (backward), g = φ'(h) z, sources u, r.

    ``data=None`` means the field carries no data index (r^L: one scalar per neuron);
    ``time=None`` means it is static (u^1, r^L).
    """

    name: FieldName
    layer: Layer | None
    data: str | None = "mu"
    time: str | None = "t"
    output: str | None = None

    def latex(self) -> str:
        sup = f"^{{{_layer_latex(self.layer)}}}" if self.layer is not None else ""
        sub = _subscript_latex(self.data, self.output)
        arg = f"({self.time})" if self.time else ""
        return f"{self.name}{sup}{sub}{arg}"

    def text(self) -> str:
        sup = f"^{_layer_text(self.layer)}" if self.layer is not None else ""
        sub = _subscript_text(self.data, self.output)
        arg = f"({self.time})" if self.time else ""
        return f"{self.name}{sup}{sub}{arg}"


def _subscript_latex(data: str | None, output: str | None) -> str:
    """``_{\\mu}``, or ``_{\\mu c}`` with an output index c (several outputs), or ``""``."""
    parts = [_index_latex(i) for i in (data, output) if i]
    return f"_{{{' '.join(parts)}}}" if parts else ""


def _subscript_text(data: str | None, output: str | None) -> str:
    """``_μ``, ``_μc`` with an output index c, or ``""``."""
    parts = "".join(_index_text(i) for i in (data, output) if i)
    return f"_{parts}" if parts else ""


KernelName = Literal["Phi", "G", "Kx", "K", "Sigma", "Theta", "Sigmadot"]
_KERNEL_LATEX = {
    "Phi": r"\Phi", "G": "G", "Kx": "K^x", "K": "K", "Sigma": r"\Sigma", "Theta": r"\Theta",
    "Sigmadot": r"\dot\Sigma",
}
_KERNEL_TEXT = {"Phi": "Φ", "G": "G", "Kx": "K^x", "K": "K", "Sigma": "Σ", "Theta": "Θ",
                "Sigmadot": "Σ̇"}


@dataclasses.dataclass(frozen=True)
class Kernel(Node):
    """A two-point kernel X^ℓ_{μα}(t,s): Φ, G (DMFT), K^x, the NTK K, or Σ/Θ/Σ̇ (recursions)."""

    name: KernelName
    layer: Layer | None
    data: tuple[str, str] = ("mu", "alpha")
    time: tuple[str | None, str | None] = ("t", "s")

    def _args(self) -> str:
        times = [t for t in self.time if t is not None]
        return f"({','.join(times)})" if times else ""

    def latex(self) -> str:
        base = _KERNEL_LATEX[self.name]
        if self.name in ("Sigma", "Theta", "Sigmadot"):
            sup = f"^{{({_layer_latex(self.layer)})}}" if self.layer is not None else ""
            return f"{base}{sup}({self.data[0]},{self.data[1]})"
        sup = f"^{{{_layer_latex(self.layer)}}}" if self.layer is not None else ""
        sub = "".join(_index_latex(d) for d in self.data)
        return f"{base}{sup}_{{{sub}}}{self._args()}"

    def text(self) -> str:
        base = _KERNEL_TEXT[self.name]
        if self.name in ("Sigma", "Theta", "Sigmadot"):
            sup = f"^({_layer_text(self.layer)})" if self.layer is not None else ""
            return f"{base}{sup}({self.data[0]},{self.data[1]})"
        sup = f"^{_layer_text(self.layer)}" if self.layer is not None else ""
        sub = "".join(_index_text(d) for d in self.data)
        return f"{base}{sup}_{sub}{self._args()}"


@dataclasses.dataclass(frozen=True)
class Response(Node):
    """A response function A^ℓ_{μα}(t,s) or B^ℓ_{μα}(t,s); causal: nonzero only for s < t."""

    name: Literal["A", "B"]
    layer: Layer
    data: tuple[str, str] = ("mu", "alpha")
    time: tuple[str, str] = ("t", "s")
    causal: bool = True

    def latex(self) -> str:
        sub = "".join(_index_latex(d) for d in self.data)
        return f"{self.name}^{{{_layer_latex(self.layer)}}}_{{{sub}}}({','.join(self.time)})"

    def text(self) -> str:
        sub = "".join(_index_text(d) for d in self.data)
        return f"{self.name}^{_layer_text(self.layer)}_{sub}({','.join(self.time)})"


@dataclasses.dataclass(frozen=True)
class ErrorSignal(Node):
    """The error signal Δ_α(s) = −P ∂𝓛/∂f_α(s) on a training point (y_α − f_α(s) for MSE);
    ``output`` is the output index c of Δ_αc with several outputs (docs/conventions.md §2b)."""

    data: str = "alpha"
    time: str | None = "s"
    output: str | None = None

    def latex(self) -> str:
        arg = f"({self.time})" if self.time else ""
        return rf"\Delta{_subscript_latex(self.data, self.output)}{arg}"

    def text(self) -> str:
        arg = f"({self.time})" if self.time else ""
        return f"Δ{_subscript_text(self.data, self.output)}{arg}"


@dataclasses.dataclass(frozen=True)
class Act(Node):
    """φ^{(order)}(arg): the activation (order 0) or its derivatives applied to a field."""

    arg: Node
    order: int = 0

    def children(self) -> tuple[Node, ...]:
        return (self.arg,)

    def latex(self) -> str:
        prime = "'" * self.order if self.order <= 2 else f"^{{({self.order})}}"
        return rf"\phi{prime}\!\left({self.arg.latex()}\right)"

    def text(self) -> str:
        prime = "'" * self.order
        return f"φ{prime}({self.arg.text()})"


@dataclasses.dataclass(frozen=True)
class Add(Node):
    terms: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.terms

    def latex(self) -> str:
        return " + ".join(t.latex() for t in self.terms)

    def text(self) -> str:
        return " + ".join(t.text() for t in self.terms)


def _needs_parens(node: Node) -> bool:
    if isinstance(node, Add):
        return True
    if isinstance(node, Scalar):
        return isinstance(node.value, sp.Add)
    return False


@dataclasses.dataclass(frozen=True)
class Mul(Node):
    factors: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.factors

    def latex(self) -> str:
        parts = []
        for f in self.factors:
            s = f.latex()
            parts.append(rf"\left[{s}\right]" if _needs_parens(f) else s)
        return r"\,".join(parts)

    def text(self) -> str:
        parts = []
        for f in self.factors:
            s = f.text()
            parts.append(f"[{s}]" if _needs_parens(f) else s)
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class DataSum(Node):
    """Σ_{index ∈ train} body: a sum over the P training points."""

    index: str
    body: Node

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def latex(self) -> str:
        return rf"\sum_{{{_index_latex(self.index)}=1}}^{{P}} {self.body.latex()}"

    def text(self) -> str:
        return f"Σ_{_index_text(self.index)} {self.body.text()}"


@dataclasses.dataclass(frozen=True)
class TimeIntegral(Node):
    """∫_0^upper d(var) body. ``causal`` marks a memory integral that sees only var < upper."""

    var: str
    upper: str
    body: Node
    causal: bool = True

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def latex(self) -> str:
        return rf"\int_0^{{{self.upper}}}\mathrm{{d}}{self.var}\, {self.body.latex()}"

    def text(self) -> str:
        return f"∫_0^{self.upper} d{self.var} {self.body.text()}"


@dataclasses.dataclass(frozen=True)
class StepSum(Node):
    """η0 Σ_{var<upper} body: the discrete rule's sum over the completed steps (GD, SGD).

    The analogue of `TimeIntegral` for ``training.optimizer = "gd"`` / ``"sgd"``: step k sits at
    t = k·η0, so ∫_0^t ds F(s) of the flow becomes the left sum η0 Σ_{s<k} F(s) with no endpoint
    term (derivations/finite_step_dmft.md, eq:gd_weights). ``inclusive`` adds the term s = upper
    (the equal-step block of a response); ``step`` is the learning rate η0.
    """

    var: str
    upper: str
    body: Node
    inclusive: bool = False
    step: sp.Expr = eta0

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def latex(self) -> str:
        rel = r"\le " if self.inclusive else "<"
        return (rf"{sympy_latex(self.step)}\sum_{{{self.var}{rel}{self.upper}}}"
                rf"\, {self.body.latex()}")

    def text(self) -> str:
        rel = "≤" if self.inclusive else "<"
        return f"{sympy_text(self.step)} Σ_{{{self.var}{rel}{self.upper}}} {self.body.text()}"


@dataclasses.dataclass(frozen=True)
class BatchWeight(Node):
    """The SGD batch weight ω_α(s): P/B when α is in the batch of step s, else 0 (1 for GD)."""

    data: str = "alpha"
    time: str = "s"

    def latex(self) -> str:
        return rf"\omega_{{{_index_latex(self.data)}}}({self.time})"

    def text(self) -> str:
        return f"ω_{_index_text(self.data)}({self.time})"


@dataclasses.dataclass(frozen=True)
class MatrixForm(Node):
    """Entry ``index`` of a SymPy matrix expression over the training points, e.g. the lazy GD
    closed form [(I − (I − η0K/P)^k) y]_μ; lowered by `dmft.symbolic.lower_matrix_form`.

    Its leaves are `MatrixSymbol`s K (P×P), y (P×1), K_starX (test × train), the identity
    and the scalars η0, P and the step k.
    """

    expr: sp.Basic
    index: str = "mu"

    def latex(self) -> str:
        body = sympy_latex(self.expr).replace(r"K_{starX}", r"K_{\star X}")
        return rf"\left[{body}\right]_{{{_index_latex(self.index)}}}"

    def text(self) -> str:
        body = sympy_text(self.expr)
        body = body.replace("*", " ").replace(" - ", " − ").replace("(-", "(−")
        return f"[{body}]_{_index_text(self.index)}"


@dataclasses.dataclass(frozen=True)
class TimeDerivative(Node):
    """∂_var body."""

    body: Node
    var: str = "t"

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def latex(self) -> str:
        return rf"\partial_{{{self.var}}} {self.body.latex()}"

    def text(self) -> str:
        return f"∂_{self.var} {self.body.text()}"


@dataclasses.dataclass(frozen=True)
class GaussianProcess(Node):
    """A centred Gaussian source: ``field ~ GP(0, cov)`` (independent across layers)."""

    field: Field
    cov: Node

    def children(self) -> tuple[Node, ...]:
        return (self.field, self.cov)

    def latex(self) -> str:
        return rf"\mathcal{{GP}}\!\left(0,\ {self.cov.latex()}\right)"

    def text(self) -> str:
        return f"GP(0, {self.cov.text()})"


@dataclasses.dataclass(frozen=True)
class Expect(Node):
    """⟨body⟩: the average over the single-site process of one layer (all neurons alike)."""

    body: Node

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def latex(self) -> str:
        return rf"\left\langle {self.body.latex()} \right\rangle"

    def text(self) -> str:
        return f"⟨{self.body.text()}⟩"


@dataclasses.dataclass(frozen=True)
class FuncDeriv(Node):
    """The functional derivative δ num / δ den (a response to a source)."""

    num: Node
    den: Node

    def children(self) -> tuple[Node, ...]:
        return (self.num, self.den)

    def latex(self) -> str:
        return rf"\frac{{\delta {self.num.latex()}}}{{\delta {self.den.latex()}}}"

    def text(self) -> str:
        return f"δ{self.num.text()}/δ{self.den.text()}"


@dataclasses.dataclass(frozen=True)
class DualKernel(Node):
    """E_{(u,v)~N(0,[[q1,c],[c,q2]])}[φ^{(order)}(u) φ^{(order)}(v)] at covariance entries ``args``.

    ``expr`` is the closed form (SymPy in q1, q2, c) when the activation has one, else None
    (then only the expectation is printed).
    """

    order: int
    args: tuple[Node, Node, Node]
    expr: sp.Expr | None = None

    def children(self) -> tuple[Node, ...]:
        return self.args

    def latex(self) -> str:
        name = r"\mathcal{K}_\phi" if self.order == 0 else r"\dot{\mathcal{K}}_\phi"
        return rf"{name}\!\left({', '.join(a.latex() for a in self.args)}\right)"

    def text(self) -> str:
        name = "K_φ" if self.order == 0 else "K̇_φ"
        return f"{name}({', '.join(a.text() for a in self.args)})"


@dataclasses.dataclass(frozen=True)
class Notation(Node):
    """A printing-only leaf for objects the IR does not model (matrix exponentials, limits)."""

    latex_form: str
    text_form: str

    def latex(self) -> str:
        return self.latex_form

    def text(self) -> str:
        return self.text_form


@dataclasses.dataclass(frozen=True)
class Equation:
    """``lhs relation rhs`` with a short label; ``note`` is printed beside it."""

    lhs: Node
    rhs: Node
    label: str = ""
    relation: Literal["=", "~"] = "="
    note: str = ""

    def latex(self) -> str:
        rel = r"\sim" if self.relation == "~" else "="
        return f"{self.lhs.latex()} {rel} {self.rhs.latex()}"

    def text(self) -> str:
        rel = "~" if self.relation == "~" else "="
        note = f"    [{self.note}]" if self.note else ""
        return f"{self.lhs.text()} {rel} {self.rhs.text()}{note}"

    def __str__(self) -> str:
        return self.text()


def _flatten(kind: type, nodes) -> tuple[Node, ...]:
    out: list[Node] = []
    for n in nodes:
        out.extend(n.children() if isinstance(n, kind) else (n,))
    return tuple(out)


def _is_zero(node: Node) -> bool:
    return isinstance(node, Scalar) and node.value == 0


def _is_one(node: Node) -> bool:
    return isinstance(node, Scalar) and node.value == 1


def add(*terms: Node) -> Node:
    """Sum of nodes; drops zero scalars (e.g. the boundary responses A^0 = B^L = 0)."""
    flat = tuple(t for t in _flatten(Add, terms) if not _is_zero(t))
    if not flat:
        return Scalar(sp.Integer(0))
    return flat[0] if len(flat) == 1 else Add(flat)


def mul(*factors: Node) -> Node:
    """Product of nodes; a zero factor kills it, unit scalars are dropped (G^{L+1} = 1)."""
    flat = _flatten(Mul, factors)
    if any(_is_zero(f) for f in flat):
        return Scalar(sp.Integer(0))
    scalars = [f.value for f in flat if isinstance(f, Scalar)]
    others = [f for f in flat if not isinstance(f, Scalar)]
    coefficient = sp.Mul(*scalars) if scalars else sp.Integer(1)
    parts = ([] if coefficient == 1 else [Scalar(coefficient)]) + others
    if not parts:
        return Scalar(sp.Integer(1))
    return parts[0] if len(parts) == 1 else Mul(tuple(parts))


def integral(var: str, upper: str, body: Node, causal: bool = True) -> Node:
    """∫_0^upper d var body, simplified to 0 when the body vanishes."""
    return body if _is_zero(body) else TimeIntegral(var, upper, body, causal)


def step_sum(var: str, upper: str, body: Node, inclusive: bool = False) -> Node:
    """η0 Σ_{var<upper} body (≤ with ``inclusive``), simplified to 0 when the body vanishes."""
    return body if _is_zero(body) else StepSum(var, upper, body, inclusive)


def data_sum(index: str, body: Node) -> Node:
    return body if _is_zero(body) else DataSum(index, body)


def substitute(node: Node, mapping: dict[Node, Node]) -> Node:
    """Replace sub-nodes (by equality) everywhere in ``node``; rebuilds with add/mul."""
    if node in mapping:
        return mapping[node]
    if isinstance(node, Add):
        return add(*(substitute(t, mapping) for t in node.terms))
    if isinstance(node, Mul):
        return mul(*(substitute(f, mapping) for f in node.factors))
    if not node.children():
        return node
    fields = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Node):
            fields[f.name] = substitute(value, mapping)
        elif isinstance(value, tuple) and value and all(isinstance(v, Node) for v in value):
            fields[f.name] = tuple(substitute(v, mapping) for v in value)
    return dataclasses.replace(node, **fields)


def rename_index(node: Node, old: str, new: str) -> Node:
    """Rename a data or time index (e.g. s -> t when evaluating an integrand at its endpoint)."""
    if isinstance(node, Add):
        return add(*(rename_index(t, old, new) for t in node.terms))
    if isinstance(node, Mul):
        return mul(*(rename_index(f, old, new) for f in node.factors))
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Node):
            changes[f.name] = rename_index(value, old, new)
        elif isinstance(value, tuple) and value and all(isinstance(v, Node) for v in value):
            changes[f.name] = tuple(rename_index(v, old, new) for v in value)
        elif f.name in ("data", "time", "var", "upper", "index"):
            if isinstance(value, tuple):
                changes[f.name] = tuple(new if v == old else v for v in value)
            elif value == old:
                changes[f.name] = new
    return dataclasses.replace(node, **changes) if changes else node


def depends_on(node: Node, index: str) -> bool:
    """Whether ``node`` carries the free index ``index`` (bound integration/sum indices excluded)."""
    if isinstance(node, (TimeIntegral, StepSum)):
        return (node.upper == index) or (node.var != index and depends_on(node.body, index))
    if isinstance(node, DataSum):
        return node.index != index and depends_on(node.body, index)
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Node) and depends_on(value, index):
            return True
        if isinstance(value, tuple):
            if any(isinstance(v, Node) and depends_on(v, index) for v in value):
                return True
            if f.name in ("data", "time") and index in value:
                return True
        elif f.name in ("data", "time") and value == index:
            return True
    return False


def time_derivative(node: Node, var: str = "t") -> Node:
    """∂_var of an expression, by the rules the DMFT field equations need.

    d/dt ∫_0^t ds F(s) = F(t) when F does not depend on t (Leibniz; true once the responses
    vanish, e.g. two-layer networks); sums and products distribute; static nodes give 0.
    Anything else is left as an unevaluated `TimeDerivative`.
    """
    if not depends_on(node, var):
        return Scalar(sp.Integer(0))
    if isinstance(node, Add):
        return add(*(time_derivative(t, var) for t in node.terms))
    if isinstance(node, Mul):
        terms = []
        for i, f in enumerate(node.factors):
            if depends_on(f, var):
                terms.append(mul(*node.factors[:i], time_derivative(f, var), *node.factors[i + 1:]))
        return add(*terms)
    if isinstance(node, TimeIntegral) and node.upper == var and not depends_on(node.body, var):
        return rename_index(node.body, node.var, var)
    return TimeDerivative(node, var)
