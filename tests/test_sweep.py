"""dmft sweep / dmft.sweep: grids of spec keys, exact agreement with single runs, resuming,
divergent points, bad input before any work, the shared-kernel lazy path and the summary."""

from __future__ import annotations

import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dmft
import dmft._progress
from dmft import InputError
from dmft.cli import main
from dmft.spec import Training
from dmft.sweep import (
    gd_closed_form,
    load_summary,
    parse_assignment,
    parse_value,
    shared_kernel,
)

sweep_module = importlib.import_module("dmft.sweep._sweep")
REPO = Path(__file__).resolve().parents[1]


def _array(rows) -> str:
    return "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in rows) + "]"


def _vector(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _write_spec(path: Path, *, parameterization="mup", layers=2, activation="tanh", gamma0=1.0,
                times=(0.0, 0.1, 0.2), num_train=16, solver="", training="", seed=0,
                sigma_w=None) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train, 3))
    y = np.tanh(x[:, 0]) + 0.3 * x[:, 1]
    x_test = rng.standard_normal((4, 3))
    y_test = np.tanh(x_test[:, 0]) + 0.3 * x_test[:, 1]
    arch = f'hidden_layers = {layers}\nactivation = "{activation}"\n'
    arch += f'parameterization = "{parameterization}"\n'
    if parameterization == "mup":
        arch += f"gamma0 = {gamma0!r}\n"
    if sigma_w is not None:
        arch += f"sigma_w = {sigma_w!r}\n"
    text = (f"[architecture]\n{arch}\n[data]\nx_train = {_array(x)}\ny_train = {_vector(y)}\n"
            f"x_test = {_array(x_test)}\ny_test = {_vector(y_test)}\n\n"
            f"[training]\ntimes = {_vector(times)}\n{training}\n{solver}")
    path.write_text(text)
    return path


MC_SOLVER = '[solver]\nmethod = "monte_carlo"\nnum_samples = 64\nnum_batches = 4\ndt = 0.1\n'


def _result_files(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for point in sorted((folder / "points").iterdir()):
        with np.load(point / "result.npz") as content:
            out[point.name] = {key: content[key] for key in content.files}
    return out


def test_gamma0_sweep_reproduces_individual_runs_and_a_rerun_skips_all(tmp_path, capsys):
    """The brief's check: 4 values of γ0 at P = 16, L = 2, tanh (Monte Carlo DMFT, short
    horizon) give exactly the four `dmft run` results; a second run solves nothing."""
    spec = _write_spec(tmp_path / "base.toml", solver=MC_SOLVER)
    out = tmp_path / "sweep"
    gammas = ["0.25", "0.5", "1.0", "2.0"]
    code = main(["sweep", str(spec), "--set", f"architecture.gamma0={','.join(gammas)}",
                 "--out", str(out), "--no-point-figures", "--quiet"])
    assert code == 0
    swept = _result_files(out)
    assert len(swept) == 4
    for gamma, (name, arrays) in zip(gammas, sorted(swept.items())):
        single = _write_spec(tmp_path / f"g{gamma}.toml", gamma0=float(gamma), solver=MC_SOLVER)
        run_out = tmp_path / f"run{gamma}"
        assert main(["run", str(single), "--out", str(run_out), "--quiet"]) == 0
        with np.load(run_out / "result.npz") as content:
            expected = {key: content[key] for key in content.files}
        assert sorted(arrays) == sorted(expected)
        for key, value in expected.items():  # exact: the same solve of the same spec
            assert np.array_equal(arrays[key], value), (name, key)
    before = {p: p.stat().st_mtime_ns for p in out.glob("points/*/result.npz")}
    capsys.readouterr()
    rerun = dmft.sweep(spec, {"architecture.gamma0": [0.25, 0.5, 1.0, 2.0]}, out,
                       point_figures=False)
    assert rerun.computed == 0 and all(record.skipped for record in rerun.points)
    assert {p: p.stat().st_mtime_ns for p in out.glob("points/*/result.npz")} == before
    summary = load_summary(out)
    assert summary["architecture.gamma0"].tolist() == [g for g in (0.25, 0.5, 1.0, 2.0)
                                                       for _ in range(3)]
    # the lazy reference does not depend on γ0, and equals the lazy solve of the point
    lazy = summary["lazy_loss_train"].reshape(4, 3)
    assert np.array_equal(lazy, np.broadcast_to(lazy[0], lazy.shape))
    reference = dmft.solve_lazy(dmft.load_spec(spec))
    # 1e-12: the shared kernel and the solver's own closed form are the same arithmetic
    np.testing.assert_allclose(lazy[0], reference.losses(dmft.load_spec(spec).data.y_train)[
        "loss_train"], rtol=1e-12, atol=1e-15)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["grid"] == {"architecture.gamma0": [0.25, 0.5, 1.0, 2.0]}
    assert [p["status"] for p in meta["points"]] == ["done"] * 4


def _lazy_spec(tmp_path: Path, **kwargs) -> Path:
    return _write_spec(tmp_path / "lazy.toml", parameterization="ntk", layers=2,
                       activation="tanh", times=(0.0, 0.5, 1.0, 2.0), **kwargs)


def test_interrupted_sweep_resumes_without_redoing_finished_points(tmp_path, monkeypatch):
    spec = _lazy_spec(tmp_path)
    grid = {"architecture.sigma_w": [0.8, 1.0, 1.2, 1.4]}
    out = tmp_path / "sweep"
    real = sweep_module._solve_limit
    calls = []

    def interrupted(point_spec, kernels, vectorize):
        calls.append(point_spec.architecture.sigma_w)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third point
        return real(point_spec, kernels, vectorize)

    monkeypatch.setattr(sweep_module, "_solve_limit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dmft.sweep(spec, grid, out, point_figures=False)
    finished = sorted(p.parent.name for p in out.glob("points/*/result.npz"))
    assert finished == ["000_sigma_w=0.8", "001_sigma_w=1"]
    assert not list(out.glob("points/*/.dmft-staging-*"))  # the point in flight left nothing
    assert not (out / "summary.npz").exists()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("points/*/result.npz")}
    calls.clear()
    result = dmft.sweep(spec, grid, out, point_figures=False)
    assert calls == [1.2, 1.4]  # only the unfinished points were solved
    assert [r.skipped for r in result.points] == [True, True, False, False]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in stamps)
    assert len(load_summary(out)["t"]) == 4 * 4


