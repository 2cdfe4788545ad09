"""A run folder that moves, and a model as one file: a student finds its teacher relative to
itself (pwavenet.training.student_teacher_workdir), and `launch.export --format=bundle` writes
one file that `pwavenet.load_vocoder` loads with the run folder gone."""

import os
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from pwavenet import training
from pwavenet import vocoder as vocoder_lib
import vocoder_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def teacher():
    return vocoder_helpers.teacher_config_and_params()


@pytest.fixture
def run_folder(tmp_path, teacher, monkeypatch):
    """runs/espeak/{teacher,student} written from tmp_path as a user types it: the student's
    config names its teacher by the relative path 'runs/espeak/teacher'."""
    monkeypatch.chdir(tmp_path)
    config, params = teacher
    zeros = jax.tree.map(np.zeros_like, params)
    vocoder_helpers.write_workdir(str(tmp_path / "runs/espeak/teacher"), config, zeros, params)
    student_config = vocoder_helpers.student_config(teacher_workdir="runs/espeak/teacher")
    ema = vocoder_helpers.random_params(vocoder_lib.build_model(student_config), 0.5, seed=3)
    vocoder_helpers.write_workdir(str(tmp_path / "runs/espeak/student"), student_config, ema, ema)
    return tmp_path / "runs" / "espeak", params, ema


def _mel(frames, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(-2, 1.5, (frames, vocoder_helpers.N_MELS)).astype(np.float32)


def _same_tree(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_the_student_saves_its_teacher_resolved_and_relative_to_itself(run_folder):
    folder, _, _ = run_folder
    saved = training.load_config(str(folder / "student"))
    assert saved.teacher_workdir == str(folder / "teacher")  # absolute, not as typed
    assert saved.teacher_workdir_relative == os.path.join("..", "teacher")


def test_a_moved_run_folder_vocodes_from_another_directory(run_folder, tmp_path, monkeypatch):
    folder, teacher_params, ema = run_folder
    moved = tmp_path / "elsewhere" / "espeak_v1"
    shutil.move(str(folder), str(moved))
    monkeypatch.chdir(tmp_path / "elsewhere")
    student = vocoder_lib.load_vocoder(str(moved / "student"))
    _same_tree(student.variables["params"], ema)
    assert student.vocode(_mel(12), speaker=2).shape == (12 * 64,)
    teacher = vocoder_lib.load_vocoder(str(moved / "student"), model="teacher")
    _same_tree(teacher.variables["params"], teacher_params)
    # A copy finds its own teacher, not the original's (which still exists).
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.rmtree(moved / "teacher" / "checkpoints")
    teacher = vocoder_lib.load_vocoder(str(copy / "student"), model="teacher")
    _same_tree(teacher.variables["params"], teacher_params)


def test_a_missing_teacher_is_one_error_naming_both_paths(run_folder, tmp_path):
    folder, _, _ = run_folder
    moved = tmp_path / "moved_student"
    shutil.move(str(folder / "student"), str(moved))
    shutil.move(str(folder / "teacher"), str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError) as error:
        vocoder_lib.load_vocoder(str(moved), model="teacher")
    message = str(error.value)
    assert f"{tmp_path / 'teacher'}" in message  # relative to the moved student
    assert f"{folder / 'teacher'}" in message  # the path saved when it trained
    assert "\n" not in message


def test_a_bundle_vocodes_exactly_as_its_workdir_with_the_run_folder_gone(run_folder, tmp_path):
    folder, teacher_params, _ = run_folder
    bundle = str(tmp_path / "release" / "student.pwavenet")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.export",
            "--format=bundle",
            f"--workdir={folder / 'student'}",
            f"--output={bundle}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Wrote {bundle}: the student of" in run.stdout
    assert os.listdir(tmp_path / "release") == ["student.pwavenet"]  # one file
    mel = np.stack([_mel(70, 1), _mel(70, 2)])
    expected = vocoder_lib.load_vocoder(str(folder / "student")).vocode(mel, [1, 4], seed=5)
    shutil.rmtree(folder)

    student = vocoder_lib.load_vocoder(bundle)
    np.testing.assert_array_equal(student.vocode(mel, [1, 4], seed=5), expected)
    teacher = vocoder_lib.load_vocoder(bundle, model="teacher")
    _same_tree(teacher.variables["params"], teacher_params)
    description = training.read_bundle(bundle).description
    assert description["kind"] == "student" and description["step"] == 7
    assert description["mel"]["n_fft"] == 256 and description["normalization"] == "none"
    assert description["versions"]["jax"] == jax.__version__
    assert description["teacher"]["step"] == 7
    with pytest.raises(ValueError, match="holds step 7 only"):
        vocoder_lib.load_vocoder(bundle, step=3)


def test_a_teacher_bundle_and_files_that_are_not_bundles(run_folder, tmp_path):
    folder, teacher_params, _ = run_folder
    bundle = str(tmp_path / "teacher.pwavenet")
    description = training.write_bundle(str(folder / "teacher"), bundle)
    assert description["kind"] == "teacher" and "teacher" not in description
    teacher = vocoder_lib.load_vocoder(bundle)
    assert teacher.kind == "teacher"
    _same_tree(teacher.variables["params"], teacher_params)
    with pytest.raises(ValueError, match="is a teacher's bundle; use model='teacher'"):
        vocoder_lib.load_vocoder(bundle, model="student")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("x.txt", "not a model")
    with pytest.raises(ValueError, match="not a pwavenet bundle"):
        training.read_bundle(str(other))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vocoder_lib.load_vocoder(str(other))  # neither a bundle nor a workdir
