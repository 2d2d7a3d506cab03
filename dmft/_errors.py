"""Errors raised on bad input or failed solves.

The CLI turns every `DmftError` into a one-line message and a non-zero exit code; anything else
is a bug and keeps its traceback.
"""


class DmftError(Exception):
    """Base class of every error `dmft` raises on purpose."""

    exit_code = 2


class InputError(DmftError, ValueError):
    """Bad user input: a spec key, a file, a value or an expression. The message names it."""


class SolveError(DmftError, RuntimeError):
    """A solve diverged (non-finite values) or did not converge; the message says by how much."""

    exit_code = 3
