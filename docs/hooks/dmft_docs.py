"""MkDocs hook of the dmft site (named in mkdocs.yml).

- Every ``derivations/*.md`` of the repository becomes a page under ``derivations/``, and the
  "Derivations" section of the nav lists them all (README first), so a new derivation appears on
  the site without touching mkdocs.yml or the file itself.
- MathJax is served by the site: its single-file SVG build is taken from the installed
  ``django-static-mathjax`` package (a PyPI wheel with no dependencies, part of the ``docs``
  extra) and copied to ``assets/mathjax/``. The pages load nothing from outside.
- The API pages say only ``<!-- dmft-api: MODULE -->``: the hook writes the mkdocstrings
  directive with the module's public names (its ``__all__``, or else its public re-exports), and
  on the ``dmft`` page a table that links each top-level name to the subpackage page documenting
  it, so no name is documented twice and a new export appears without editing the page.
- Links in the derivations that point at other files of the repository are mapped to their pages
  (``docs/X.md`` → the site's ``X.md``); links to files the site does not hold (source files)
  become plain code text, so ``mkdocs build --strict`` stays meaningful for real broken links.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
DERIVATIONS = ROOT / "derivations"
MATHJAX_FILE = "tex-svg-full.js"
MATHJAX_URI = f"assets/mathjax/{MATHJAX_FILE}"
NAV_SECTION = "Derivations"


def derivation_files() -> list[Path]:
    """The derivation documents, README first, then by name."""
    files = sorted(DERIVATIONS.glob("*.md"))
    return sorted(files, key=lambda p: (p.name != "README.md", p.name))


def mathjax_source() -> Path:
    """The installed MathJax single-file build, or a PluginError saying how to get it."""
    try:
        import mathjax  # the django-static-mathjax wheel; no Django needed to read its files
    except ImportError as exc:
        raise PluginError(
            "the docs need MathJax from the django-static-mathjax package: "
            'pip install ".[docs]"') from exc
    path = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / MATHJAX_FILE
    if not path.is_file():
        raise PluginError(f"django-static-mathjax is installed but has no {path}")
    return path


def on_config(config):
    nav = config.get("nav") or []
    pages = [{"Overview": f"derivations/{p.name}"} if p.name == "README.md" else f"derivations/{p.name}"
             for p in derivation_files()]
    for entry in nav:
        if isinstance(entry, dict) and NAV_SECTION in entry:
            entry[NAV_SECTION] = pages
    return config


def on_files(files: Files, config) -> Files:
    for path in derivation_files():
        files.append(File.generated(config, f"derivations/{path.name}", abs_src_path=str(path)))
    files.append(File.generated(config, MATHJAX_URI, abs_src_path=str(mathjax_source())))
    return files


_PATHLIKE = re.compile(r"/|\.[A-Za-z0-9]+(#.*)?$")
_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s]+)\)")


def _map_link(page_uri: str, target: str, files: Files) -> str | None:
    """The site-relative target for a repository-relative link, or None to drop the link."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return target
    path, _, anchor = target.partition("#")
    if files.get_file_from_path(posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), path))):
        return target
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), path))
    if repo_path.startswith("docs/"):
        site_path = repo_path[len("docs/"):]
        if files.get_file_from_path(site_path):
            rel = posixpath.relpath(site_path, posixpath.dirname(page_uri))
            return rel + ("#" + anchor if anchor else "")
    return None


API_MODULES = ["dmft.spec", "dmft.network", "dmft.kernels", "dmft.solvers", "dmft.sampler",
               "dmft.symbolic", "dmft.figures", "dmft.io", "dmft.sweep"]
_API_MARKER = re.compile(r"^<!-- dmft-api: ([\w.]+) -->$", re.M)


def public_names(module_name: str) -> list[str]:
    """A module's public names: its ``__all__``, or else its public non-module attributes."""
    import importlib
    import types

    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and not isinstance(v, types.ModuleType)
                 and getattr(v, "__module__", module_name).startswith("dmft")]
    return list(names)


def _home(name: str) -> str | None:
    """The API subpackage whose page documents the top-level name `name`, if any."""
    import importlib

    obj = getattr(importlib.import_module("dmft"), name)
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        if name in public_names(module_name) and getattr(module, name, None) is obj:
            return module_name
    return None


def _summary(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0].replace("|", "\\|") if doc else ""


def api_markdown(module_name: str) -> str:
    import importlib

    names = public_names(module_name)
    lines = []
    if module_name == "dmft":
        dmft = importlib.import_module("dmft")
        homes = {name: _home(name) for name in names}
        lines += ["| name | documented in | what it is |", "|---|---|---|"]
        for name in names:
            home = homes[name]
            target = f"{home}.{name}" if home else f"dmft.{name}"
            where = f"[`{home}`]({home.split('.')[-1]}.md)" if home else "below"
            lines.append(f"| [`{name}`][{target}] | {where} | {_summary(getattr(dmft, name))} |")
        lines.append("")
        names = [name for name in names if homes[name] is None]
    lines += [f"::: {module_name}", "    options:", f"      members: {names!r}", ""]
    return "\n".join(lines)


def _inside_math(text: str, pos: int) -> bool:
    """Whether `pos` lies inside $...$ or $$...$$ math (an odd number of unescaped $ before it)."""
    return len(re.findall(r"(?<!\\)\$", text[:pos])) % 2 == 1


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    uri = page.file.src_uri
    if uri.startswith("api/"):
        return _API_MARKER.sub(lambda m: api_markdown(m.group(1)), markdown)
    if not uri.startswith("derivations/"):
        return markdown

    def replace(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if _inside_math(match.string, match.start()):
            return match.group(0)
        if not _PATHLIKE.search(target):      # prose such as "F[μ](t)": not a link
            return f"\\[{text}\\]({target})"
        mapped = _map_link(uri, target, files)
        if mapped is None:
            return f"`{target}`" if text.strip("`") == target else f"{text} (`{target}`)"
        return f"[{text}]({mapped})"

    # Only outside fenced code: split on fences and rewrite the prose parts.
    parts = re.split(r"(^```.*?^```[^\n]*$)", markdown, flags=re.S | re.M)
    return "".join(part if part.startswith("```") else _LINK.sub(replace, part) for part in parts)
