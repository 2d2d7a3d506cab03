"""Result files: atomic writes and provenance metadata."""

from ._results import (
    KNOWN_RESULT_FILES,
    STAGING_PREFIX,
    OutputError,
    atomic_file,
    atomic_output,
    discard_staging,
    git_info,
    previous_result_files,
    provenance,
    version_string,
    write_json,
    write_npz,
    write_results,
)

__all__ = [
    "KNOWN_RESULT_FILES",
    "STAGING_PREFIX",
    "OutputError",
    "atomic_file",
    "atomic_output",
    "discard_staging",
    "git_info",
    "previous_result_files",
    "provenance",
    "version_string",
    "write_json",
    "write_npz",
    "write_results",
]
