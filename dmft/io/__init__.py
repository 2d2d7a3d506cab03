"""Result files: atomic writes and provenance metadata."""

from ._results import atomic_output, provenance, write_json, write_npz, write_results

__all__ = ["atomic_output", "provenance", "write_json", "write_npz", "write_results"]
