"""Architecture specs: the Python objects and the TOML file format (conventions §4)."""

from ._default import default_spec, teacher_data
from ._spec import Architecture, Data, Spec, Training
from ._toml import load_spec, spec_from_dict

__all__ = [
    "Architecture",
    "Data",
    "Spec",
    "Training",
    "default_spec",
    "load_spec",
    "spec_from_dict",
    "teacher_data",
]
