"""The command line: result files per conventions §5, and one-line errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dmft.cli import main


@pytest.fixture
def spec_folder(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((6, 3)))
    np.save(tmp_path / "y.npy", rng.standard_normal(6))
    np.save(tmp_path / "xt.npy", rng.standard_normal((2, 3)))
    np.save(tmp_path / "yt.npy", rng.standard_normal(2))
    return tmp_path


def make_spec(folder, architecture='activation = "relu"', data_extra='', times="[0.0, 1.0, 5.0]"):
    path = folder / "spec.toml"
    path.write_text(f"""
[architecture]
hidden_layers = 2
{architecture}

[data]
x_train = "x.npy"
y_train = "y.npy"
x_test = "xt.npy"
y_test = "yt.npy"
{data_extra}

[training]
times = {times}
""")
    return path


def test_run_writes_result_metadata_and_figures(spec_folder, capsys):
    out = spec_folder / "out"
    assert main(["run", str(make_spec(spec_folder)), "--out", str(out)]) == 0
    result = np.load(out / "result.npz")
    assert result["t"].shape == (3,)
    assert result["f_train"].shape == (3, 6)
    assert result["loss_train"].shape == (3,)
    assert result["ntk"].shape == (3, 6, 6)
    assert result["f_test"].shape == (3, 2)
    assert result["loss_test"].shape == (3,)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["spec"]["architecture"]["activation"] == "relu"
    assert metadata["provenance"]["float64"] is True
    assert "jax" in metadata["provenance"]["versions"]
    assert metadata["solver"]["method"] == "ClosedForm"
    for suffix in ("pdf", "png"):
        assert (out / f"learning_curve.{suffix}").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_kernels_command_writes_every_layer(spec_folder):
    out = spec_folder / "k.npz"
    assert main(["kernels", str(make_spec(spec_folder)), "--out", str(out)]) == 0
    arrays = np.load(out)
    for layer in (1, 2, 3):
        assert arrays[f"nngp_L{layer}"].shape == (6, 6)
        assert arrays[f"ntk_L{layer}"].shape == (6, 6)
    assert arrays["ntk_test_train"].shape == (2, 6)


BAD_INPUTS = {
    "unknown activation": ('activation = "rleu"', "", "[0.0, 1.0]", "rleu"),
    "unparseable expression": ('activation = "x**"', "", "[0.0, 1.0]", "x**"),
    "negative sigma": ('sigma_w = -1.0', "", "[0.0, 1.0]", "sigma_w"),
    "gamma0 <= 0": ('parameterization = "mup"\ngamma0 = 0.0', "", "[0.0, 1.0]", "gamma0"),
    "non-increasing times": ('activation = "relu"', "", "[1.0, 0.5]", "training.times"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_spec_values_fail_with_one_line(spec_folder, capsys, case):
    architecture, data_extra, times, needle = BAD_INPUTS[case]
    out = spec_folder / "out"
    code = main(["run", str(make_spec(spec_folder, architecture, data_extra, times)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not (out / "result.npz").exists()


def test_bad_data_fails_with_one_line(spec_folder, capsys):
    np.save(spec_folder / "y.npy", np.array([1.0, np.nan, 0, 0, 0, 0]))
    assert main(["run", str(make_spec(spec_folder)), "--out", str(spec_folder / "o")]) != 0
    assert "data.y_train contains non-finite" in capsys.readouterr().err
    np.save(spec_folder / "y.npy", np.zeros(5))
    assert main(["run", str(make_spec(spec_folder)), "--out", str(spec_folder / "o")]) != 0
    assert "data.y_train has 5 targets" in capsys.readouterr().err
    assert main(["kernels", str(spec_folder / "none.toml"), "--out", str(spec_folder / "k.npz")]) != 0
    assert "spec file not found" in capsys.readouterr().err
    assert not (spec_folder / "k.npz").exists()


def test_failed_figure_leaves_no_partial_result(spec_folder, monkeypatch):
    import dmft.figures

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dmft.figures, "plot_learning_curve", broken)
    out = spec_folder / "out"
    with pytest.raises(RuntimeError):
        main(["run", str(make_spec(spec_folder)), "--out", str(out)])
    assert list(out.iterdir()) == []  # neither result.npz nor metadata.json was left behind


def test_console_entry_point_has_no_traceback(spec_folder):
    spec = make_spec(spec_folder, 'activation = "x + y"')
    completed = subprocess.run([sys.executable, "-m", "dmft", "run", str(spec), "--out",
                                str(spec_folder / "o")], capture_output=True, text=True)
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("dmft run: error:")
