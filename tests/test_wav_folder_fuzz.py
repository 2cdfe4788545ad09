"""Fuzzing the wav folder reader: random bytes and random WAVE headers.

The property, for any file: `wav_folder.read_wav` either returns int16 mono audio with at
least one sample, consistent with what it reports having done (downmix, resample, clip), or
raises `BadAudioError` naming the file and one of the policy's rules. Nothing else: no other
exception, no crash, no unbounded memory. A folder of such files builds under bad_audio='skip'
with every file either an example or in the skip report.
"""

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import soundfile

from pwavenet.data.builders import wav_folder
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)
RATE = 22050
RULES = {"unreadable", "empty", "non-finite", "implausible rate"}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_read(path, sample_rate):
    """read_wav's contract on one file; returns 'ok' or the rule it refused by."""
    try:
        read = wav_folder.read_wav(str(path), sample_rate)
    except wav_folder.BadAudioError as e:
        assert e.rule in RULES, e
        assert e.path == str(path) and str(path) in str(e)
        return e.rule
    assert read.audio.dtype == np.int16 and read.audio.ndim == 1 and read.audio.size > 0
    info = soundfile.info(str(path))
    assert read.downmixed_from == (info.channels if info.channels > 1 else 0)
    if sample_rate is None or info.samplerate == sample_rate:
        assert read.resampled_from == 0 and read.audio.size == info.frames
    else:
        assert read.resampled_from == info.samplerate
        assert read.audio.size == -(-info.frames * sample_rate // info.samplerate)
    full_scale = (read.audio == -32768) | (read.audio == 32767)
    assert read.clipped_samples >= full_scale.sum()
    return "ok"


def _chunk(tag: bytes, payload: bytes, size: int | None = None) -> bytes:
    size = len(payload) if size is None else size
    return tag + struct.pack("<I", size & 0xFFFFFFFF) + payload + b"\0" * (len(payload) % 2)


@st.composite
def wave_files(draw):
    """A RIFF/WAVE file: half the time a well-formed header (PCM or float, 1 or 2 channels,
    a standard or implausible rate) over random sample bytes; otherwise a random fmt chunk
    (format tag, channels, rate, bit depth, block align, byte rate), a data chunk whose
    declared size may lie, optional extra chunks, and a truncation anywhere."""
    valid = draw(st.booleans())
    any_u16, any_u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
    if valid:
        fmt_tag, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]))
        channels = draw(st.sampled_from([1, 2]))
        rate = draw(st.sampled_from([RATE, 16000, 44100, 1, 999, 800_000]))
    else:
        fmt_tag = draw(st.sampled_from([1, 3, 6, 7, 0xFFFE, 0, 2, 0x55]) | any_u16)
        channels = draw(st.sampled_from([1, 2, 0, 3, 8]) | any_u16)
        rate = draw(st.sampled_from([RATE, 0, 1, 4_000_000, 0xFFFFFFFF]) | any_u32)
        bits = draw(st.sampled_from([8, 16, 24, 32, 64, 0, 12]) | any_u16)
    consistent = valid or draw(st.booleans())
    align = min(0xFFFF, max(1, channels * bits // 8)) if consistent else draw(any_u16)
    byte_rate = (rate * align) & 0xFFFFFFFF if consistent else draw(any_u32)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, byte_rate, align, bits)
    if not valid and draw(st.booleans()):  # a cbSize extension, as WAVE_FORMAT_EXTENSIBLE has
        fmt += draw(st.binary(max_size=24))
    samples = draw(st.binary(min_size=align if valid else 0, max_size=1200))
    body = b"WAVE" + _chunk(b"fmt ", fmt)
    if draw(st.booleans()):
        tag = draw(st.sampled_from([b"LIST", b"fact", b"junk"]))
        body += _chunk(tag, draw(st.binary(max_size=8)))
    if valid:
        return _chunk(b"RIFF", body + _chunk(b"data", samples))
    data_size = draw(st.sampled_from([None, 0, 0xFFFFFFFF, len(samples) + 4]) | any_u32)
    body += _chunk(b"data", samples, data_size)
    riff = _chunk(b"RIFF", body, draw(st.sampled_from([None, 0, 0xFFFFFFFF])))
    return riff[: draw(st.sampled_from([len(riff)]) | st.integers(0, len(riff)))]


@pytest.mark.parametrize("sample_rate", [None, RATE])
@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_are_audio_or_a_named_rule(tmp_path, sample_rate, data):
    path = tmp_path / "random.wav"
    path.write_bytes(data)
    _check_read(path, sample_rate)


@pytest.mark.parametrize("sample_rate", [None, RATE])
@FUZZ
@given(data=wave_files())
def test_random_wave_headers_are_audio_or_a_named_rule(tmp_path, sample_rate, data):
    path = tmp_path / "header.wav"
    path.write_bytes(data)
    _check_read(path, sample_rate)


def test_fuzzed_headers_reach_both_outcomes(tmp_path):
    """The header strategy is not degenerate: it yields readable files and each refusal a
    header can cause (a fixed seed: this checks the strategy, not the reader)."""
    outcomes = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(data=wave_files())
    def collect(data):
        path = tmp_path / "h.wav"
        path.write_bytes(data)
        outcomes.add(_check_read(path, RATE))

    collect()
    assert {"ok", "unreadable", "empty", "implausible rate"} <= outcomes, outcomes


def test_implausible_rates_are_refused_before_resampling(tmp_path):
    """A header claiming 1 Hz would make 22050 outputs per input sample (a 1 MB file would
    resample to 180 GB): refused by rule, naming the rate and the file."""
    path = tmp_path / "one_hz.wav"
    soundfile.write(path, np.zeros(4000, np.int16), 22050, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    raw[24:28] = struct.pack("<I", 1)  # the fmt chunk's sample rate
    path.write_bytes(bytes(raw))
    with pytest.raises(wav_folder.BadAudioError) as info:
        wav_folder.read_wav(str(path), RATE)
    assert info.value.rule == "implausible rate" and "1 Hz" in str(info.value)
    assert str(path) in str(info.value)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=st.lists(st.one_of(wave_files(), st.binary(max_size=300)), min_size=4, max_size=8))
def test_a_folder_of_fuzzed_files_builds_or_says_none_is_usable(tmp_path_factory, files):
    """Under bad_audio='skip', every file is an example or in the skip report, by rule; a
    folder with no usable file is refused with that report."""
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "wavs"
    folder.mkdir()
    good = np.round(8000 * np.sin(np.arange(3000) * 0.05)).astype(np.int16)
    soundfile.write(folder / "good.wav", good, RATE, subtype="PCM_16")
    for i, data in enumerate(files):
        (folder / f"f{i}.wav").write_bytes(data)
    builder = wav_folder.WavFolder(data_dir=str(root / "tfds"), manual_dir=str(folder))
    builder.download_and_prepare()
    skipped = dict(builder.info.metadata["build_report"]["skipped"])
    assert set(skipped.values()) <= RULES
    ids = set()
    for split in builder.info.splits:
        for ex in builder.as_dataset(split=split).as_numpy_iterator():
            ids.add(ex["id"].decode())
            assert ex["audio"].dtype == np.int16 and ex["audio"].size > 0
    names = {f"f{i}.wav" for i in range(len(files))} | {"good.wav"}
    assert ids | set(skipped) == names and not ids & set(skipped)
    np.testing.assert_array_equal(
        next(
            ex["audio"]
            for s in builder.info.splits
            for ex in builder.as_dataset(split=s).as_numpy_iterator()
            if ex["id"] == b"good.wav"
        ),
        good,
    )


def test_huge_float_samples_clip_to_full_scale_and_stay_finite(tmp_path):
    """A float file's absurd but finite samples (1e308: their channel mean overflows to inf,
    which resampling turns into NaN) end as full scale of their sign, with no floating-point
    overflow or invalid operation anywhere; the rest of the file reads as it would without
    them."""
    n = 2000
    clean = 0.25 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)
    spiked = np.stack([clean, clean], axis=1)
    spiked[500] = 1e308
    spiked[1000] = -1e300
    spiked_path, clean_path = tmp_path / "spiked.wav", tmp_path / "clean.wav"
    soundfile.write(spiked_path, spiked, 44100, subtype="DOUBLE")
    cleaned = spiked.copy()
    cleaned[[500, 1000]] = 0.0
    soundfile.write(clean_path, cleaned, 44100, subtype="DOUBLE")

    with np.errstate(over="raise", invalid="raise"):
        native = wav_folder.read_wav(str(spiked_path), None)
        resampled = wav_folder.read_wav(str(spiked_path), 22050)
    expected = np.round(clean * 32768).astype(np.int16)
    expected[500], expected[1000] = 32767, -32768
    np.testing.assert_array_equal(native.audio, expected)
    assert native.clipped_samples == 2

    # 44.1 -> 22.05 kHz: output m sits on input 2m. The resampling filter reaches about 34
    # input samples each side (16 zero crossings of a sinc at 0.945 of the new Nyquist), so
    # beyond 24 outputs of a spike the result is the clean file's.
    reference = wav_folder.read_wav(str(clean_path), 22050).audio
    assert resampled.audio[250] == 32767 and resampled.audio[500] == -32768
    away = np.ones(reference.size, bool)
    for m in (250, 500):
        away[m - 24 : m + 25] = False
    np.testing.assert_array_equal(resampled.audio[away], reference[away])
    assert resampled.clipped_samples >= 2
