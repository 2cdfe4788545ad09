"""Tests for pwavenet.jobs.synthesize and launch.synthesize: files and folders of wavs and mels.

Every written wav is checked against the Vocoder API on the same mel, and a wav at another
rate or with two channels against scipy's resampling and numpy's mean computed here.
"""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile
from scipy import signal

from pwavenet.jobs import synthesize
from pwavenet import vocoder as vocoder_lib
import vocoder_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCM16 = 1.0 / 32768  # the written files' quantization step


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    config, params = vocoder_helpers.teacher_config_and_params()
    root = tmp_path_factory.mktemp("synthesize")
    _, student_dir, _ = vocoder_helpers.write_workdirs(root, config, params)
    return student_dir


@pytest.fixture(scope="module")
def vocoder(workdir):
    return vocoder_lib.load_vocoder(workdir)


def _speech_like(seconds, rate, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    x = x[:, None] + 0.02 * rng.normal(size=(len(t), channels))
    return x.astype(np.float32)


def test_a_stereo_16khz_wav_is_downmixed_and_resampled_with_one_notice(workdir, vocoder, tmp_path):
    stereo = _speech_like(0.4, 16000, channels=2)
    source = tmp_path / "stereo16k.wav"
    soundfile.write(source, stereo, 16000, subtype="FLOAT")
    notices = []
    result = synthesize.vocode_files(
        workdir, str(source), str(tmp_path / "out.wav"), progress=False, notify=notices.append
    )
    assert len(notices) == 1
    assert "stereo16k.wav" in notices[0] and "22050 Hz" in notices[0]
    assert "downmixed from 2 channels" in notices[0] and "resampled from 16000 Hz" in notices[0]
    written, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 22050
    mono = signal.resample_poly(stereo.mean(axis=1), 441, 320)  # 22050 / 16000 = 441 / 320
    expected = vocoder.vocode(vocoder.mel(mono), speaker=0, seed=0)
    assert len(written) == len(mono) // 64 * 64
    np.testing.assert_allclose(written, expected, atol=PCM16)
    assert np.std(expected) > 0.01
    assert result["files"] == 1 and result["audio_seconds"] == pytest.approx(len(written) / rate)


def test_an_npy_mel_and_a_file_into_an_existing_folder(workdir, vocoder, tmp_path):
    mel = np.random.default_rng(1).normal(-2, 1.5, (1, 37, 16)).astype(np.float32)
    np.save(tmp_path / "mel.npy", mel)
    out = tmp_path / "out"
    out.mkdir()
    notices = []
    synthesize.vocode_files(
        workdir,
        str(tmp_path / "mel.npy"),
        str(out),
        speaker=3,
        seed=5,
        progress=False,
        notify=notices.append,
    )
    written, _ = soundfile.read(out / "mel.wav", dtype="float32")
    np.testing.assert_allclose(written, vocoder.vocode(mel[0], speaker=3, seed=5), atol=PCM16)
    assert notices == []  # nothing converted


def test_a_folder_keeps_its_relative_names_from_the_command_line(workdir, vocoder, tmp_path):
    source = tmp_path / "in"
    (source / "a" / "b").mkdir(parents=True)
    rng = np.random.default_rng(2)
    mels = {
        "a/b/deep.npy": rng.normal(-2, 1.5, (20, 16)).astype(np.float32),
        "top.npy": rng.normal(-2, 1.5, (9, 16)).astype(np.float32),
    }
    for name, mel in mels.items():
        np.save(source / name, mel)
    wav = _speech_like(0.2, 22050)[:, 0]
    soundfile.write(source / "a" / "speech.wav", wav, 22050, subtype="FLOAT")
    (source / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.synthesize",
            f"--workdir={workdir}",
            f"--input={source}",
            f"--output={out}",
            "--seed=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    seconds = (20 + 9 + len(wav) // 64) * 64 / 22050
    assert summary.startswith(f"3 files vocoded by the student: {seconds:.2f} s of audio in ")
    assert "real-time factor" in summary
    assert "vocoding" in run.stderr  # the progress bar
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a/b/deep.wav", "a/speech.wav", "top.wav"]
    for name, mel in mels.items():
        got, _ = soundfile.read(out / name.replace(".npy", ".wav"), dtype="float32")
        np.testing.assert_allclose(got, vocoder.vocode(mel, speaker=0, seed=2), atol=PCM16)
    got, _ = soundfile.read(out / "a" / "speech.wav", dtype="float32")
    np.testing.assert_allclose(got, vocoder.vocode(vocoder.mel(wav), seed=2), atol=PCM16)


def test_mistakes_end_with_one_error_line(workdir, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((5, 80), np.float32))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.synthesize",
            f"--workdir={workdir}",
            f"--input={tmp_path / 'wide.npy'}",
            f"--output={tmp_path / 'x.wav'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "expected (frames, 16)" in last
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .wav or .npy files"):
        synthesize.plan(str(tmp_path / "empty"), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="name a .wav file"):
        synthesize.plan(str(tmp_path / "wide.npy"), str(tmp_path / "x.mp3"))


def test_step_chooses_the_workdirs_own_checkpoint_and_is_refused_for_a_students_teacher(workdir):
    """--step picks a checkpoint of --workdir's own model; with --model=teacher on a student's
    workdir (which loads the teacher's latest) it would do nothing, so it is refused."""
    teacher_dir = os.path.join(os.path.dirname(workdir), "teacher")  # write_workdirs' layout
    _, teacher_params = vocoder_helpers.teacher_config_and_params()  # its EMA at step 7
    chosen = vocoder_lib.load_vocoder(teacher_dir, step=7, model="teacher")
    assert chosen.kind == "teacher"
    jax.tree.map(np.testing.assert_array_equal, chosen.variables["params"], teacher_params)
    with pytest.raises(FileNotFoundError, match="No checkpoint for step 3"):
        vocoder_lib.load_vocoder(teacher_dir, step=3)
    with pytest.raises(ValueError, match=re.escape(f"pass its workdir ({teacher_dir})")):
        vocoder_lib.load_vocoder(workdir, step=7, model="teacher")
