"""The documentation cannot rot: every tutorial runs, the site builds strictly, the pages render.

- Each tutorial's code blocks run in order in one temporary folder, in a short form:
  blocks with ``title="NAME"`` (TOML, Markdown, ...) are written to NAME, ``python`` blocks run in one shared
  namespace, ``bash`` blocks line by line (``dmft ...`` in-process through `dmft.cli.main`, other
  lines with bash; a trailing ``# exit N`` states the expected exit code, default 0). The short
  form is a list of text replacements per tutorial (fewer times, particles, widths, seeds); each
  one must match, so a change to the tutorial cannot silently turn it off. A comment
  ``<!-- docs-test: requires MODULE -->`` before a block stops the run there with a skip naming
  the module when it is not importable (for features that have not landed yet).
- ``mkdocs build --strict`` passes (skipped when the ``docs`` extra is not installed).
- A real headless Chromium (through Playwright) opens every built page from a local server with
  all other network traffic refused, and checks: no console errors or failed requests, every
  formula typeset by MathJax without errors, code blocks where the page has code, API entries on
  the API pages. Skipped, saying why, when Playwright or a Chromium binary is missing.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"

# Short forms: (text in the tutorial, replacement). Every pair must match at least once.
LONG_TIMES = "times = [0.0, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0]"
SHORT_TIMES = "times = [0.0, 0.5, 1.0, 2.0]"
SHORT_FORMS: dict[str, list[tuple[str, str]]] = {
    "lazy_rich_finite.md": [
        (LONG_TIMES, SHORT_TIMES),
        ("particles = 4096", "particles = 512"),
        ("--widths 64,256 --seeds 4", "--widths 32,64 --seeds 2"),
    ],
    "verify.md": [],
    "sweep_figure.md": [
        (LONG_TIMES, SHORT_TIMES),
        ("particles = 4096", "particles = 512"),
        ("--widths 64,256 --seeds 4", "--widths 16,32 --seeds 2"),
    ],
    "edge_of_stability.md": [
        ("particles = 4096", "particles = 512"),
        ("training.learning_rate=0.25,0.5,1,2 --set training.steps=10", "training.learning_rate=0.5,1 --set training.steps=2"),
        ("--widths 64,256 --seeds 4", "--widths 16,32 --seeds 2"),
    ],
}

_FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ ]*$",
                    re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<what>[^>]*?)\s*-->\s*$")


def code_blocks(markdown: str) -> list[dict]:
    """The fenced blocks of a page: language, attributes (title=...), body, docs-test directive."""
    blocks = []
    for match in _FENCE.finditer(markdown):
        info = match.group("info").strip()
        language, _, attributes = info.partition(" ")
        title = re.search(r'title="([^"]+)"', attributes)
        before = markdown[: match.start()].rstrip().splitlines()
        directive = _DIRECTIVE.search(before[-1]) if before else None
        body = match.group("body")
        if match.group("indent"):
            body = "\n".join(line[len(match.group("indent")):] for line in body.splitlines())
        blocks.append({"language": language, "title": title.group(1) if title else None, "body": body,
                       "directive": directive.group("what") if directive else None})
    return blocks


def short_form(name: str, markdown: str) -> str:
    for old, new in SHORT_FORMS[name]:
        assert old in markdown, f"docs/tutorials/{name} no longer contains {old!r} (update SHORT_FORMS)"
        markdown = markdown.replace(old, new)
    return markdown


def shell_lines(body: str) -> list[tuple[str, int]]:
    """Logical lines of a bash block (continuations joined) with their expected exit codes."""
    lines, current = [], ""
    for raw in body.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        expected = re.search(r"#\s*exit\s+(\d+)\s*$", current)
        command = current.split(" #")[0].strip() if not current.lstrip().startswith("#") else ""
        if command:
            lines.append((command, int(expected.group(1)) if expected else 0))
        current = ""
    return lines


def run_shell(command: str, expected: int) -> None:
    words = shlex.split(command)
    if words[0] == "dmft":
        from dmft.cli import main

        code = main(words[1:])
    else:
        code = subprocess.run(["bash", "-c", command], check=False).returncode
    assert code == expected, f"`{command}` exited {code}, the tutorial says {expected}"


def run_tutorial(name: str) -> None:
    markdown = short_form(name, (TUTORIALS / name).read_text())
    namespace: dict = {"__name__": "__tutorial__"}
    for index, block in enumerate(code_blocks(markdown)):
        directive = block["directive"] or ""
        if directive == "skip":
            continue
        if directive.startswith("requires "):
            module = directive.split(None, 1)[1]
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"docs/tutorials/{name}: the rest needs {module}, which is not importable here")
        language = block["language"]
        if language == "python":
            exec(compile(block["body"], f"docs/tutorials/{name}[block {index}]", "exec"), namespace)
        elif language == "bash":
            for command, expected in shell_lines(block["body"]):
                run_shell(command, expected)
        elif block["title"]:                     # a file the tutorial asks you to create
            Path(block["title"]).write_text(block["body"])


# The tutorials that solve DMFTs and train ensembles take minutes each on a 2-core CI machine even
# in short form; they run with `pytest -m slow`, the others in every run.
_HEAVY_TUTORIALS = {"lazy_rich_finite.md", "sweep_figure.md", "edge_of_stability.md"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in _HEAVY_TUTORIALS else name
    for name in sorted(SHORT_FORMS)])
def test_tutorial_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run_tutorial(name)


def test_every_tutorial_is_tested_and_in_the_nav():
    on_disk = {p.name for p in TUTORIALS.glob("*.md")}
    assert on_disk == set(SHORT_FORMS), "each docs/tutorials/*.md needs an entry in SHORT_FORMS"
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in on_disk:
        assert f"tutorials/{name}" in nav, f"tutorials/{name} is not in the nav of mkdocs.yml"


def test_code_blocks_parser():
    page = ('text\n\n```toml title="a.toml"\nx = 1\n```\n\n<!-- docs-test: requires nowhere_xyz -->\n'
            '```bash\ndmft run a.toml \\\n  --out o   # exit 2\n# a comment\necho hi\n```\n')
    blocks = code_blocks(page)
    assert [b["language"] for b in blocks] == ["toml", "bash"]
    assert blocks[0]["title"] == "a.toml" and blocks[0]["body"] == "x = 1\n"
    assert blocks[1]["directive"] == "requires nowhere_xyz"
    assert shell_lines(blocks[1]["body"]) == [("dmft run a.toml    --out o", 2), ("echo hi", 0)]


# ---------------------------------------------------------------------------------------------
# The site


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed (pip install ".[docs]")')
    site = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DMFT_PROGRESS="0")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site


def test_site_builds_strict_with_every_page(built_site):
    pages = {p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html")}
    for derivation in (ROOT / "derivations").glob("*.md"):
        stem = "index" if derivation.stem == "README" else derivation.stem
        assert f"derivations/{stem}.html" in pages, f"derivations/{derivation.name} is not on the site"
    for page in ("index.html", "install.html", "conventions.html", "architecture.html", "api/dmft.html",
                 *(f"tutorials/{Path(n).stem}.html" for n in SHORT_FORMS)):
        assert page in pages
    assert (built_site / "assets" / "mathjax" / "tex-svg-full.js").is_file()
    assert "dmft.solvers.solve" in (built_site / "api" / "solvers.html").read_text()


def _chromium() -> str | None:
    """A Chromium binary: $DMFT_CHROMIUM, one on PATH, or None (then Playwright's own, if any)."""
    for candidate in (os.environ.get("DMFT_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@contextlib.contextmanager
def _serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_pages_render_in_a_headless_browser(built_site):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip('Playwright is not installed (pip install ".[docs]")')
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    pages = sorted(p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html")
                   if p.name != "404.html")
    with _serve(built_site) as base, sync_playwright() as playwright:
        executable = _chromium()
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=_CHROMIUM_ARGS)
        except PlaywrightError as error:
            pytest.skip("no Chromium for the browser test: none on PATH (e.g. Debian's chromium "
                        "package) nor one installed by `playwright install chromium`; "
                        f"set DMFT_CHROMIUM to a binary ({str(error).splitlines()[0]})")
        try:
            context = browser.new_context()
            problems: list[str] = []
            # Nothing but the local server: a page that needs the network fails here.
            context.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"),
                          lambda route: (problems.append(f"outside request {route.request.url}"), route.abort()))
            for path in pages:
                page = context.new_page()
                page.on("console", lambda m, path=path: m.type == "error" and problems.append(f"{path}: console: {m.text}"))
                page.on("pageerror", lambda e, path=path: problems.append(f"{path}: page error: {e}"))
                page.on("requestfailed", lambda r, path=path: problems.append(f"{path}: failed {r.url}"))
                page.goto(f"{base}/{path}", wait_until="load")
                formulas = page.locator(".arithmatex").count()
                if formulas:
                    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise",
                                           timeout=30_000)
                    page.evaluate("MathJax.startup.promise")
                    typeset = page.locator(".arithmatex mjx-container").count()
                    assert typeset == formulas, f"{path}: {typeset} of {formulas} formulas typeset"
                    assert page.locator("mjx-merror").count() == 0, f"{path}: a formula has a TeX error"
                source = (built_site / path).read_text()
                if "<pre" in source:
                    assert page.locator("pre code").count() > 0, f"{path}: code blocks not rendered"
                if path.startswith("tutorials/"):
                    assert page.locator("pre code").count() >= 2, f"{path}: a tutorial with no code"
                if path.startswith("api/"):
                    assert page.locator(".doc-object, .doc").count() > 0, f"{path}: no API entries"
                page.close()
            assert not problems, "\n".join(problems)
            math_pages = [p for p in pages if "arithmatex" in (built_site / p).read_text()]
            assert any(p.startswith("derivations/") for p in math_pages), "no typeset math on the site"
        finally:
            browser.close()
