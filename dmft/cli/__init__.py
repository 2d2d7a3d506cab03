"""The ``dmft`` command line (conventions §5).

Each subcommand lives in ``dmft/cli/_<name>.py`` with ``configure(parser)`` and
``execute(args) -> int``. Any `DmftError` becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._errors import DmftError

_COMMANDS = {
    "run": "solve the infinite-width limit of a spec (lazy for ntk, DMFT for mup)",
    "kernels": "write the initialization NNGP/NTK kernels of a spec",
    "sample": "train finite-width networks of a spec and compare them with the limit",
    "derive": "print the derived kernel recursions and DMFT equations of a spec",
    "verify": "check a hand-derived expression against the derived one",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmft",
        description="Infinite-width kernels, lazy and feature-learning dynamics, finite-width checks.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in _COMMANDS.items():
        module = importlib.import_module(f"dmft.cli._{name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(execute=module.execute)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dmft`` console script and of ``python -m dmft``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    args = _parser().parse_args(argv)
    if args.quiet:
        from .._progress import set_progress

        set_progress(False)
    try:
        return int(args.execute(args) or 0)
    except DmftError as error:
        message = " ".join(str(error).split())
        print(f"dmft {args.command}: error: {message}", file=sys.stderr)
        return error.exit_code


__all__ = ["main"]
