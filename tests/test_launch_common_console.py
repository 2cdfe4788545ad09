"""A job's console (launch/common.py): the project's own lines and every warning, without the
libraries' INFO chatter (orbax, tensorflow_datasets, JAX, TensorFlow's C++ start-up notices)
unless `-v 1` asks for it; `--log_dir` keeps the whole log in a file."""

import logging
import os
import re
import subprocess
import sys

from launch import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the libraries print at INFO: absl's and C++ logging's prefix (I<month><day> ...),
# oneDNN's notice, orbax's options object, tfds' and JAX's start-up lines.
CHATTER = (
    "oneDNN custom operations",
    "absl::InitializeLog",
    "CheckpointManagerOptions",
    "Constructing tf.data.Dataset",
    "Unable to initialize backend",
)
INFO_PREFIX = re.compile(r"^I\d{4} ", re.MULTILINE)


def _train_teacher(workdir, data_dir, *flags) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the tests' own setting; a user's shell has none
    command = [
        sys.executable,
        "-m",
        "launch.train_teacher",
        "--config=configs/teacher.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *flags,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def test_the_console_shows_the_projects_lines_and_v1_brings_the_library_info_back(
    tmp_path, espeak_small_data_dir
):
    workdir, log_dir = tmp_path / "teacher", tmp_path / "logs"
    log_dir.mkdir()
    run = _train_teacher(workdir, espeak_small_data_dir, f"--log_dir={log_dir}")
    console = run.stdout + run.stderr
    assert run.returncode == 0, console[-4000:]
    for line in (
        "JAX process 0 of 1",
        "Training ",
        "step 2/6  loss",
        "eta ",
        "step 3 eval (EMA params): bits_per_sample",
        "step 6/6  loss",
        f"Saving step 6 in {workdir / 'checkpoints'}",
        f"Trained to step 6: checkpoints in {workdir / 'checkpoints'}",
    ):
        assert line in console, console[-4000:]
    for chatter in CHATTER:
        assert chatter not in console, console[-4000:]
    assert not INFO_PREFIX.search(console), console[-4000:]
    # The whole log, the libraries' INFO lines with it, went to the file the console names.
    (path,) = re.findall(r"Full log: (\S+)", console)
    log = open(path).read()
    assert "CheckpointManagerOptions" in log and "step 6/6  loss" in log

    # Resumed at its last step with -v 1: the libraries' INFO lines, in absl's format.
    verbose = _train_teacher(workdir, espeak_small_data_dir, "--verbosity=1")
    console = verbose.stdout + verbose.stderr
    assert verbose.returncode == 0, console[-4000:]
    assert re.search(r"^I\d{4} .*Resumed from .* at step 6", console, re.MULTILINE), console[-4000:]
    assert re.search(r"^I\d{4} .*Restoring checkpoint from", console, re.MULTILINE)
    assert "CheckpointManagerOptions" in console


def _record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_the_console_filter_passes_the_projects_lines_and_everyones_warnings():
    project = os.path.join(ROOT, "pwavenet")
    keep = common.ProjectLinesAndWarnings((os.path.join(project, ""),))
    library = "/usr/lib/python3/site-packages/orbax/checkpoint/checkpoint_manager.py"
    assert keep.filter(_record(os.path.join(project, "training", "loop.py"), logging.INFO))
    assert not keep.filter(_record(library, logging.INFO))
    assert not keep.filter(_record(project + "_elsewhere/x.py", logging.INFO))  # not a prefix
    assert keep.filter(_record(library, logging.WARNING))
    assert keep.filter(_record(library, logging.ERROR))


def test_a_c_library_info_line_is_told_from_its_warnings_and_errors():
    assert common.library_info_line("I0000 00:00:1796305447.396787    3397 port.cc:153] oneDNN")
    assert common.library_info_line(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    )
    assert not common.library_info_line("W0000 00:00:1796305447.396787 3397 x.cc:1] careful")
    assert not common.library_info_line("E0000 00:00:1796305504.201788 3397 util.cc:131] bad")
    assert not common.library_info_line("/x.py:3: DeprecationWarning: old")
