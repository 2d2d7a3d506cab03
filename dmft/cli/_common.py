"""Helpers shared by the subcommands."""

from __future__ import annotations

from pathlib import Path

from ..spec import Spec, default_spec, load_spec


def add_spec_argument(parser, optional: bool = False) -> None:
    if optional:
        parser.add_argument("spec", nargs="?", default=None,
                            help="spec file (TOML); omitted: the embedded default problem")
    else:
        parser.add_argument("spec", help="spec file (TOML)")


def read_spec(path: str | None) -> Spec:
    return default_spec() if path is None else load_spec(path)


def activation_summary(spec: Spec) -> dict:
    """How the activation's dual kernels are computed (the tier the user may ask about)."""
    from ..activations import get_activation

    activation = get_activation(spec.architecture.activation)
    return {"name": activation.name, "tier": activation.tier, "method": activation.method,
            "dual_error": activation.dual_error}


def report_written(paths: dict[str, Path]) -> None:
    for name, path in paths.items():
        print(f"wrote {path}")
