"""Command-line hardening: output paths checked before any work, earlier results replaced as a
whole, normal file permissions, Ctrl-C, progress switches, argparse edges, provenance, the
"not supported yet" spec keys, and the benchmark's worker protocol."""

import contextlib
import importlib.util
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmft
import dmft._progress
import dmft.cli._kernels
import dmft.cli._run
import dmft.sampler
import dmft.symbolic
from dmft import InputError
from dmft._progress import progress_enabled, progress_env, set_progress
from dmft.cli import main
from dmft.cli._common import output_file, output_folder
from dmft.io import OutputError, git_info, previous_result_files, write_results
from dmft.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

SPEC = """
[architecture]
hidden_layers = 1
activation = "relu"

[data]
x_train = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
y_train = [1.0, -1.0, 0.5]

[training]
times = [0.0, 1.0]
"""


class Solved(Exception):
    """Raised by the monkeypatched solvers: the command got past its output checks."""


def _no_work(*args, **kwargs):
    raise Solved


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def no_solve(monkeypatch):
    """Every command's work fails loudly if it is reached."""
    monkeypatch.setattr(dmft.cli._run, "solve", _no_work)
    monkeypatch.setattr(dmft.cli._kernels, "kernels", _no_work)
    monkeypatch.setattr(dmft.sampler, "sample", _no_work)
    monkeypatch.setattr(dmft.symbolic, "derive", _no_work)


