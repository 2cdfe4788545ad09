"""The CI entry point cannot pass without its job tests: under CI=true a missing espeak-ng
fails launch/venv.sh (launch/ensure_espeak_ng.sh) with the install command, a skipped test
fails the run (tests/ci_policy.py), and .ci/run fails when pytest collected nothing."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = ("espeak-ng", "espeak", "apt-get", "apt", "brew", "sudo")  # nothing can install it


def _path_without_espeak_ng(tmp_path) -> str:
    """A PATH of one folder linking every program of this PATH but espeak-ng and the
    installers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = os.path.join(folder, name)
            if name in HIDDEN or (bin_dir / name).exists() or not os.access(target, os.X_OK):
                continue
            (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def _bash(args, path, ci=None, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = path
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        ["/bin/bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_missing_espeak_ng_fails_under_ci_with_the_install_command_and_warns_locally(tmp_path):
    path = _path_without_espeak_ng(tmp_path)
    script = os.path.join(ROOT, "launch", "ensure_espeak_ng.sh")
    ci = _bash([script], path, ci="true")
    assert ci.returncode == 1, ci.stderr
    assert "error: espeak-ng is missing" in ci.stderr
    assert "sudo apt-get install espeak-ng" in ci.stderr and "brew install espeak-ng" in ci.stderr
    local = _bash([script], path)
    assert local.returncode == 0, local.stderr
    assert "Could not install espeak-ng here" in local.stderr and "error" not in local.stderr
    # With espeak-ng on the PATH it says nothing and succeeds, under CI as well.
    fake = tmp_path / "bin" / "espeak-ng"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    found = _bash([script], path, ci="true")
    assert (found.returncode, found.stderr) == (0, "")


def test_ci_run_fails_without_espeak_ng_before_running_pytest(tmp_path):
    """.ci/run sets CI=true itself, so a CI system that does not still fails."""
    run = _bash([os.path.join(ROOT, ".ci", "run")], _path_without_espeak_ng(tmp_path))
    assert run.returncode != 0
    assert "error: espeak-ng is missing" in run.stderr
    assert "sudo apt-get install espeak-ng" in run.stderr
    assert "test session starts" not in run.stdout


def test_ci_run_fails_when_pytest_collects_no_tests(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = _bash([os.path.join(ROOT, ".ci", "run"), str(empty)], os.environ["PATH"])
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "no tests ran" in run.stdout  # pytest's exit 5
    assert "error: pytest collected no tests (exit 5)" in run.stderr


SKIPPING_TESTS = """
import pytest

@pytest.mark.skipif(True, reason="needs the moon")
def test_marked():
    pass

def test_skips_itself():
    pytest.skip("needs a second moon")

def test_runs():
    assert True
"""


def _pytest_with_policy(tmp_path, ci, *args):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this project's options
    (tmp_path / "test_skips.py").write_text(SKIPPING_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "ci_policy",
            "-ra",
            "-p",
            "no:cacheprovider",
            *args,
            "test_skips.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_skipped_test_fails_under_ci_naming_its_reason(tmp_path):
    # Under pytest-xdist, as the suite runs: the reports come back from a worker.
    run = _pytest_with_policy(tmp_path, "true", "-n", "1")
    assert run.returncode == 1, run.stdout[-3000:]
    for reason in ("needs the moon", "needs a second moon"):
        assert f"skipped under CI=true, where every test must run: {reason}" in run.stdout
    assert "1 passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1]


def test_a_skip_passes_locally_and_names_its_reason(tmp_path):
    run = _pytest_with_policy(tmp_path, None)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "SKIPPED" in run.stdout
    assert "needs the moon" in run.stdout and "needs a second moon" in run.stdout
    assert "1 passed, 2 skipped" in run.stdout
