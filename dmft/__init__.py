"""dmft: wide neural networks from first principles (public API assembled as modules land)."""

from ._errors import DmftError, InputError, SolveError
from .spec import Architecture, Data, Spec, Training, default_spec, load_spec

__version__ = "0.1.0"