def _call(argv):
    """main(argv) in-process: (exit code or Solved, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except Solved:
            code = Solved
    return code, err.getvalue()


# ---------------------------------------------------------------------------------------------
# Output paths: property tests over existing / missing, file / folder, writable / not.

# How the --out path is made, relative to a fresh temporary folder ROOT. "/proc/..." cannot be
# written even by root; a path under an existing *file* cannot be created either.
PATH_KINDS = ["missing", "missing_nested", "empty_dir", "dir_with_result", "dir_with_user_file",
              "file", "under_file", "proc", "empty_string", "trailing_slash_missing"]
FOLDER_OK = {"missing", "missing_nested", "empty_dir", "dir_with_result", "dir_with_user_file",
             "trailing_slash_missing"}


def _make_path(root: Path, kind: str, name: str, suffix: str) -> str:
    target = root / (name + suffix)
    if kind == "missing":
        return str(target)
    if kind == "missing_nested":
        return str(root / "a" / "b" / (name + suffix))
    if kind == "trailing_slash_missing":
        return str(target) + "/"
    if kind == "empty_dir":
        target.mkdir()
        return str(target)
    if kind == "dir_with_result":
        target.mkdir()
        (target / "metadata.json").write_text(json.dumps({"provenance": {}, "files": []}))
        return str(target)
    if kind == "dir_with_user_file":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        return str(target)
    if kind == "file":
        target.write_text("not a folder")
        return str(target)
    if kind == "under_file":
        (root / "plain").write_text("a file")
        return str(root / "plain" / (name + suffix))
    if kind == "proc":
        return f"/proc/dmft-{name}{suffix}"
    if kind == "empty_string":
        return ""
    raise AssertionError(kind)


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(PATH_KINDS), name=names)
def test_output_folder_accepts_exactly_the_writable_folders(kind, name):
    with tempfile.TemporaryDirectory() as root:
        text = _make_path(Path(root), kind, name, "")
        before = sorted(p.relative_to(root) for p in Path(root).rglob("*"))
        if kind in FOLDER_OK:
            assert output_folder(text) == Path(text)
        else:
            with pytest.raises(OutputError) as error:
                output_folder(text)
            message = str(error.value)
            assert "--out" in message and (text == "" or repr(text) in message)
        # the check creates nothing (its probe folder is removed again)
        assert sorted(p.relative_to(root) for p in Path(root).rglob("*")) == before


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(PATH_KINDS + ["earlier_output", "other_suffix"]), name=names)
def test_output_file_accepts_new_files_and_earlier_outputs_only(kind, name):
    earlier = "EARLIER"
    with tempfile.TemporaryDirectory() as root:
        if kind == "earlier_output":
            text = str(Path(root) / f"{name}.npz")
            Path(text).write_text(earlier)
        elif kind == "other_suffix":
            text = str(Path(root) / f"{name}.npy")
        else:
            text = _make_path(Path(root), kind, name, ".npz")

        def check():
            return output_file(text, suffixes=(".npz",),
                               replaceable=lambda p: p.read_text() == earlier, kind="test output")

        if kind in ("missing", "missing_nested", "earlier_output"):
            assert check() == Path(text)
        else:  # folders, files of another kind, wrong suffix, unwritable, empty
            with pytest.raises(OutputError) as error:
                check()
            assert "--out" in str(error.value)


COMMANDS = {  # command -> (is the output a folder, suffix for a file output, extra flags)
    "run": (True, "", []),
    "sample": (True, "", ["--widths", "4", "--seeds", "4"]),
    "kernels": (False, ".npz", []),
    "derive": (False, ".txt", []),
}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(COMMANDS)), kind=st.sampled_from(PATH_KINDS), name=names)
def test_cli_checks_out_before_any_work(no_solve, spec_file, command, kind, name):
    """Bad --out paths: exit 2 with one line naming the path, and the solver is never reached;
    good ones get past the check to the (patched) solver."""
    is_folder, suffix, extra = COMMANDS[command]
    with tempfile.TemporaryDirectory() as root:
        text = _make_path(Path(root), kind, name, suffix)
        start = time.perf_counter()
        code, err = _call([command, str(spec_file), "--out", text, *extra])
        elapsed = time.perf_counter() - start
        good = kind in FOLDER_OK if is_folder else kind in ("missing", "missing_nested")
        if good:
            assert code is Solved, err
        else:
            assert code == 2, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"dmft {command}: error: --out"), err
            assert text == "" or repr(text) in lines[0]
            assert "Traceback" not in err
            # no solve happened (the patched solver raises): what remains is parsing a tiny spec,
            # well under a second; 10 s only guards against a check that does real work
            assert elapsed < 10


def test_kernels_and_derive_refuse_other_files(spec_file, tmp_path, capsys):
    run_result = tmp_path / "result.npz"
    np.savez(run_result, t=np.zeros(2))
    assert main(["kernels", str(spec_file), "--out", str(run_result)]) == 2
    assert "not an earlier dmft kernels output" in capsys.readouterr().err
    assert set(np.load(run_result).files) == {"t"}  # untouched

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert main(["derive", str(spec_file), "--out", str(notes)]) == 2
    assert "not an earlier dmft derive output" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    # the format decides the extension: LaTeX goes to .tex only, text never to .tex
    assert main(["derive", str(spec_file), "--latex", "--out", str(tmp_path / "eq.txt")]) == 2
    assert "'.tex'" in capsys.readouterr().err
    assert main(["derive", str(spec_file), "--out", str(tmp_path / "eq.tex")]) == 2
    capsys.readouterr()
    # earlier outputs of the same kind are replaced
    kernels_out = tmp_path / "k.npz"
    for _ in range(2):
        assert main(["kernels", str(spec_file), "--out", str(kernels_out)]) == 0
    for flags, out in (([], tmp_path / "eq.txt"), (["--latex"], tmp_path / "eq.tex")):
        for _ in range(2):
            assert main(["derive", str(spec_file), *flags, "--out", str(out)]) == 0
    # a text derive output is not an earlier LaTeX output (nor the reverse)
    (tmp_path / "swap.tex").write_text((tmp_path / "eq.txt").read_text())
    assert main(["derive", str(spec_file), "--latex", "--out", str(tmp_path / "swap.tex")]) == 2
    assert list(tmp_path.glob(".dmft-*")) == []


# ---------------------------------------------------------------------------------------------
# Re-running into a folder: the earlier result is replaced as a whole.


def _fake_result(folder: Path, files: list[str] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("result.npz", "ntk_evolution.pdf", "ntk_evolution.png", "learning_curve.png"):
        (folder / name).write_text("old")
    content = {"command": "run", "provenance": {}}
    if files is not None:
        content["files"] = files
    (folder / "metadata.json").write_text(json.dumps(content))


@pytest.mark.parametrize("with_list", [True, False], ids=["files-list", "older-metadata"])
def test_rerun_replaces_the_earlier_result_as_a_whole(tmp_path, with_list):
    out = tmp_path / "out"
    _fake_result(out, ["result.npz", "ntk_evolution.pdf", "ntk_evolution.png",
                       "learning_curve.png", "metadata.json"] if with_list else None)
    (out / "my_notes.txt").write_text("keep me")
    write_results(out, "result.npz", {"t": np.zeros(2)}, {"command": "run"},
                  lambda folder: (folder / "learning_curve.png").write_text("new"))
    assert sorted(p.name for p in out.iterdir()) == ["learning_curve.png", "metadata.json",
                                                     "my_notes.txt", "result.npz"]
    assert (out / "learning_curve.png").read_text() == "new"
    assert (out / "my_notes.txt").read_text() == "keep me"
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["files"] == ["learning_curve.png", "metadata.json", "result.npz"]


def test_folder_without_a_dmft_result_keeps_its_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ntk_evolution.png").write_text("the user's own")
    (out / "metadata.json").write_text("{not json")
    assert previous_result_files(out) == set()
    write_results(out, "result.npz", {"t": np.zeros(2)}, {"command": "run"})
    assert (out / "ntk_evolution.png").read_text() == "the user's own"


@pytest.mark.slow  # ~20 s (a μP solve); test_rerun_replaces_the_earlier_result_as_a_whole covers
# the same write path in the default suite
def test_mup_then_ntk_run_leaves_no_stale_ntk_evolution(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('activation = "relu"',  # linear: the fastest μP solve
                                 'activation = "linear"\nparameterization = "mup"'))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert (out / "ntk_evolution.png").is_file()
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "learning_curve.pdf", "learning_curve.png", "metadata.json", "result.npz"]


# ---------------------------------------------------------------------------------------------
# Permissions


@contextlib.contextmanager
def _umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_result_files_have_normal_permissions(spec_file, tmp_path):
    with _umask(0o022):
        assert main(["run", str(spec_file), "--out", str(tmp_path / "run")]) == 0
        assert main(["kernels", str(spec_file), "--out", str(tmp_path / "k" / "k.npz")]) == 0
        assert main(["derive", str(spec_file), "--out", str(tmp_path / "eq.txt")]) == 0
    files = [*(tmp_path / "run").iterdir(), tmp_path / "k" / "k.npz", tmp_path / "eq.txt"]
    assert len(files) == 6
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for folder in (tmp_path / "run", tmp_path / "k"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


# ---------------------------------------------------------------------------------------------
# Interrupts


def test_interrupted_solve_returns_130_with_one_line(spec_file, tmp_path, monkeypatch, capsys):
    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(dmft.cli._run, "solve", interrupted)
    out = tmp_path / "out"
    assert main(["run", str(spec_file), "--out", str(out)]) == 130
    assert capsys.readouterr().err == "dmft run: interrupted\n"
    assert not out.exists()


def test_interrupt_while_writing_keeps_the_earlier_result(spec_file, tmp_path, monkeypatch,
                                                         capsys):
    import dmft.figures

    def interrupted(arrays, path, **kwargs):
        Path(path).with_suffix(".png").write_text("half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(dmft.figures, "plot_learning_curve", interrupted)
    fresh = tmp_path / "fresh"
    assert main(["run", str(spec_file), "--out", str(fresh)]) == 130
    assert not fresh.exists()  # the folder it created is removed again, staging and all
    earlier = tmp_path / "earlier"
    _fake_result(earlier, None)
    before = {p.name: p.read_text() for p in earlier.iterdir()}
    assert main(["run", str(spec_file), "--out", str(earlier)]) == 130
    assert {p.name: p.read_text() for p in earlier.iterdir()} == before
    assert capsys.readouterr().err.splitlines()[-1] == "dmft run: interrupted"


def test_ctrl_c_during_a_solve_exits_130_with_one_line_and_no_files(tmp_path):
    """A real SIGINT to `python -m dmft run` while it solves: exit 130, one line on stderr, no
    result files, no crash (rc -11 before). The Monte Carlo DMFT example runs with 16× its
    default samples, so that the solve outlasts the signal on any machine (the example alone
    had become fast enough to finish first, now and then)."""
    out = tmp_path / "out"
    spec = tmp_path / "slow.toml"
    spec.write_text((REPO / "examples" / "mup_deep_relu.toml").read_text()
                    + '\n[solver]\nmethod = "monte_carlo"\nnum_samples = 65536\n')
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "dmft", "run", str(spec), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        header = process.stdout.readline()  # printed right before the solve starts
        assert header.startswith("dmft run:"), header
        time.sleep(1.5)  # well inside the solve (compilation alone takes longer)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        # the main thread unwinds at once, or the watchdog exits after its 2 s grace; 60 s is
        # only a hang guard on a loaded machine
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == ["dmft run: interrupted"], stderr
    assert not out.exists() or list(out.iterdir()) == []
    assert list(tmp_path.rglob("result.npz")) == [] and list(tmp_path.rglob(".dmft-*")) == []


# ---------------------------------------------------------------------------------------------
# Progress bars


def test_progress_is_off_in_the_api_and_switched_by_one_env_var(monkeypatch):
    monkeypatch.delenv("DMFT_PROGRESS", raising=False)
    assert progress_env() is None
    for value, expected in (("1", True), ("true", True), ("0", False), ("no", False)):
        monkeypatch.setenv("DMFT_PROGRESS", value)
        assert progress_env() is expected
    # a fresh interpreter without DMFT_PROGRESS: off until dmft.set_progress(True)
    code = ("import dmft, dmft._progress as p; a = p.progress_enabled(); dmft.set_progress(True); "
            "print(a, p.progress_enabled())")
    env = {k: v for k, v in os.environ.items() if k != "DMFT_PROGRESS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
    assert "set_progress" in dmft.__all__ and dmft.set_progress is dmft._progress.set_progress
    # DMFT_PROGRESS=1 switches them on at import
    monkeypatch.setenv("DMFT_PROGRESS", "1")
    try:
        importlib.reload(dmft._progress)
        assert progress_enabled() is True
    finally:
        monkeypatch.setenv("DMFT_PROGRESS", "0")
        importlib.reload(dmft._progress)
    assert progress_enabled() is False


@pytest.mark.parametrize("argv, expected", [
    (["run", "SPEC"], True),
    (["--quiet", "run", "SPEC"], False),
    (["run", "SPEC", "--quiet"], False),
    (["run", "--quiet", "SPEC"], False),
])
def test_cli_progress_on_unless_quiet_before_or_after_the_command(spec_file, monkeypatch, argv,
                                                                 expected):
    monkeypatch.delenv("DMFT_PROGRESS", raising=False)
    seen = []

    def record(spec):
        seen.append(progress_enabled())
        raise Solved

    monkeypatch.setattr(dmft.cli._run, "solve", record)
    set_progress(False)
    argv = [str(spec_file) if a == "SPEC" else a for a in argv]
    with tempfile.TemporaryDirectory() as out:
        code, err = _call([*argv, "--out", out])
    assert code is Solved, err
    assert seen == [expected]
    assert progress_enabled() is False  # the API setting is restored after the command


def test_dmft_progress_0_silences_the_cli_too(spec_file, monkeypatch):
    monkeypatch.setenv("DMFT_PROGRESS", "0")
    seen = []
    monkeypatch.setattr(dmft.cli._run, "solve",
                        lambda spec: seen.append(progress_enabled()) or _no_work())
    with tempfile.TemporaryDirectory() as out:
        assert _call(["run", str(spec_file), "--out", out])[0] is Solved
    assert seen == [False]


# ---------------------------------------------------------------------------------------------
# The command line's own edges


@pytest.mark.parametrize("flags, needle", [
    (["--widths", "-5,0"], "--widths"),
    (["--widths=-5,0"], "--widths"),
    (["--seeds", "-1,2"], "--seeds"),
    (["--dt", "-0.1", "--method", "gd"], "--dt"),
])
def test_negative_looking_values_reach_the_commands_own_check(no_solve, spec_file, tmp_path,
                                                              flags, needle):
    code, err = _call(["sample", str(spec_file), "--out", str(tmp_path / "o"), *flags])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmft sample: error:") and needle in lines[0]


def test_argparse_errors_are_one_line(spec_file, capsys):
    for argv, needle in ((["sample", str(spec_file), "--widths"], "--widths"),
                         (["nonsense"], "nonsense"),
                         (["run", str(spec_file), "--bogus"], "--bogus")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dmft") and needle in lines[0], lines


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"dmft {dmft.__version__}")


def test_derive_reads_only_the_architecture(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("y_train = [1.0, -1.0, 0.5]", 'y_train = [1.0, nan, 0.5]'))
    with pytest.raises(InputError, match="non-finite"):
        load_spec(spec)
    assert main(["derive", str(spec)]) == 0
    assert capsys.readouterr().out.startswith("# dmft derivation")
    spec.write_text(SPEC.replace('y_train = [1.0, -1.0, 0.5]', 'y_train = "missing.npy"'))
    assert main(["derive", str(spec)]) == 0
    capsys.readouterr()
    spec.write_text(SPEC.replace('activation = "relu"', 'activation = "relu"\ndepth = 3'))
    assert main(["derive", str(spec)]) == 2  # its own table's keys are still checked
    assert "architecture.depth" in capsys.readouterr().err


def test_metadata_records_version_and_commit(spec_file, tmp_path):
    assert main(["run", str(spec_file), "--out", str(tmp_path / "o")]) == 0
    provenance = json.loads((tmp_path / "o" / "metadata.json").read_text())["provenance"]
    assert provenance["dmft_version"] == dmft.__version__
    assert "git_commit" in provenance and "spec_git_commit" in provenance


def _git_repo(folder: Path) -> str:
    folder.mkdir()
    (folder / "file.txt").write_text("x")
    for command in (["init", "-q"], ["add", "file.txt"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", "-C", str(folder), *command], check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_git_commit_of_an_installed_copy(tmp_path, monkeypatch):
    """Not importable from a checkout (a plain install): the commit comes from pip's record."""
    import dmft.io._results as results

    monkeypatch.setattr(results, "_package_tree_commit", lambda: None)
    clone = tmp_path / "clone"
    head = _git_repo(clone)
    monkeypatch.setattr(results, "_install_source",
                        lambda: {"url": f"file://{clone}", "dir_info": {}})
    info = git_info(spec_file=clone / "file.txt")
    assert info["git_commit"] == head and "install source" in info["git_commit_source"]
    assert info["spec_git_commit"] == head
    monkeypatch.setattr(results, "_install_source", lambda: {
        "url": "https://github.com/x/dmft", "vcs_info": {"vcs": "git", "commit_id": "abc123"}})
    assert git_info()["git_commit"] == "abc123"
    monkeypatch.setattr(results, "_install_source", lambda: {})
    info = git_info(spec_file=tmp_path / "nowhere" / "spec.toml")
    assert info["git_commit"] is None and info["dmft_version"] == dmft.__version__
    assert info["spec_git_commit"] is None