@pytest.mark.slow  # tens of seconds to minutes on 2 cores (ensembles, long solves): -m slow
def test_killed_sweep_process_resumes(tmp_path):
    """SIGKILL in the middle of a sweep (no clean-up at all): the rerun keeps every point that
    was complete and redoes only the rest."""
    spec = _lazy_spec(tmp_path)
    out = tmp_path / "sweep"
    values = ",".join(f"{0.6 + 0.1 * k:.1f}" for k in range(10))
    command = [sys.executable, "-m", "dmft", "sweep", str(spec), "--set",
               f"architecture.sigma_w={values}", "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(out.glob("points/*/metadata.json"))) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/metadata.json")}
    assert done, "no point finished before the kill"
    assert len(done) < 10, "the sweep finished before the kill: nothing to resume"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/metadata.json")}
    assert len(after) == 10
    kept = [name for name in done if after[name] == done[name]]
    # every point whose files were all in place at the kill is kept (at most the one being
    # renamed into place at that instant may be incomplete and redone)
    assert len(kept) >= len(done) - 1
    assert f"{10 - len(kept)} points solved, {len(kept)} already done" in rerun.stdout
    assert not list(out.glob("points/*/.dmft-staging-*"))


def test_vectorised_lazy_points_equal_dmft_solve(tmp_path):
    spec = _lazy_spec(tmp_path)
    grid = {"architecture.sigma_w": [1.0, 1.3], "training.times": [[0.0, 1.0], [0.0, 0.5, 3.0]]}
    fast = dmft.sweep(spec, grid, tmp_path / "fast", point_figures=False)
    dmft.sweep(spec, grid, tmp_path / "slow", point_figures=False, vectorize=False)
    assert len(fast.points) == 4
    fast_files, slow_files = _result_files(tmp_path / "fast"), _result_files(tmp_path / "slow")
    for name, arrays in fast_files.items():
        for key, value in arrays.items():  # the same kernel calls and closed form: exact
            assert np.array_equal(value, slow_files[name][key]), (name, key)
    diagnostics = json.loads(next((tmp_path / "fast" / "points").iterdir()).joinpath(
        "metadata.json").read_text())["solver"]
    assert diagnostics["shared_kernel"] is True


def _gd_base(tmp_path: Path) -> Path:
    return _write_spec(tmp_path / "gd.toml", parameterization="ntk", layers=1, activation="tanh",
                       times=(0.0, 0.1), training='optimizer = "gd"\nlearning_rate = 0.1\n')


def test_learning_rate_sweep_shares_one_kernel_and_matches_gd(tmp_path):
    """training.steps puts every η0 on the same steps; the shared-kernel GD equals the lazy GD
    solver and an explicit step recursion, and a divergent η0 is recorded, not raised."""
    spec_path = _gd_base(tmp_path)
    spec = dmft.load_spec(spec_path)
    kernel = shared_kernel(spec)
    lam_max = kernel.eigenvalues[-1] / spec.data.num_train
    rates = [0.2 / lam_max, 1.0 / lam_max, 1.9 / lam_max, 2.6 / lam_max]  # last: unstable
    result = dmft.sweep(spec_path, {"training.learning_rate": rates, "training.steps": [40]},
                        tmp_path / "lr", point_figures=False)
    assert [r.status for r in result.points] == ["done", "done", "done", "diverged"]
    summary = result.summary
    assert summary["step"].tolist()[:41] == list(range(41))
    diverged = summary["diverged"].reshape(4, 41)
    assert diverged[:3].sum() == 0 and diverged[3].all()
    step = summary["diverged_step"].reshape(4, 41)[3, 0]
    assert 0 < step <= 40 and np.isnan(summary["loss_train"].reshape(4, 41)[3]).all()
    y = spec.data.y_train
    for index, rate in enumerate(rates[:3]):
        point = spec.replace(training=Training(tuple(k * rate for k in range(41)), "gd", rate))
        expected = dmft.solve(point).arrays(y, spec.data.y_test)
        with np.load(result.points[index].folder / "result.npz") as saved:
            # 1e-10: two evaluations of (1 − η0λ/P)^k (power vs log1p/expm1), O(k·ε) apart
            np.testing.assert_allclose(saved["f_train"], expected["f_train"], atol=1e-10)
            np.testing.assert_allclose(saved["f_test"], expected["f_test"], atol=1e-10)
        # explicit recursion f_{k+1} = f_k + (η0/P) K (y − f_k), independent of the eigenbasis
        f, f_star = np.zeros_like(y), np.zeros(spec.data.num_test)
        for _ in range(40):
            residual = rate / y.shape[0] * (y - f)
            f, f_star = f + kernel.ntk @ residual, f_star + kernel.ntk_test_train @ residual
        f_k, f_test_k = gd_closed_form(kernel, y, rate, np.array([40]))
        # 1e-10: 40 steps of O(1) updates accumulate round-off ≈ 40·P·ε
        np.testing.assert_allclose(f_k[0], f, atol=1e-10)
        np.testing.assert_allclose(f_test_k[0], f_star, atol=1e-10)
    with pytest.raises(dmft.SolveError, match="diverged"):  # the solver agrees it diverges
        dmft.solve(spec.replace(training=Training(tuple(k * rates[3] for k in range(41)), "gd",
                                                  rates[3])))


def test_summary_columns_alignment_eigenvalues_and_csv(tmp_path):
    spec_path = _lazy_spec(tmp_path)
    result = dmft.sweep(spec_path, ["architecture.sigma_w=1.0,1.3"], tmp_path / "s",
                        point_figures=False, num_eigenvalues=3)
    summary = result.summary
    for column in ("point", "architecture.sigma_w", "diverged", "t", "loss_train", "loss_test",
                   "sharpness", "alignment", "ntk_eig1", "ntk_eig2", "ntk_eig3"):
        assert column in summary, column
    assert "ntk_eig4" not in summary and "step" not in summary
    y = dmft.load_spec(spec_path).data.y_train
    with np.load(result.points[1].folder / "result.npz") as saved:
        ntk = saved["ntk"][0]
        loss = saved["loss_train"]
    rows = summary["point"] == 1
    expected = y @ ntk @ y / (np.sqrt(np.sum(ntk**2)) * (y @ y))
    # 1e-12: the same formula in a different order of summation
    np.testing.assert_allclose(summary["alignment"][rows], expected, rtol=1e-12)
    top = np.sort(np.linalg.eigvalsh(ntk))[::-1][:3]
    np.testing.assert_allclose(summary["ntk_eig1"][rows], top[0], rtol=1e-12)  # eigh round-off
    np.testing.assert_allclose(summary["ntk_eig3"][rows], top[2], rtol=1e-10)  # eigh round-off
    assert np.array_equal(summary["loss_train"][rows], loss)
    with open(tmp_path / "s" / "summary.csv") as stream:
        table = list(csv.DictReader(stream))
    assert len(table) == 8
    assert [float(row["loss_train"]) for row in table] == summary["loss_train"].tolist()
    assert {row["diverged"] for row in table} == {"0"}


@pytest.mark.parametrize("assignment, message", [
    ("architecture.gamm0=1,2", "unknown key architecture.gamm0"),
    ("architecture.gamma0", "expected KEY=V1,V2"),
    ("gamma0=1,2", "dotted spec keys"),
    ("architecture.gamma0=1,,2", "empty value"),
    ("architecture.gamma0=1,2e", "cannot parse value '2e'"),
    ("architecture.gamma0=1,-1", "sweep point 1 (architecture.gamma0 = -1): architecture.gamma0 must be > 0"),
    ("training.learning_rate=0.1,0.3", "sweep point"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, assignment, message):
    spec = _write_spec(tmp_path / "base.toml", solver=MC_SOLVER)
    out = tmp_path / "never"
    code = main(["sweep", str(spec), "--set", assignment, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("dmft sweep: error:")
    assert not out.exists()


def test_invalid_point_is_refused_before_the_first_point_runs(tmp_path, monkeypatch):
    spec = _lazy_spec(tmp_path)
    monkeypatch.setattr(sweep_module, "_solve_limit",
                        lambda *args: pytest.fail("a point ran before validation finished"))
    with pytest.raises(InputError, match=r"sweep point 2 .*sigma_w must be > 0"):
        dmft.sweep(spec, {"architecture.sigma_w": [1.0, 1.5, -1.0]}, tmp_path / "x")
    with pytest.raises(InputError, match="needs training.optimizer"):
        dmft.sweep(spec, {"training.steps": [3]}, tmp_path / "x")
    with pytest.raises(InputError, match="data.train_size must be an integer in 1..16"):
        dmft.sweep(spec, {"data.train_size": [4, 17]}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_parse_values_and_train_size(tmp_path):
    assert parse_assignment("architecture.activation=tanh,relu") == (
        "architecture.activation", ["tanh", "relu"])
    assert parse_assignment('training.times=[0, 1],[0, 2.5]') == (
        "training.times", [[0, 1], [0, 2.5]])
    assert parse_value("k", "2") == 2 and parse_value("k", "1e-3") == 1e-3
    assert parse_value("k", "true") is True and parse_value("k", '"a,b"') == "a,b"
    spec = _lazy_spec(tmp_path)
    result = dmft.sweep(spec, {"data.train_size": [4, 8]}, tmp_path / "p", point_figures=False)
    with np.load(result.points[0].folder / "result.npz") as saved:
        assert saved["f_train"].shape == (4, 4) and saved["f_test"].shape == (4, 4)


def test_sweep_with_widths_writes_sampler_columns(tmp_path):
    spec = _write_spec(tmp_path / "s.toml", parameterization="ntk", layers=1, activation="tanh",
                       times=(0.0, 0.5), num_train=6,
                       solver='[sampler]\nmethod = "gd"\ndt = 0.05\n')
    result = dmft.sweep(spec, {"architecture.sigma_w": [1.0]}, tmp_path / "w", widths=[16, 64],
                        seeds=3, point_figures=False)
    summary = result.summary
    folder = result.points[0].folder
    with np.load(folder / "samples.npz") as samples, np.load(folder / "result.npz") as limit:
        f = samples["N64_f_train"]
        deviation = np.mean((f - limit["f_train"][None]) ** 2, axis=-1)  # (seeds, T)
        loss = samples["N16_loss_train"]
    assert f.shape == (3, 2, 6)
    np.testing.assert_allclose(summary["N64_f_dev"], deviation.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(summary["N16_loss_train"], loss.mean(axis=0), rtol=1e-12)
    # standard error of the mean over 3 seeds (ddof = 1), same numbers: round-off only
    np.testing.assert_allclose(summary["N16_loss_train_stderr"],
                               loss.std(axis=0, ddof=1) / np.sqrt(3), rtol=1e-12)
    assert not summary["N16_diverged"].any()


def test_progress_bar_over_points(tmp_path, capsys):
    spec = _lazy_spec(tmp_path)
    previous = dmft._progress.progress_enabled()
    dmft.set_progress(True)
    try:
        dmft.sweep(spec, {"architecture.sigma_w": [1.0, 1.2]}, tmp_path / "bar",
                   point_figures=False)
    finally:
        dmft.set_progress(previous)
    err = capsys.readouterr().err
    assert "sweep" in err and "2/2" in err  # one tick per point, with the point shown
    assert "sigma_w=1.2" in err
