"""Architecture specs: the Python objects and the TOML file format (docs/conventions.md §4)."""

from ._default import default_spec, teacher_data
from ._spec import MAX_HIDDEN_LAYERS, Architecture, Data, Spec, Training
from ._toml import (
    architecture_from_table,
    check_table_keys,
    data_from_table,
    load_spec,
    read_spec_table,
    spec_from_dict,
)

__all__ = [
    "MAX_HIDDEN_LAYERS",
    "Architecture",
    "Data",
    "Spec",
    "Training",
    "architecture_from_table",
    "check_table_keys",
    "data_from_table",
    "default_spec",
    "load_spec",
    "read_spec_table",
    "spec_from_dict",
    "teacher_data",
]
