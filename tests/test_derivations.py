"""Every derivation document's marked equations verify (derivations/README.md describes the marks).

Each ```verify block of each derivations/*.md is one test case, named by document and line; a
document without blocks is one skipped case. The self-tests at the bottom show the machinery can
fail: a wrong equation, a malformed block and an unexpected verdict are all caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dmft._errors import InputError
from dmft.symbolic import check_block, document_blocks, extract_blocks
from dmft.symbolic._documents import block_passes

DERIVATIONS = Path(__file__).resolve().parent.parent / "derivations"


def _cases():
    cases = []
    for path in sorted(DERIVATIONS.glob("*.md")):
        if path.name == "README.md":  # the format description: its examples are templates
            continue
        blocks = document_blocks(path)
        if not blocks:
            cases.append(pytest.param(None, id=f"{path.name}-no-verify-blocks",
                                      marks=pytest.mark.skip(reason=f"{path.name} has no "
                                                                    "```verify blocks yet")))
        for block in blocks:
            cases.append(pytest.param(block, id=f"{path.name}:{block.line}"))
    return cases


@pytest.mark.parametrize("block", _cases())
def test_marked_equation_verifies(block):
    verdict = check_block(block)
    assert block_passes(block, verdict), f"{block.where}: {verdict.message()}"


def test_kernels_document_is_checked():
    # the kernels derivation must keep its checks (a deleted block would silently weaken the suite)
    assert len(document_blocks(DERIVATIONS / "kernels.md")) >= 20


# ----------------------------------------------------------------------------------------------
# The machinery can fail.

WRONG_DOC = """
Some text.

```verify
activation: relu
kernel: ntk
expr: 1/2 + asin(c/sqrt(q1*q2))/(2*pi)   # wrong constant: should be 1/4
```

```verify
check: identity
variables: x > 0
lhs: sqrt(x**2)
rhs: x
```
"""


def test_a_wrong_equation_fails_and_a_right_one_passes():
    wrong, right = extract_blocks(WRONG_DOC, "wrong.md")
    assert wrong.line == 4 and wrong.get("kernel") == "ntk"
    assert not block_passes(wrong, check_block(wrong))
    assert block_passes(right, check_block(right))


def test_expect_counterexample_fails_when_the_equation_is_right():
    block, = extract_blocks("```verify\nactivation: linear\nexpr: c\nexpect: counterexample\n```\n",
                            "doc.md")
    assert not block_passes(block, check_block(block))


@pytest.mark.parametrize("body, message", [
    ("activation: relu\nkernel: nngp\n", "missing 'expr:'"),
    ("check: magic\nexpr: c\n", "unknown check 'magic'"),
    ("check: identity\nvariables: x > 0\nlhs: x\nrhs: y\n", r"undeclared symbol\(s\) y"),
    ("check: identity\nvariables: x maybe\nlhs: x\nrhs: x\n", "cannot read variable 'x maybe'"),
    ("activation: relu\nthis line has no colon\n", "not 'key: value'"),
])
def test_malformed_blocks_are_input_errors_naming_the_place(body, message):
    with pytest.raises(InputError, match=message) as info:
        for block in extract_blocks(f"text\n```verify\n{body}```\n", "doc.md"):
            check_block(block)
    assert "doc.md:2" in str(info.value)
