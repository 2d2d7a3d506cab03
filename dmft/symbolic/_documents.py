"""Machine-checked equations in Markdown derivations (``derivations/*.md``).

A key equation is marked by a fenced block with the info string ``verify``; each line is
``key: value``. Three kinds of check (``check:``, default ``dual``):

    ```verify
    check: dual                      # E[φ(u)φ(v)] (kernel: nngp) or E[φ'(u)φ'(v)] (kernel: ntk)
    activation: relu
    kernel: nngp
    expr: sqrt(q1*q2 - c**2)/(2*pi) + c*(pi - acos(c/sqrt(q1*q2)))/(2*pi)
    ```

    ```verify
    check: quantity                  # a layer map of an architecture (dmft verify --quantity)
    architecture: hidden_layers=2, activation=relu, sigma_w=1.5, sigma_b=0.1
    residual_scale: 1.0              # optional
    quantity: ntk_L2
    expr: ...                        # in kx / q1, q2, c, theta_prev, sigma_w, sigma_b
    ```

    ```verify
    check: identity                  # lhs = rhs for all values of the variables
    variables: gamma0 > 0, f real, y in (0.5, 2), q1 q2 c covariance
    define: a = sqrt(1 + gamma0**2*y**2)       # optional, repeatable, substituted in order
    lhs: ...
    rhs: ...
    ```

    ```verify
    check: series                    # the series of expr in var to order n equals rhs
    variables: gamma0 > 0, f real
    expr: 2*sqrt(1 + gamma0**2*f**2)
    var: gamma0
    order: 4                         # compares terms below gamma0**4
    rhs: 2 + gamma0**2*f**2
    ```

Any block may add ``expect: counterexample`` to document a known-wrong form (then the check
passes only if a counterexample is found). Expressions use `dmft verify` syntax, plus
``diff(expr, var)`` for derivatives.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import sympy as sp

from .._errors import InputError
from ..spec import Architecture
from ._derive import derive
from ._verify import (
    COVARIANCE_DOMAIN, Domain, Verdict, parse_expression, verify, verify_dual, verify_quantity,
)

_BLOCK = re.compile(r"^```verify[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclasses.dataclass(frozen=True)
class VerifyBlock:
    """One ```` ```verify ```` block: where it is and its ``key: value`` fields."""

    source: str
    line: int
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.fields if k == key]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None or not value.strip():
            raise InputError(f"{self.where}: verify block is missing '{key}:'")
        return value


def extract_blocks(text: str, source: str = "<text>") -> list[VerifyBlock]:
    """All verify blocks of a Markdown text, in order."""
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        fields = []
        for raw in match.group(1).splitlines():
            content = raw.split(" #", 1)[0].strip() if " #" in raw else raw.strip()
            if not content:
                continue
            if ":" not in content:
                raise InputError(f"{source}:{line}: verify block line {raw.strip()!r} is not "
                                 "'key: value'")
            key, value = content.split(":", 1)
            fields.append((key.strip().lower(), value.strip()))
        blocks.append(VerifyBlock(source, line, tuple(fields)))
    return blocks


def document_blocks(path: str | Path) -> list[VerifyBlock]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"derivation document not found: {path}")
    return extract_blocks(path.read_text(encoding="utf-8"), str(path))


def _parse_variables(spec: str, where: str) -> Domain:
    variables: list[tuple[str, object]] = []
    covariance = None
    for item in (part.strip() for part in re.split(r",(?![^()]*\))", spec)):
        if not item:
            continue
        if item.endswith("covariance"):
            names = item[: -len("covariance")].split()
            if len(names) != 3:
                raise InputError(f"{where}: 'covariance' needs three names (q1 q2 c), got {item!r}")
            covariance = tuple(names)
            variables += [(names[0], "positive"), (names[1], "positive"), (names[2], "real")]
            continue
        m = re.fullmatch(r"(\w+)\s*(?:>\s*0|positive)", item)
        if m:
            variables.append((m.group(1), "positive"))
            continue
        m = re.fullmatch(r"(\w+)\s+real", item)
        if m:
            variables.append((m.group(1), "real"))
            continue
        m = re.fullmatch(r"(\w+)\s+in\s+\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)", item)
        if m:
            lo, hi = float(m.group(2)), float(m.group(3))
            if not lo < hi:
                raise InputError(f"{where}: empty range in {item!r}")
            variables.append((m.group(1), (lo, hi)))
            continue
        raise InputError(f"{where}: cannot read variable {item!r} (use 'x > 0', 'x real', "
                         "'x in (a, b)' or 'q1 q2 c covariance')")
    if not variables:
        raise InputError(f"{where}: 'variables:' declares nothing")
    return Domain(tuple(variables), covariance=covariance)


def _architecture(text: str, where: str) -> Architecture:
    values: dict[str, object] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise InputError(f"{where}: architecture item {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        if key == "hidden_layers":
            values[key] = int(value)
        elif key in ("sigma_w", "sigma_b", "gamma0"):
            values[key] = float(value)
        else:
            values[key] = value.strip("\"'")
    try:
        return Architecture(**values)
    except TypeError as error:
        raise InputError(f"{where}: {error}") from None


def check_block(block: VerifyBlock, timeout: float = 20.0) -> Verdict:
    """Run one block's check; `InputError` (naming the block) for a malformed block."""
    kind = block.get("check", "dual")
    try:
        if kind == "dual":
            return verify_dual(block.require("activation"), block.get("kernel", "nngp"),
                               block.require("expr"), timeout=timeout)
        if kind == "quantity":
            arch = _architecture(block.require("architecture"), block.where)
            scale = block.get("residual_scale")
            d = derive(arch, residual_scale=float(scale) if scale else None)
            return verify_quantity(d, block.require("quantity"), block.require("expr"),
                                   timeout=timeout)
        if kind in ("identity", "series"):
            domain = (_parse_variables(block.get("variables"), block.where)
                      if block.get("variables") else COVARIANCE_DOMAIN)
            symbols = domain.symbols()
            names = dict(symbols)
            definitions = {}
            for definition in block.all("define"):
                if "=" not in definition:
                    raise InputError(f"{block.where}: define {definition!r} is not name = expr")
                name, body = (s.strip() for s in definition.split("=", 1))
                value = parse_expression(body, names, what=f"define {name}")
                definitions[name] = value.xreplace(
                    {sp.Symbol(k): v for k, v in definitions.items()})
                names[name] = sp.Symbol(name)

            def read(key: str) -> sp.Expr:
                e = parse_expression(block.require(key), names, what=key)
                for name in reversed(list(definitions)):
                    e = e.xreplace({names[name]: definitions[name]})
                return e

            rhs = read("rhs")
            if kind == "identity":
                lhs = read("lhs")
            else:
                var = symbols.get(block.require("var"))
                if var is None:
                    raise InputError(f"{block.where}: var {block.get('var')!r} is not a variable")
                order = int(block.require("order"))
                lhs = sp.series(read("expr"), var, 0, order).removeO()
            return verify(lhs, rhs, domain=domain, timeout=timeout)
    except InputError as error:
        if str(error).startswith(block.where):
            raise
        raise InputError(f"{block.where}: {error}") from None
    raise InputError(f"{block.where}: unknown check {kind!r} (dual, quantity, identity, series)")


def block_passes(block: VerifyBlock, verdict: Verdict) -> bool:
    """Whether the verdict is what the block expects (equal, unless ``expect: counterexample``)."""
    expect = block.get("expect", "equal")
    if expect not in ("equal", "counterexample"):
        raise InputError(f"{block.where}: expect must be 'equal' or 'counterexample'")
    return verdict.equal == (expect == "equal")


@dataclasses.dataclass(frozen=True)
class BlockResult:
    block: VerifyBlock
    verdict: Verdict
    passed: bool

    def line(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        return f"{mark} {self.block.where}: {self.verdict.message()}"


def check_document(path: str | Path, show: bool = False, timeout: float = 20.0) -> list[BlockResult]:
    """Check every verify block of a Markdown document (``show``: print one line per block)."""
    results = []
    for block in document_blocks(path):
        verdict = check_block(block, timeout=timeout)
        result = BlockResult(block, verdict, block_passes(block, verdict))
        if show:
            print(result.line())
        results.append(result)
    return results
