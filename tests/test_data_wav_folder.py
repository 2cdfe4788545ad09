"""Tests for the wav folder's tfds builder, pwavenet.data.builders.wav_folder: its splits,
speakers and samples, its bad-audio policies and its resampling.

Wav folders are written here with soundfile, including each kind of bad file.
"""

import os

import numpy as np
import pytest
import soundfile

import pwavenet.data.builders  # noqa: F401  registers the builders
from pwavenet import audio
from pwavenet.data.builders import wav_folder
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)
RATE = 22050


def _examples(builder, split):
    return list(builder.as_dataset(split=split).as_numpy_iterator())


# --------------------------------------------------------------------------- wav_folder


def _tone(n, rate=RATE, freq=440.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate) * 32767).astype(np.int16)


def _write_good_folder(root):
    """top.wav (speaker 0), alice/a*.wav (1), bob/sub/b*.wav (2): 10 files."""
    (root / "alice").mkdir(parents=True)
    (root / "bob" / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    soundfile.write(root / "top.wav", _tone(3000), RATE, subtype="PCM_16")
    for i in range(6):
        soundfile.write(root / "alice" / f"a{i}.WAV", _tone(4000 + i), RATE, subtype="PCM_16")
    for i in range(3):
        soundfile.write(
            root / "bob" / "sub" / f"b{i}.wav", _tone(2000 + i, freq=220), RATE, subtype="PCM_16"
        )
    soundfile.write(root / ".hidden" / "x.wav", _tone(100), RATE)
    (root / "alice" / "notes.txt").write_text("not audio")


def _build(tmp_path, folder, bad_audio="skip", rate=None):
    kwargs = {"config": wav_folder.config_for(rate)} if rate else {}
    builder = tfds.builder(
        "wav_folder", data_dir=str(tmp_path / "data"), bad_audio=bad_audio, **kwargs
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(folder))
    )
    return builder


def _all_examples(builder):
    return {
        e["id"].decode(): (split, e)
        for split in builder.info.splits
        for e in _examples(builder, split)
    }


def test_wav_folder_speakers_splits_and_exact_samples(tmp_path):
    folder = tmp_path / "wavs"
    _write_good_folder(folder)
    builder = _build(tmp_path, folder)
    assert builder.builder_config.name == "22050hz"
    assert list(builder.info.metadata["speakers"]) == [".", "alice", "bob"]
    examples = _all_examples(builder)
    assert sorted(examples) == sorted(
        ["top.wav", "bob/sub/b0.wav", "bob/sub/b1.wav", "bob/sub/b2.wav"]
        + [f"alice/a{i}.WAV" for i in range(6)]
    )
    for name, (split, e) in examples.items():
        speaker = 0 if name == "top.wav" else 1 if name.startswith("alice") else 2
        assert int(e["speaker"]) == speaker
        want, _ = soundfile.read(folder / name, dtype="int16")
        np.testing.assert_array_equal(e["audio"], want)  # 16-bit files pass through exactly
    splits = wav_folder.assign_splits(list(examples))
    for split, names in splits.items():
        assert {n for n, (s, _) in examples.items() if s == split} == set(names)
    assert all(splits[s] for s in ("train", "validation", "test"))

    # The same folder read through the builder keyword instead of the download config.
    other = tfds.builder("wav_folder", data_dir=str(tmp_path / "data2"), manual_dir=str(folder))
    other.download_and_prepare()
    assert sorted(_all_examples(other)) == sorted(examples)


def test_assign_splits_is_hash_based_stable_and_never_empty():
    names = [f"spk{i % 7}/utt{i:05d}.wav" for i in range(4000)]
    splits = wav_folder.assign_splits(names)
    sizes = {k: len(v) for k, v in splits.items()}
    # 90/5/5 within 5 binomial standard deviations.
    for split, p in (("train", 0.9), ("validation", 0.05), ("test", 0.05)):
        assert abs(sizes[split] - p * 4000) < 5 * np.sqrt(4000 * p * (1 - p))
    more = wav_folder.assign_splits(names + [f"new/x{i}.wav" for i in range(100)])
    for split, members in splits.items():
        assert set(members) <= set(more[split])  # adding files moves none
    assert wav_folder.assign_splits(list(reversed(names))) == splits
    for n in range(3, 12):
        small = wav_folder.assign_splits([f"f{i}.wav" for i in range(n)])
        assert all(small[s] for s in ("train", "validation", "test")), small
        assert sum(len(v) for v in small.values()) == n
    assert wav_folder.assign_splits(["a.wav", "b.wav"]) == {
        "train": ["a.wav", "b.wav"],
        "validation": [],
        "test": [],
    }


