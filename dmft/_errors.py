"""Errors raised on bad input or failed solves.

The CLI turns every `DmftError` into a one-line message and a non-zero exit code; anything else
is a bug and keeps its traceback. The message of a `DmftError` is one line from the start
(newlines and runs of whitespace in it are collapsed to single spaces), so that Python callers
get the same line the CLI prints.
"""


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


class DmftError(Exception):
    """Base class of every error `dmft` raises on purpose."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


class InputError(DmftError, ValueError):
    """Bad user input: a spec key, a file, a value or an expression. The message names it."""


class SolveError(DmftError, RuntimeError):
    """A solve diverged (non-finite values) or did not converge; the message says by how much.

    Where the solve knows them, `time` (in the time units of docs/conventions.md §2), `step` (of a
    discrete training rule or of the solver's grid) and `loss` (at that point) say where it failed;
    each is None otherwise.
    """

    exit_code = 3

    def __init__(self, *args: object, time: float | None = None, step: int | None = None,
                 loss: float | None = None) -> None:
        super().__init__(*args)
        self.time = None if time is None else float(time)
        self.step = None if step is None else int(step)
        self.loss = None if loss is None else float(loss)
