"""Paper figures from sweeps (dmft figure / dmft.figures): rebuilt from the saved data alone,
one shared style (column width, TrueType PDF + PNG, labelled axes with the time unit), and the
content each kind promises (lazy reference, 1/N guide, optimum and divergence markers)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

import dmft
from dmft import InputError
from dmft.cli import main
from dmft.figures import (
    COLUMN_WIDTH,
    SweepData,
    paper_style,
    plot_alignment_family,
    plot_depth_transfer,
    plot_gamma0_family,
    plot_lr_transfer,
    plot_sweep_figure,
    plot_width_deviation,
)
from dmft.spec import Architecture, Data, Spec, Training
from dmft.sweep import load_summary, shared_kernel


def _data(num_train=8, seed=0) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train, 3))
    x_test = rng.standard_normal((4, 3))
    return Data(x, np.tanh(x[:, 0]) + 0.3 * x[:, 1], x_test, np.tanh(x_test[:, 0]))


@pytest.fixture(scope="module")
def gamma0_sweep(tmp_path_factory) -> Path:
    """μP deep linear network (the exact Gaussian closure, cheap) over four γ0."""
    spec = Spec(Architecture(1, "linear", "mup"), _data(), Training((0.0, 0.5, 1.0, 2.0, 3.0)))
    out = tmp_path_factory.mktemp("figures") / "gamma0"
    dmft.sweep(spec, {"architecture.gamma0": [0.25, 0.5, 1.0, 2.0]}, out, point_figures=False)
    return out


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Lazy (NTK) gradient descent over η0 with two small widths; the largest η0 diverges."""
    spec = Spec(Architecture(1, "tanh", "ntk"), _data(), Training((0.0, 0.1), "gd", 0.1),
                sampler={"hessian_steps": 0})
    lam = shared_kernel(spec).eigenvalues[-1] / spec.data.num_train
    rates = np.array([0.3, 0.8, 1.4, 1.9, 4.5]) / lam  # 4.5: |1 − η0λ/P|^16 passes 1e6
    out = tmp_path_factory.mktemp("figures") / "lr"
    dmft.sweep(spec, {"training.learning_rate": rates.tolist(), "training.steps": [8]}, out,
               widths=[16, 64], seeds=2, point_figures=False)
    return out, rates


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def _check_files(paths, wide=False) -> None:
    pdf, png = paths
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF")
    assert b"/FontFile2" in content and b"/Type3" not in content  # TrueType, no Type 3 fonts
    width, height = _png_size(png)
    target = (7.0 if wide else COLUMN_WIDTH) * 300  # 300 dpi
    # tight bounding box: the saved width is the drawn content, within ~15 % of the nominal one
    assert 0.8 * target < width < 1.1 * target, width
    assert height > 300


def _labelled(figure) -> None:
    for ax in figure.axes:
        assert ax.get_ylabel() or ax.get_shared_y_axes().get_siblings(ax) != [ax]
    assert any(ax.get_xlabel() for ax in figure.axes)


def test_gamma0_family_from_saved_data(gamma0_sweep):
    paths = plot_sweep_figure(gamma0_sweep, "gamma0")
    _check_files(paths)
    with paper_style():
        figure = plot_gamma0_family(SweepData(gamma0_sweep))
    _labelled(figure)
    ax = figure.axes[0]
    assert "gradient-flow time" in figure.axes[-1].get_xlabel()
    labels = [line.get_label() for line in ax.get_lines()]
    assert sum(label.startswith(r"$\gamma_0 = ") for label in labels) == 4
    lazy = [line for line in ax.get_lines() if "lazy" in line.get_label()]
    assert len(lazy) == 1
    summary = load_summary(gamma0_sweep)
    reference = summary["lazy_loss_train"][summary["point"] == 0]
    np.testing.assert_array_equal(lazy[0].get_ydata(), reference)  # drawn from the saved column
    assert len(figure.axes) == 2  # train and test panels (the spec has test targets)
    assert not ax.collections  # no standard errors in an exact solve: no bands
    plt.close(figure)