def _write_bad_files(root):
    """One file per rule of the bad-data policy, beside the good folder."""
    rng = np.random.RandomState(0)
    (root / "alice" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20)
    (root / "alice" / "empty.wav").write_bytes(b"")
    soundfile.write(
        root / "alice" / "no_samples.wav", np.zeros(0, np.int16), RATE, subtype="PCM_16"
    )
    nan = rng.uniform(-0.5, 0.5, 3000).astype(np.float32)
    nan[1234] = np.nan
    soundfile.write(root / "bob" / "nan.wav", nan, RATE, subtype="FLOAT")
    inf = rng.uniform(-0.5, 0.5, 3000).astype(np.float32)
    inf[10] = np.inf
    soundfile.write(root / "bob" / "inf.wav", inf, RATE, subtype="FLOAT")


def _write_fixable_files(root):
    left, right = _tone(3000), _tone(3000, freq=660, amplitude=0.25)
    soundfile.write(
        root / "alice" / "stereo.wav", np.stack([left, right], 1), RATE, subtype="PCM_16"
    )
    soundfile.write(
        root / "alice" / "rate16k.wav", _tone(16000, rate=16000), 16000, subtype="PCM_16"
    )
    loud = np.clip(_tone(3000).astype(np.int32) * 4, -32768, 32767).astype(np.int16)
    soundfile.write(root / "bob" / "clipped.wav", loud, RATE, subtype="PCM_16")
    return left, right


def test_wav_folder_skip_policy_skips_logs_and_counts(tmp_path, caplog):
    folder = tmp_path / "wavs"
    _write_good_folder(folder)
    _write_bad_files(folder)
    left, right = _write_fixable_files(folder)
    with caplog.at_level("WARNING"):
        builder = _build(tmp_path, folder, bad_audio="skip")
    report = builder.info.metadata["build_report"]
    assert dict(report["skipped"]) == {
        "alice/corrupt.wav": "unreadable",
        "alice/empty.wav": "empty",
        "alice/no_samples.wav": "empty",
        "bob/nan.wav": "non-finite",
        "bob/inf.wav": "non-finite",
    }
    for name, rule in report["skipped"].items():
        assert name in caplog.text and rule in caplog.text
    assert "skipped 5" in caplog.text  # the summary line

    examples = _all_examples(builder)
    assert len(examples) == 13 and not set(report["skipped"]) & set(examples)
    changed = {
        k: sorted(x for s in report["splits"].values() for x in s[k])
        for k in ("downmixed", "resampled", "clipped")
    }
    assert changed == {
        "downmixed": ["alice/stereo.wav"],
        "resampled": ["alice/rate16k.wav"],
        "clipped": ["bob/clipped.wav"],
    }
    assert sum(s["kept"] for s in report["splits"].values()) == 13

    # Stereo: the average of the channels.
    stereo = examples["alice/stereo.wav"][1]["audio"]
    want = np.round((left.astype(np.float64) + right) / 2)
    np.testing.assert_array_equal(stereo, want.astype(np.int16))
    # Wrong rate: resampled to 22050 Hz, same duration and pitch.
    resampled = examples["alice/rate16k.wav"][1]["audio"]
    assert len(resampled) == RATE
    interior = resampled[200:-200] / 32767.0
    t = np.arange(200, RATE - 200) / RATE
    np.testing.assert_allclose(interior, 0.5 * np.sin(2 * np.pi * 440 * t), atol=2e-3)
    # Clipped: kept as is.
    assert np.abs(examples["bob/clipped.wav"][1]["audio"].astype(int)).max() >= 32767


