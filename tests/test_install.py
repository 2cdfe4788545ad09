"""The package as a user installs it: a wheel built from the source, installed into a fresh
virtual environment outside the checkout, gives the `pwavenet <job>` command, which runs a job
with a shipped config from any directory and ends a mistake with one `error:` line.

The fresh environment reuses this one's installed dependencies through a .pth file (no
download): its own site-packages, where the wheel goes, comes first on its path."""

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def test_pyproject_lists_every_package_of_the_tree():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    tree = {
        os.path.relpath(folder, ROOT).replace(os.sep, ".")
        for folder, _, files in os.walk(os.path.join(ROOT, "pwavenet"))
        if "__init__.py" in files
    }
    mapped = setuptools["package-dir"]
    assert mapped == {"pwavenet.cli": "launch", "pwavenet.configs": "configs"}
    assert set(setuptools["packages"]) == tree | set(mapped)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh environment's bin folder, the wheel's file names, a folder outside the
    checkout to run in)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    for name in ("pwavenet", "launch", "configs"):
        shutil.copytree(
            os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), "."],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = (root / "dist").iterdir()
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the pwavenet this environment sees through the .pth stays untouched.
    install_args = ["install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)]
    install = subprocess.run(
        [*pip, "--python", str(python), *install_args],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    outside = root / "elsewhere"
    outside.mkdir()
    return venv / "bin", names, outside


def _pwavenet(installed, *args):
    bin_dir, _, outside = installed
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "XLA_FLAGS")
    }
    env.update(JAX_PLATFORMS="cpu", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return subprocess.run(
        [str(bin_dir / "pwavenet"), *args], cwd=outside, env=env, capture_output=True, text=True
    )


def test_the_wheel_ships_the_jobs_and_their_configs(installed):
    bin_dir, names, outside = installed
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import pwavenet; print(pwavenet.__file__)"],
        cwd=outside,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert where.stdout.startswith(str(bin_dir.parent)), where.stdout + where.stderr
    for name in ("pwavenet/cli/train_teacher.py", "pwavenet/cli/common.py"):
        assert name in names
    for name in ("teacher", "student", "flows"):
        assert f"pwavenet/configs/{name}.py" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(next(installed[0].parent.parent.glob("dist/*.whl"))) as archive:
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(entry_points).decode())
    assert parser["console_scripts"]["pwavenet"] == "pwavenet.cli:main"


def test_the_command_runs_a_job_with_a_shipped_config_outside_the_checkout(installed):
    _, _, outside = installed
    usage = _pwavenet(installed, "--help")
    assert usage.returncode == 0 and "train_teacher" in usage.stdout and "distill" in usage.stdout
    helped = _pwavenet(installed, "export", "--helpshort")
    assert helped.returncode == 1, helped.stderr[-2000:]  # absl's --helpshort, as python -m
    assert "--format: <jax|saved_model|onnx|bundle>" in helped.stdout
    run = _pwavenet(
        installed,
        "flows",
        "--config=flows:tiny",
        "--workdir=run",
        "--config.train.steps=4",
        "--config.train.checkpoint_every=4",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (outside / "run" / "results.json").is_file()
    assert not os.path.exists(os.path.join(ROOT, "run"))


def test_the_commands_mistakes_are_one_error_line(installed):
    for args, expected in (
        (("train-teacher", "--config=teacher:nosuch", "--workdir=w"), "Unknown variant 'nosuch'"),
        # The shipped student config loads (it imports the teacher's) before this refusal.
        (("distill", "--config=student:tiny", "--workdir=w"), "--config.teacher_workdir is empty"),
        (("trian_teacher",), "unknown job 'trian_teacher'"),
    ):
        run = _pwavenet(installed, *args)
        assert run.returncode == 2, (args, run.stderr[-2000:])
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], args
