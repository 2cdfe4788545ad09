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


# ------------------------------------------------------------- bad inputs, unwritable outputs


def _synthesize_command(workdir, source, out):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.synthesize",
            f"--workdir={workdir}",
            f"--input={source}",
            f"--output={out}",
            "--seed=4",
            "--noprogress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_a_wav_with_nan_samples_is_refused_as_a_wav_naming_the_file(workdir, vocoder, tmp_path):
    x = _speech_like(0.2, 22050)[:, 0]
    x[1000:1003] = np.nan
    source = tmp_path / "take_3.wav"
    soundfile.write(source, x, 22050, subtype="FLOAT")
    with pytest.raises(ValueError) as info:
        synthesize.vocode_files(workdir, str(source), str(tmp_path / "o.wav"), progress=False)
    message = str(info.value)
    assert message.startswith(f"{source}: as a wav, 3 of its {len(x)} samples are NaN")
    assert f"the first at {1000 / 22050:.3f} s" in message and "mel" not in message
    assert not (tmp_path / "o.wav").exists()
    # The library's own check of audio, without a file: the samples, not a mel, are named.
    with pytest.raises(ValueError, match=r"the audio has 3 NaN or infinite samples \(the first "
                       r"at sample 1000"):
        vocoder.mel(x)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((7, 16), np.nan, np.float32), "as an .npy mel, 112 of its values are NaN or "
         "infinite (the first in frame 0)"),
        (np.ones((7, 16), np.int64), "as an .npy mel, an array of dtype int64; expected "
         "floating point"),
        (np.zeros((7, 15), np.float32), "as an .npy mel, an array of shape (7, 15); expected "
         "(frames, 16)"),
        (np.zeros((0, 16), np.float32), "as an .npy mel, an array of shape (0, 16)"),
        (b"RIFF....WAVEfmt ", "not a readable .npy file"),
    ],
)
def test_a_bad_npy_mel_is_refused_naming_the_file_and_what_is_wrong(workdir, tmp_path, array,
                                                                    expected):
    source = tmp_path / "utt.npy"
    if isinstance(array, bytes):
        source.write_bytes(array)
    else:
        np.save(source, array)
    with pytest.raises(ValueError) as info:
        synthesize.vocode_files(workdir, str(source), str(tmp_path / "o.wav"), progress=False)
    assert str(info.value).startswith(f"{source}: ") and expected in str(info.value)
    assert not (tmp_path / "o.wav").exists()


def test_a_folder_goes_on_past_bad_files_and_exits_2_with_their_count(workdir, vocoder,
                                                                      tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    good = np.random.default_rng(3).normal(-2, 1.5, (11, 16)).astype(np.float32)
    np.save(source / "a_good.npy", good)
    wav = _speech_like(0.1, 22050)[:, 0]
    soundfile.write(source / "d_good.wav", wav, 22050, subtype="FLOAT")
    nan_wav = wav.copy()
    nan_wav[5] = np.inf
    soundfile.write(source / "b_inf.wav", nan_wav, 22050, subtype="FLOAT")
    np.save(source / "c_ints.npy", np.ones((5, 16), np.int32))
    out = tmp_path / "out"
    run = _synthesize_command(workdir, source, out)
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert skipped == [
        f"skipped: {source / 'b_inf.wav'}: as a wav, 1 of its {len(wav)} samples are NaN or "
        f"infinite (the first at 0.000 s); a wav's samples must be finite: re-export the audio "
        "(e.g. as 16-bit PCM).",
        f"skipped: {source / 'c_ints.npy'}: as an .npy mel, an array of dtype int32; expected "
        "floating point (float32): a log-mel in the model's definition (Vocoder.mel, "
        "pwavenet.audio.log_mel_spectrogram with the model's mel config).",
    ]
    assert lines[-1] == (
        f"error: 2 of 4 input files could not be vocoded (each named above, 'skipped: ...'); "
        f"the other 2 were written under {out}."
    )
    assert run.stdout.strip().splitlines()[-1].startswith("2 files vocoded by the student")
    assert sorted(p.name for p in out.iterdir()) == ["a_good.wav", "d_good.wav"]
    got, _ = soundfile.read(out / "a_good.wav", dtype="float32")
    np.testing.assert_allclose(got, vocoder.vocode(good, speaker=0, seed=4), atol=PCM16)
    got, _ = soundfile.read(out / "d_good.wav", dtype="float32")
    np.testing.assert_allclose(got, vocoder.vocode(vocoder.mel(wav), seed=4), atol=PCM16)


def _no_model_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was checked")


@pytest.mark.parametrize("input_kind", ["file", "folder"])
def test_an_output_under_a_file_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                   input_kind):
    """A parent that is a regular file stops even root, which a read-only folder does not."""
    np.save(tmp_path / "mel.npy", np.zeros((3, 16), np.float32))
    source = tmp_path / "mel.npy" if input_kind == "file" else tmp_path
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "wavs" / ("out.wav" if input_kind == "file" else "")
    monkeypatch.setattr(vocoder_lib, "load_vocoder", _no_model_load)
    with pytest.raises(ValueError) as info:
        synthesize.vocode_files("unused", str(source), str(out), progress=False)
    assert str(info.value) == (
        f"--output={out}: cannot be written, {tmp_path / 'notes.txt'} is a file, not a "
        "folder; choose an output path under a folder."
    )


def test_an_output_in_a_read_only_folder_is_refused_before_the_model_loads(tmp_path,
                                                                         monkeypatch):
    """The folder is made read-only; root, whom the mode does not stop, is told so by the
    access check, which is given the answer an ordinary user would get."""
    np.save(tmp_path / "mel.npy", np.zeros((3, 16), np.float32))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode)
        )
    monkeypatch.setattr(vocoder_lib, "load_vocoder", _no_model_load)
    try:
        with pytest.raises(ValueError) as info:
            synthesize.vocode_files(
                "unused", str(tmp_path / "mel.npy"), str(locked / "new" / "o.wav"), progress=False
            )
    finally:
        locked.chmod(0o700)
    assert str(info.value) == (
        f"--output={locked / 'new' / 'o.wav'}: cannot be written, the folder {locked} is not "
        "writable; choose a writable folder, or make it writable."
    )


def test_the_command_line_refuses_an_unwritable_output_in_one_line(tmp_path):
    """Before the model loads: the workdir given does not even exist."""
    np.save(tmp_path / "mel.npy", np.zeros((3, 16), np.float32))
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / "o.wav"
    run = _synthesize_command(tmp_path / "no_workdir", tmp_path / "mel.npy", out)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: --output={out}: cannot be written, {tmp_path / 'notes.txt'} is a file, not a "
        "folder; choose an output path under a folder."
    ]