@pytest.mark.parametrize(
    "name, rule",
    [
        ("alice/corrupt.wav", "unreadable"),
        ("alice/empty.wav", "empty"),
        ("alice/no_samples.wav", "empty"),
        ("bob/nan.wav", "non-finite"),
        ("bob/inf.wav", "non-finite"),
    ],
)
def test_wav_folder_fail_policy_names_the_file_and_rule(tmp_path, name, rule):
    folder = tmp_path / "wavs"
    _write_good_folder(folder)
    _write_bad_files(folder)
    for other in (
        "alice/corrupt.wav",
        "alice/empty.wav",
        "alice/no_samples.wav",
        "bob/nan.wav",
        "bob/inf.wav",
    ):
        if other != name:
            os.remove(folder / other)
    with pytest.raises(ValueError) as info:
        _build(tmp_path, folder, bad_audio="fail")
    assert name in str(info.value) and f"'{rule}'" in str(info.value)
    assert "bad_audio='skip'" in str(info.value)


def test_wav_folder_fail_policy_keeps_fixable_files(tmp_path):
    folder = tmp_path / "wavs"
    _write_good_folder(folder)
    _write_fixable_files(folder)
    builder = _build(tmp_path, folder, bad_audio="fail", rate=16000)
    assert builder.info.features["audio"].sample_rate == 16000
    examples = _all_examples(builder)
    assert len(examples) == 13
    assert len(examples["alice/rate16k.wav"][1]["audio"]) == 16000  # already at 16 kHz
    assert len(examples["top.wav"][1]["audio"]) == -(-3000 * 16000 // RATE)  # resampled
    report = builder.info.metadata["build_report"]
    resampled = sorted(x for s in report["splits"].values() for x in s["resampled"])
    assert "alice/rate16k.wav" not in resampled and len(resampled) == 12


def test_wav_folder_errors(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no .wav files"):
        wav_folder.list_wavs(str(tmp_path / "empty_dir"))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        wav_folder.list_wavs(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="bad_audio"):
        tfds.builder("wav_folder", data_dir=str(tmp_path), bad_audio="ignore")


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    "orig, target", [(16000, 22050), (44100, 22050), (48000, 22050), (22050, 24000)]
)
def test_resample_keeps_in_band_tones(orig, target):
    n = orig // 2
    t = np.arange(n) / orig
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t + 1.0)
    y = wav_folder.resample(x, orig, target)
    assert len(y) == -(-n * target // orig)
    t_out = np.arange(len(y)) / target
    want = 0.3 * np.sin(2 * np.pi * 440 * t_out) + 0.2 * np.sin(2 * np.pi * 3000 * t_out + 1.0)
    edge = 100  # the filter sees zeros beyond the ends
    np.testing.assert_allclose(y[edge:-edge], want[edge:-edge], atol=1e-3)


def test_resample_removes_tones_above_the_new_nyquist():
    orig, target = 44100, 22050
    t = np.arange(orig) / orig
    y = wav_folder.resample(0.5 * np.sin(2 * np.pi * 15000 * t), orig, target)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 1e-3  # would alias to 7050 Hz


def test_resample_against_scipy():
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.RandomState(1)
    # Band-limited noise well inside both Nyquist frequencies.
    x = signal.resample_poly(rng.randn(8000), 1, 8) * 0.3
    ours = wav_folder.resample(x, 48000, 22050)
    theirs = signal.resample_poly(x, 147, 320)
    np.testing.assert_allclose(ours[300:-300], theirs[300:-300], atol=2e-3)


def test_float_files_use_the_soundfile_convention(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5], np.float32)
    soundfile.write(tmp_path / "f.wav", np.tile(x, 100), RATE, subtype="FLOAT")
    read = wav_folder.read_wav(str(tmp_path / "f.wav"), RATE)
    np.testing.assert_array_equal(read.audio[:6], [0, 16384, -16384, 32767, -32768, 32767])
    assert read.clipped_samples == 300
    # The pipeline then maps int16 onto the 16-bit bin centres.
    assert np.all(np.abs(audio.pcm16_to_float(read.audio)) <= 1.0)
