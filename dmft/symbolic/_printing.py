"""Printing a `Derivation`: terminal text and a standalone LaTeX document."""

from __future__ import annotations

import re

import sympy as sp

from ._derive import loss_text
from ._ir import sympy_latex, sympy_text


def _header_lines(d) -> list[str]:
    a = d.architecture
    lines = [
        f"architecture: MLP, L = {a.hidden_layers} hidden layers, activation φ = {d.activation} "
        f"(φ(x) = {sp.sstr(d.activation_expr)}), parameterization = {a.parameterization}",
    ]
    if a.parameterization == "ntk":
        lines.append(f"σ_w = {a.sigma_w:g}, σ_b = {a.sigma_b:g}"
                     + ("" if a.sigma_b else " (no bias)"))
    else:
        lines.append(f"γ0 = {a.gamma0:g} (richness); unit weights, no bias; "
                     "learning rate η = γ0² N")
    if d.residual_scale is not None:
        lines.append(f"residual blocks h^(l+1) = h^l + (α/L^e)·branch, α = {d.residual_scale:g}, "
                     f"e = {d.architecture.residual_exponent:g}")
    if d.training is None and d.outputs.index is None:
        lines.append("conventions: loss (1/2P) Σ_μ (f_μ − y_μ)², Δ = y − f, gradient-flow time t; "
                     "(u,v) ~ N(0, [[q1, c], [c, q2]])")
    elif d.training is None:
        lines.append(f"conventions: loss 𝓛 = {loss_text(d.outputs)}, Δ = −P ∂𝓛/∂f = "
                     f"{_delta_text(d.outputs)}, {_outputs_text(d.outputs)}, gradient-flow "
                     "time t; (u,v) ~ N(0, [[q1, c], [c, q2]])")
    else:
        lines += _rule_lines(d.training, d.outputs)
    return lines


def _delta_text(outputs) -> str:
    """Δ = y − f, or y − softmax(f) (row-wise) for cross-entropy."""
    return "y − softmax(f) (row-wise)" if outputs.cross_entropy else "y − f"


def _outputs_text(outputs) -> str:
    """"C = 3 outputs c = 1..C" (classes for cross-entropy)."""
    return f"{outputs.size()} {'classes' if outputs.cross_entropy else 'outputs'} c = 1..C"


def _rule_lines(training, outputs) -> list[str]:
    """The header of a discrete rule: θ_{k+1} = θ_k − η0 η ∇𝓛_k, step k at t = kη0, its loss
    (one MSE output, several outputs or cross-entropy) and the error signal."""
    rule = (f"training: {training.optimizer}, learning rate η0 = {training.learning_rate:g}: "
            "θ_(k+1) = θ_k − η0 η ∇_θ 𝓛_k(θ_k), step k at t = k·η0")
    if training.optimizer == "sgd":
        batch = (f"𝓛_k = {loss_text(outputs, batch=True)}, B = {training.batch_size}, "
                 f"batches from seed {training.seed}; error signal ω_k ⊙ Δ_k with "
                 "ω_kμ = P/B on the batch, 0 elsewhere")
    else:
        batch = f"𝓛_k = {loss_text(outputs)} (full batch, ω ≡ 1)"
    delta = ("Δ = y − f" if outputs.index is None else
             f"Δ = −P ∂𝓛/∂f = {_delta_text(outputs)}, {_outputs_text(outputs)}")
    return [rule, batch, f"conventions: {delta}; sums over past steps η0 Σ_(s<k) replace the "
                         "flow's ∫_0^t ds; (u,v) ~ N(0, [[q1, c], [c, q2]])"]


def _dual_lines(d) -> list[str]:
    if d.dual is None:
        return ["K_φ(q1,q2,c) = E[φ(u)φ(v)] and K̇_φ = E[φ'(u)φ'(v)] have no closed form "
                "for this activation (evaluated by quadrature)"]
    return [f"K_φ(q1,q2,c) = E[φ(u)φ(v)] = {sympy_text(d.dual)}",
            f"K̇_φ(q1,q2,c) = E[φ'(u)φ'(v)] = {sympy_text(d.dual_derivative)}"]


