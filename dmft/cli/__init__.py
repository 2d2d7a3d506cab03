"""The ``dmft`` command line (docs/conventions.md §5).

Each subcommand lives in ``dmft/cli/_<name>.py`` with ``configure(parser)`` and
``execute(args) -> int``. Any `DmftError` and any command-line mistake becomes one line on stderr
(``dmft COMMAND: error: ...``) and a non-zero exit code (2 for input). Ctrl-C becomes one line,
``dmft COMMAND: interrupted``, and exit code 130, with no partial result left behind.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from .._errors import DmftError

_COMMANDS = {
    "run": "solve the infinite-width limit of a spec (lazy for ntk, DMFT for mup)",
    "kernels": "write the initialization NNGP/NTK kernels of a spec",
    "sample": "train finite-width networks of a spec and compare them with the limit",
    "derive": "print the derived kernel recursions and DMFT equations of a spec",
    "verify": "check a hand-derived expression against the derived one",
    "sweep": "solve the limit (optionally sample finite widths) over a grid of spec keys",
    "figure": "draw a paper figure from the saved data of a sweep",
}
INTERRUPT_EXIT_CODE = 130
#: Seconds the main thread gets to unwind a Ctrl-C itself before the watchdog thread cleans up
#: and exits (the main thread may sit in one long compiled XLA call that Python cannot interrupt).
INTERRUPT_GRACE_S = 2.0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and a record of the options that take a value (so that
    ``--widths -5,0`` reaches the command's own check instead of argparse's)."""

    value_options: set[str] = set()

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.nargs is None:
            _Parser.value_options.update(action.option_strings)
        return action

    def error(self, message):  # noqa: D401 (argparse API)
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the package version and commit, computed only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the dmft version (and git commit when known) and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from ..io import version_string

        print(version_string())
        parser.exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dmft",
        description="Infinite-width kernels, lazy and feature-learning dynamics, finite-width checks.",
    )
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (also accepted after the command)")
    parser.add_argument("--version", action=_Version)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in _COMMANDS.items():
        module = importlib.import_module(f"dmft.cli._{name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="no progress bars")
        module.configure(sub)
        sub.set_defaults(execute=module.execute)
    return parser


def _join_option_values(argv: list[str]) -> list[str]:
    """``--flag -5,0`` → ``--flag=-5,0`` for options that take a value: argparse would read a
    value starting with '-' as another option unless it looks like a plain negative number."""
    options = _Parser.value_options
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            joined.extend(argv[index:])
            break
        following = argv[index + 1] if index + 1 < len(argv) else None
        if (token in options and following is not None and following.startswith("-")
                and following != "-" and following.split("=", 1)[0] not in options
                and following not in ("-h", "--help", "--quiet")):
            joined.append(f"{token}={following}")
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def _command_of(argv: Sequence[str]) -> str | None:
    return next((token for token in argv if token in _COMMANDS), None)


class _Interrupts:
    """Turns Ctrl-C into one line and exit code 130, with no partial files and no crash.

    The main thread normally unwinds the KeyboardInterrupt itself (its staging folders are removed
    on the way out). When it is stuck in native code, a watchdog thread woken through
    `signal.set_wakeup_fd` does the same after `INTERRUPT_GRACE_S`: it removes the staging folders
    in flight and leaves with ``os._exit`` (no interpreter shutdown while JAX threads run).
    """

    def __init__(self, command: str | None, hard_exit: bool):
        self.prefix = f"dmft {command}" if command else "dmft"
        self.hard_exit = hard_exit
        self._reported = threading.Lock()
        self._wakeup_read = None
        self._previous_wakeup = -1

    def __enter__(self):
        if self.hard_exit and threading.current_thread() is threading.main_thread():
            try:
                read, write = os.pipe()
                os.set_blocking(write, False)
                self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            except (OSError, ValueError):
                return self
            self._wakeup_read = read
            threading.Thread(target=self._watch, name="dmft-interrupt-watchdog",
                             daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        if self._wakeup_read is not None:
            try:
                signal.set_wakeup_fd(self._previous_wakeup)
            except (OSError, ValueError):
                pass
        return False

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._wakeup_read, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                time.sleep(INTERRUPT_GRACE_S)
                self.finish()

    def finish(self) -> int:
        """Clean up, print the one line and leave (or return 130 when called in-process)."""
        if not self._reported.acquire(blocking=False):
            if self.hard_exit:  # the other thread is already reporting and exiting
                while True:
                    time.sleep(1.0)
            return INTERRUPT_EXIT_CODE
        from ..io import discard_staging

        discard_staging()
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        try:
            sys.stderr.write(f"{self.prefix}: interrupted\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        if self.hard_exit:
            os._exit(INTERRUPT_EXIT_CODE)
        return INTERRUPT_EXIT_CODE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dmft`` console script and of ``python -m dmft``.

    With ``argv=None`` (a process of its own) an interrupt ends the process with ``os._exit(130)``
    after cleaning up; called with an argument list (tests, scripts) it returns 130 instead.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    interrupts = _Interrupts(_command_of(arguments), hard_exit=argv is None)
    try:
        with interrupts:
            return _main(arguments)
    except KeyboardInterrupt:
        return interrupts.finish()


def _main(arguments: list[str]) -> int:
    import jax

    from .._progress import progress_enabled, progress_env, set_progress

    jax.config.update("jax_enable_x64", True)
    parser = _parser()
    args = parser.parse_args(_join_option_values(arguments))
    # the command line shows progress bars unless --quiet (or DMFT_PROGRESS=0 is set); the
    # process-wide setting is restored afterwards for callers of main() in a Python session
    previous = progress_enabled()
    set_progress(not args.quiet and progress_env() is not False)
    try:
        return int(args.execute(args) or 0)
    except DmftError as error:
        message = " ".join(str(error).split())
        print(f"dmft {args.command}: error: {message}", file=sys.stderr)
        return error.exit_code
    finally:
        set_progress(previous)


__all__ = ["main"]