def test_error_bands_where_stderr_exists(gamma0_sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(gamma0_sweep, copy)
    with np.load(copy / "summary.npz") as content:
        summary = {key: content[key] for key in content.files}
    summary["loss_train_stderr"] = 0.01 * summary["loss_train"]
    np.savez(copy / "summary.npz", **summary)
    with paper_style():
        figure = plot_gamma0_family(SweepData(copy))
    bands = figure.axes[0].collections
    assert len(bands) == 4  # one ±2 s.e. band per γ0 (the test panel has no stderr column)
    assert not figure.axes[1].collections
    assert any("s.e." in text.get_text() for text in figure.axes[0].get_legend().get_texts())
    plt.close(figure)


def test_alignment_figure(gamma0_sweep):
    _check_files(plot_sweep_figure(gamma0_sweep, "alignment"))
    data = SweepData(gamma0_sweep)
    with paper_style():
        figure = plot_alignment_family(data)
    _labelled(figure)
    ax_align, ax_eig = figure.axes
    curves = [line for line in ax_align.get_lines() if line.get_label().startswith("$")]
    assert len(curves) == 4
    np.testing.assert_array_equal(curves[0].get_ydata(), data.column(0, "alignment"))
    assert "alignment" in ax_align.get_ylabel() and "eigenvalues" in ax_eig.get_ylabel()
    plt.close(figure)


def test_lr_transfer_marks_the_optimum_and_divergent_points(lr_sweep):
    folder, rates = lr_sweep
    _check_files(plot_sweep_figure(folder, "lr_transfer"))
    data = SweepData(folder)
    with paper_style():
        figure = plot_lr_transfer(data)
    ax = figure.axes[0]
    limit = data.summary["loss_train"].reshape(5, 9)[:, -1]
    assert np.isnan(limit[-1]) and np.isfinite(limit[:-1]).all()  # the last η0 diverged
    stars = [line for line in ax.get_lines() if line.get_marker() == "*" and len(line.get_xdata())]
    best = int(np.nanargmin(limit))
    assert any(np.isclose(line.get_xdata()[0], rates[best]) for line in stars)
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"
               and len(line.get_xdata())]
    assert any(np.isclose(line.get_xdata(), rates[-1]).any() for line in crosses)
    assert ax.get_xscale() == "log" and "learning rate" in ax.get_xlabel()
    assert "$k = 8$" in ax.get_ylabel()
    texts = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "$N = 16$" in texts and "$N = 64$" in texts and "predicted optimum" in texts
    plt.close(figure)


def test_width_figure_has_a_one_over_n_guide(lr_sweep):
    folder, _ = lr_sweep
    paths = plot_sweep_figure(folder, "width", folder / "w" / "width")
    _check_files(paths)
    with paper_style():
        figure = plot_width_deviation(SweepData(folder))
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    guide = [line for line in ax.get_lines() if "1/N" in line.get_label()]
    assert len(guide) == 1
    x, y = guide[0].get_xdata(), guide[0].get_ydata()
    np.testing.assert_allclose(x * y, x[0] * y[0], rtol=1e-12)  # exactly ∝ 1/N
    assert "width $N$" in ax.get_xlabel()
    plt.close(figure)


def test_depth_transfer(tmp_path):
    spec = Spec(Architecture(1, "tanh", "ntk"), _data(), Training((0.0, 0.5), "gd", 0.5))
    out = tmp_path / "depth"
    dmft.sweep(spec, {"architecture.hidden_layers": [1, 2, 3],
                      "training.learning_rate": [0.5, 1.0, 2.0, 4.0],
                      "training.steps": [5]}, out, point_figures=False)
    _check_files(plot_sweep_figure(out, "depth_transfer"))
    with paper_style():
        figure = plot_depth_transfer(SweepData(out))
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert {"$L = 1$", "$L = 2$", "$L = 3$"} <= set(labels)
    plt.close(figure)


def test_cli_figure_and_one_line_errors(lr_sweep, gamma0_sweep, tmp_path, capsys):
    folder, _ = lr_sweep
    stem = tmp_path / "out" / "transfer"
    assert main(["figure", str(folder), "--kind", "lr_transfer", "--out", str(stem),
                 "--wide"]) == 0
    _check_files([stem.with_suffix(".pdf"), stem.with_suffix(".png")], wide=True)
    capsys.readouterr()
    assert main(["figure", str(folder), "--kind", "gamma0"]) == 2
    err = capsys.readouterr().err
    assert "needs a sweep over architecture.gamma0" in err and err.count("\n") == 1
    assert main(["figure", str(gamma0_sweep), "--kind", "width"]) == 2
    assert "needs a sweep with --widths" in capsys.readouterr().err
    assert main(["figure", str(tmp_path), "--kind", "gamma0"]) == 2
    assert "no summary.npz" in capsys.readouterr().err
    with pytest.raises(InputError, match="--kind must be one of"):
        plot_sweep_figure(folder, "nope")