def derivation_text(d) -> str:
    """Terminal-readable: header, dual kernels, per-layer recursions, then the dynamics."""
    out = ["# dmft derivation", *_header_lines(d), "", "## Dual activation", *_dual_lines(d), "",
           "## NNGP recursion (Σ^(l), l = 1..L+1)"]
    out += [f"  {m.equation.text()}" for m in d.nngp_recursion]
    gain = "σ_w² K̇_φ" if d.architecture.parameterization == "ntk" else "K̇_φ (μP: unit weights, σ_w = 1)"
    out += ["", f"## NTK recursion (Θ^(l), with Σ̇^(l) = {gain})"]
    out += [f"  {m.equation.text()}" for m in d.nngp_derivative]
    out += [f"  {m.equation.text()}" for m in d.ntk_recursion]
    for title, equations in d.dmft.sections:
        out += ["", f"## {title}"]
        out += [f"  {eq.text()}" for eq in equations]
    return "\n".join(out) + "\n"


_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage{amsmath,amssymb}
\usepackage[margin=1.5cm]{geometry}
\allowdisplaybreaks
\begin{document}
"""


def _escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                    "^": r"\textasciicircum{}"}
    return "".join(replacements.get(ch, ch) for ch in text)


_NOTE_MATH = re.compile(
    r"γ0(?:²|\^2)?|σ_w(?:²|\^2)?|σ_b(?:²|\^2)?|[ΦΣΘΔ]_[A-Za-zμα]+|φ''|φ'"
    r"|[A-Za-zΦΣΘΔ]\^(?:\{[^}]*\}|\([A-Za-z0-9+-]+\)|[A-Za-z0-9+-]+)(?:_[A-Za-z0-9μα]+)?"
    # a one-letter symbol with a one-character subscript (f_μ, y_α, x_⋆, K_2), not identifiers
    # such as ntk_flow_gap
    r"|(?<![A-Za-z0-9_])[A-Za-z]_(?:[μαν⋆]|[A-Za-z0-9])(?![A-Za-z0-9_])"
)
_NOTE_MATH_SYMBOLS = {"γ0": r"\gamma_0", "σ_w": r"\sigma_w", "σ_b": r"\sigma_b", "Φ": r"\Phi",
                      "Σ": r"\Sigma", "Θ": r"\Theta", "Δ": r"\Delta", "μ": r"\mu", "α": r"\alpha",
                      "ν": r"\nu", "⋆": r"\star", "φ": r"\phi", "²": "^2"}


def _ascii_note(note: str) -> str:
    """Plain text for LaTeX: γ0, σ_w and X^{...} become inline math, other symbols are mapped."""
    note = note.replace(">=", "≥").replace("<=", "≤")
    parts, last = [], 0
    for m in _NOTE_MATH.finditer(note):
        parts.append(_ascii_chars(note[last:m.start()]))
        token = m.group(0)
        for plain, tex in _NOTE_MATH_SYMBOLS.items():
            token = token.replace(plain, tex + " " if tex[-1].isalpha() and plain != "γ0" else tex)
        token = re.sub(r"\^\(([^)]*)\)", r"^{(\1)}", token).replace(" _", "_")
        parts.append(f"${token}$")
        last = m.end()
    parts.append(_ascii_chars(note[last:]))
    # adjacent inline maths join into one: $\gamma_0$$^2$ -> $\gamma_0^2$ (notes hold no $$ display)
    return "".join(parts).replace("$$", "")


def _ascii_chars(note: str) -> str:
    table = {"γ": r"$\gamma$", "Δ": r"$\Delta$", "α": r"$\alpha$", "μ": r"$\mu$", "σ": r"$\sigma$",
             "⋆": r"$\star$", "∪": r"$\cup$", "Σ": r"$\Sigma$", "→": r"$\to$", "≥": r"$\geq$",
             "−": "-", "²": r"$^2$", "₂": r"$_2$", "…": r"\dots{}", "√": r"$\surd$",
             "Θ": r"$\Theta$", "φ": r"$\phi$", "ℓ": r"$\ell$", "⁻¹": r"$^{-1}$", "·": r"$\cdot$",
             "⟨": r"$\langle$", "⟩": r"$\rangle$", "∂": r"$\partial$", "η": r"$\eta$",
             "ν": r"$\nu$", "β": r"$\beta$", "δ": r"$\delta$", "≤": r"$\leq$",
             "×": r"$\times$", "₀": r"$_0$", "⁻": r"$^{-}$", "¹": r"$^{1}$", "̇": "",
             "K̇": r"$\dot K$", "§": r"\S{}", "'": "'",
             "θ": r"$\theta$", "ω": r"$\omega$", "𝓛": r"$\mathcal{L}$", "∇": r"$\nabla$",
             "∈": r"$\in$", "∫": r"$\int$", "⊙": r"$\odot$", "⌊": r"$\lfloor$",
             "⌋": r"$\rfloor$", "≡": r"$\equiv$", "λ": r"$\lambda$", "⊗": r"$\otimes$", "Φ": r"$\Phi$",
             # OT1 text fonts print < > | as ¡ ¿ —: set them as maths
             "<": "$<$", ">": "$>$", "|": "$|$"}
    out = []
    for ch in note.replace("⁻¹", "\x00"):  # one superscript −1, not two stacked ones
        if ch == "\x00":
            out.append(r"$^{-1}$")
        elif ch in table:
            out.append(table[ch])
        elif ord(ch) < 128:
            out.append(_escape(ch))
        else:  # never emit a character pdflatex cannot typeset
            out.append(f"[U+{ord(ch):04X}]")
    return "".join(out)


def _align(equations) -> list[str]:
    """An align* block; each note follows its equation as wrapping text (\\intertext), never as
    an unbreakable \\text{} column that runs off the page."""
    lines = [r"\begin{align*}"]
    equations = list(equations)
    trailing = None
    for index, eq in enumerate(equations):
        rel = r"\sim" if eq.relation == "~" else "="
        row = f"  {eq.lhs.latex()} &{rel} {eq.rhs.latex()}"
        last = index == len(equations) - 1
        if eq.note and not last:  # \\intertext comes right after the row's \\\\
            row += r" \\" + "\n" + rf"  \intertext{{\footnotesize {_ascii_note(eq.note)}}}"
        elif eq.note:
            trailing = _ascii_note(eq.note)
        lines.append(row + ("" if last or eq.note else r" \\"))
    lines.append(r"\end{align*}")
    if trailing:
        lines += [rf"{{\footnotesize {trailing}\par}}"]
    return lines


def derivation_latex(d) -> str:
    """A standalone LaTeX document (amsmath) with every derived equation."""
    a = d.architecture
    lines = [_PREAMBLE, r"\section*{Derived equations}", r"\begin{itemize}"]
    lines += [rf"\item {_ascii_note(line)}" for line in _header_lines(d)]
    lines += [r"\end{itemize}", r"\subsection*{Dual activation}"]
    lines.append(rf"$\phi(x) = {sympy_latex(d.activation_expr)}$, and for "
                 r"$(u,v)\sim\mathcal{N}\!\left(0,\begin{pmatrix}q_1 & c\\ c & q_2\end{pmatrix}"
                 r"\right)$:")
    if d.dual is not None:
        lines += [r"\begin{align*}",
                  r"  \mathcal{K}_\phi(q_1,q_2,c) &= \mathbb{E}[\phi(u)\phi(v)] = "
                  + sympy_latex(d.dual) + r" \\",
                  r"  \dot{\mathcal{K}}_\phi(q_1,q_2,c) &= \mathbb{E}[\phi'(u)\phi'(v)] = "
                  + sympy_latex(d.dual_derivative),
                  r"\end{align*}"]
    else:
        lines += [r"\[ \mathcal{K}_\phi = \mathbb{E}[\phi(u)\phi(v)],\quad "
                  r"\dot{\mathcal{K}}_\phi = \mathbb{E}[\phi'(u)\phi'(v)] \]",
                  "(no closed form: evaluated by quadrature)."]
    lines.append(rf"\subsection*{{NNGP recursion, $l = 1,\dots,{a.hidden_layers + 1}$}}")
    lines += _align([m.equation for m in d.nngp_recursion])
    lines.append(r"\subsection*{NTK recursion}")
    lines += _align([m.equation for m in d.nngp_derivative + d.ntk_recursion])
    for title, equations in d.dmft.sections:
        lines.append(rf"\subsection*{{{_ascii_note(title)}}}")
        lines += _align(equations)
    lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


def braces_balanced(text: str) -> bool:
    """Whether every unescaped ``{`` has its ``}`` (and ``\\left``/``\\right`` pair up)."""
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    if depth != 0:
        return False
    import re

    lefts = len(re.findall(r"\\left\b", text))
    rights = len(re.findall(r"\\right\b", text))
    begins = re.findall(r"\\begin\{(\w+\*?)\}", text)
    ends = re.findall(r"\\end\{(\w+\*?)\}", text)
    return lefts == rights and sorted(begins) == sorted(ends)