# ---------------------------------------------------------------------------------------------
# Spec keys for later work


@pytest.mark.parametrize("line, key", [
    ('optimizer = "sgd"', "training.optimizer"),
    ("learning_rate = 0.1", "training.learning_rate"),
    ("batch_size = 4", "training.batch_size"),
    ("num_classes = 3", "training.num_classes"),
    ('optimizer = "adam"', "training.optimizer"),
])
def test_training_keys_out_of_context_name_the_key(tmp_path, line, key):
    """Training keys of §2a/§2b given without the rule they belong to are one-line errors."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("[training]", f"[training]\n{line}"))
    with pytest.raises(InputError) as error:
        load_spec(spec)
    assert key in str(error.value)


def test_other_architectures_say_not_supported_yet(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("[architecture]", '[architecture]\ntype = "cnn"'))
    with pytest.raises(InputError, match="not supported yet") as error:
        load_spec(spec)
    assert "architecture.type" in str(error.value)


def test_explicit_defaults_are_accepted(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("[training]", '[training]\noptimizer = "flow"\nloss = "mse"')
                    .replace("[architecture]", '[architecture]\ntype = "mlp"'))
    assert load_spec(spec).training.times == (0.0, 1.0)
    spec.write_text(SPEC.replace("[training]", "[training]\nlos = 1"))
    with pytest.raises(InputError, match="unknown key training.los"):
        load_spec(spec)


# ---------------------------------------------------------------------------------------------
# benchmarks/dmft.py --reference: the worker's result survives progress junk on stdout


def test_benchmark_reads_the_worker_result_despite_progress_output(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "theory_utils.py").write_text(
        "import sys\nimport numpy as np\n"
        "def solve_kernels_nonlin(kx, y, **kwargs):\n"
        "    for k in range(3):\n"
        "        sys.stdout.write(f'\\r iteration: {k}')\n"  # no newline, as the reference does
        "    return None, None, None, None\n"
        "def solve_Delta(kx, y, phi, g, eta):\n"
        "    sys.stdout.write('\\r iteration: done')\n"
        "    return np.ones((20, 4))\n")
    spec = importlib.util.spec_from_file_location("bench_dmft", REPO / "benchmarks" / "dmft.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench._spawn(["--reference-worker", str(reference), "10", "1.0", "1"])
    assert "error" not in out, out
    assert out["loss"] == [0.5] * 4  # 0.5 · mean(1²): exact
    out = bench._spawn(["--worker", "1", "2", "3", "x"])  # a failing worker: its last stderr line
    assert "invalid int value" in out["error"]
