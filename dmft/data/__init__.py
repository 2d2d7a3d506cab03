"""Data sets that ship offline: ``[data] dataset = "digits" | "mnist1d"`` (docs/conventions.md §4).

`load_dataset` returns a `dmft.Data` with a deterministic, class-stratified split. The packages
behind the data sets are the optional extra ``pip install "dmft[data]"``.
"""

from ._datasets import DATASETS, TARGETS, known_datasets, load_dataset

__all__ = ["DATASETS", "TARGETS", "known_datasets", "load_dataset"]
