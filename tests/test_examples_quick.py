"""Each example's ``--quick`` form runs in a subprocess, writes its figures (PDF and PNG) and
data, and shows the sign of its physics: GD sharpens at η0·λ_max(K0)/P = 1.2, the catapult's
loss rises then falls with η0·λ_max(K)/P ending below 2, μP's optimum sits where the limit puts
it, depth-μP branches keep more learning rates stable at depth than no depth scaling, and in
Saxe's stages the limit sits on the exact mode law while the networks approach it with width;
on the digits (the [data] extra) the L = 3 DMFT meets the extrapolated networks.

They take minutes on a small CPU (JIT compilation of the solvers and of several widths), so
they are marked slow: ``pytest -m slow tests/test_examples_quick.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.slow


def run_example(name: str, out: Path, *extra: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(EXAMPLES / name / "run.py"), "--quick",
                           "--out", str(out), *extra], capture_output=True, text=True,
                          timeout=1500, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def last_json(text: str) -> dict:
    """The last JSON object the script printed (its summary)."""
    start = text.rfind("\n{")
    end = text.rfind("}")
    return json.loads(text[start + 1:end + 1])


def assert_figures(out: Path, stem: str) -> None:
    for suffix in (".pdf", ".png"):
        path = out / f"{stem}{suffix}"
        assert path.is_file() and path.stat().st_size > 1000, path


def test_edge_of_stability_quick(tmp_path):
    text = run_example("edge_of_stability", tmp_path)
    assert_figures(tmp_path, "edge_of_stability")
    data = np.load(tmp_path / "edge_of_stability.npz")
    eta = float(data["eta0"])
    sharp = eta * data["limit_sharpness"]
    assert sharp[0] == pytest.approx(1.2, rel=1e-6)
    assert sharp.max() > 1.3  # progressive sharpening
    assert np.all(np.diff(data["limit_loss"]) < 0)  # below 2/η0: the loss falls every step
    for width in (256, 512):
        loss = np.nanmean(data[f"N{width}_loss"], axis=0)
        assert np.max(np.abs(loss - data["limit_loss"])) < 0.1 * data["limit_loss"][0]
    assert "eta0" in last_json(text)


def test_catapult_quick(tmp_path):
    text = run_example("catapult", tmp_path)
    assert_figures(tmp_path, "catapult")
    data = np.load(tmp_path / "catapult.npz")
    eta = float(data["eta0"])
    loss, sharp = data["limit_loss"], eta * data["limit_sharpness"]
    assert sharp[0] == pytest.approx(1.8, rel=1e-6)
    rises = np.flatnonzero(np.diff(loss) > 0)
    assert rises.size, "the catapult's loss never rises"
    first = rises[0]
    assert loss[-1] < loss[first + 1:].max()  # it rises, then falls again
    assert loss[-1] < loss[first]  # and ends below where the spike began
    assert sharp.max() > 2.0  # past the edge of stability
    assert sharp[-1] < 2.0  # the kernel flattens below 2/η0
    # above 2 the lazy limit's top mode grows: |1 - eta0 lambda_max/P| > 1
    factors = re.search(r"lazy GD factors .*?: \[(.*?)\]", text)
    assert factors and max(float(v) for v in factors.group(1).split(",")) > 1.0
    for width in (256, 512):
        w_loss = np.nanmean(data[f"N{width}_loss"], axis=0)
        assert np.argmax(np.diff(w_loss) > 0) >= 1  # the finite widths rise too, after a fall


def test_mup_transfer_quick(tmp_path):
    text = run_example("mup_transfer", tmp_path)
    assert_figures(tmp_path, "mup_transfer")
    for param in ("mup", "ntk"):
        assert (tmp_path / "sweeps" / f"lr_{param}" / "summary.npz").is_file()
        assert (tmp_path / "sweeps" / f"lr_{param}" / "figures" / "lr_transfer.png").is_file()
    report = last_json(text)
    assert report["mup"]["limit_argmin_eta0"] is not None
    steps = report["mup"]["widths"]["512"]["grid_steps_from_limit"]
    assert steps is not None and steps <= 1


def test_depth_transfer_quick(tmp_path):
    text = run_example("depth_transfer", tmp_path)
    assert_figures(tmp_path, "depth_transfer")
    report = last_json(text)
    scaled, plain = report["beta=0.5"], report["beta=0"]
    # without depth scaling the deeper net's kernel is larger: it cannot take a larger stable
    # rate than the 1/sqrt(L) net of the same depth
    assert plain["4"]["largest_stable_eta0"] <= scaled["4"]["largest_stable_eta0"]
    assert re.search(r"beta = 0\.5", text)


def test_saxe_stages_quick(tmp_path):
    text = run_example("saxe_stages", tmp_path)
    assert_figures(tmp_path, "saxe_stages")
    report = last_json(text)
    stages = report["stage_times"]
    exact = [stages[f"mode{a}"]["exact"] for a in (1, 2, 3)]
    assert exact[0] < exact[1] < exact[2]  # the stronger mode is learnt first
    # the two-layer particle DMFT is exact for φ = x: only the ODE tolerance is left
    assert report["limit_vs_exact"] < 1e-6
    # the sigmoid's relative error is O(1/(γ0 s)): 1/40 for the strongest mode
    assert abs(stages["mode1"]["saxe"] - exact[0]) < 0.05 * exact[0]
    gaps = report["networks_vs_exact"]
    assert gaps["N512"] < gaps["N128"]  # networks approach the limit with width


def test_digits_depth_quick(tmp_path):
    pytest.importorskip("sklearn")  # the [data] extra: the digits ship inside scikit-learn
    text = run_example("digits_depth", tmp_path)
    assert_figures(tmp_path, "digits_depth")
    case = last_json(text)["gamma0=1"]
    assert case["limit"]["loss_train"] < 0.1  # it learns (𝓛(0) = 1/2 for ±1 targets)
    assert case["limit"]["accuracy_test"] > 0.8
    # issue 13's criterion on the tiny ensembles (4 seeds, S = 2048): max|Δ| ≤ 3σ + 1 % 𝓛(0)
    assert case["loss_train_criterion"] <= 1 and case["loss_test_criterion"] <= 1
