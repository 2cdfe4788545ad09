"""Tests for the bad-data policies, pwavenet.data.screening, on hand-made examples: too-short
utterances dropped (each logged once, however many epochs meet it) or refused by name, and a
stored mel checked against its audio's frame count under each length policy.

The pipelines and whole-utterance readers apply them to real data sets: see
tests/test_data_pipelines.py (too short) and tests/test_finetune.py (stored mels).
"""

import numpy as np
import pytest
import tensorflow as tf

from configs import teacher as teacher_config
from pwavenet.data import screening

HOP, N_MELS = 64, 16  # the tiny config's


def _config(**data):
    config = teacher_config.get_config("tiny")
    config.data.name = "wav_folder"
    config.data.mel_source = "file"
    config.data.manual_dir = "/corpus"
    for k, v in data.items():
        setattr(config.data, k, v)
    return config


def _utterances(lengths):
    """tf.data of {'audio': int16 (T,), 'id'} with the given lengths, ids 'u0', 'u1', ..."""
    examples = [(f"u{i}", np.zeros(n, np.int16)) for i, n in enumerate(lengths)]
    return tf.data.Dataset.from_generator(
        lambda: ({"id": uid, "audio": a} for uid, a in examples),
        output_signature={
            "id": tf.TensorSpec([], tf.string),
            "audio": tf.TensorSpec([None], tf.int16),
        },
    )


def test_too_short_utterances_are_skipped_once_each_or_refused_by_name(caplog):
    config = _config(crop_samples=512)
    dropped = screening.too_short(config)
    assert dropped.min_samples == 512 and dropped.what == "config.data.crop_samples"
    ds = _utterances([100, 700, 50, 512]).filter(dropped.keep).repeat(3)
    kept = [len(e["audio"]) for e in screening.numpy_batches(ds, dropped)]
    assert kept == [700, 512] * 3
    assert dropped.ids == {"u0": 100, "u2": 50} and len(dropped) == 2
    assert caplog.text.count("dropping utterance 'u0'") == 1  # three epochs, one line

    failing = screening.too_short(_config(crop_samples=512, bad_audio="fail"))
    ds = _utterances([700, 100]).filter(failing.keep)
    with pytest.raises(ValueError, match=r"Utterance 'u1' has 100 samples, fewer than config"):
        list(screening.numpy_batches(ds, failing))


def test_a_stored_mel_within_the_tolerance_is_cut_with_its_audio_to_the_shorter():
    check = screening.MelFileCheck(_config(mel_length_tolerance=2))
    audio = np.arange(10 * HOP + 5, dtype=np.int16)  # 10 frames and 5 samples
    for frames in (8, 10, 12):
        mel = np.random.RandomState(frames).randn(frames, N_MELS).astype(np.float32)
        got_audio, got_mel = check.numpy_pair({"id": b"a/x.wav", "audio": audio, "mel": mel})
        shorter = min(frames, 10)
        np.testing.assert_array_equal(got_audio, audio[: shorter * HOP])
        np.testing.assert_array_equal(got_mel, mel[:shorter])
    assert not check.skipped and not check.trimmed


@pytest.mark.parametrize("policy", ["fail", "skip", "trim"])
def test_a_stored_mel_beyond_the_tolerance_follows_the_policy(policy, caplog):
    check = screening.MelFileCheck(_config(mel_length_tolerance=2, mel_length_policy=policy))
    audio = np.zeros(10 * HOP, np.int16)
    example = {"id": b"a/x.wav", "audio": audio, "mel": np.zeros((14, N_MELS), np.float32)}
    if policy == "fail":
        with pytest.raises(ValueError, match=r"^/corpus/a/x\.npy: 14 mel frames, .* 10 frames"):
            check.numpy_pair(example)
        return
    for _ in range(2):
        pair = check.numpy_pair(example)
    record = check.skipped if policy == "skip" else check.trimmed
    assert record == {"a/x.wav": (14, 10)}
    assert caplog.text.count("/corpus/a/x.npy: 14 mel frames") == 1  # logged once
    if policy == "skip":
        assert pair is None
    else:
        assert pair[0].shape == (10 * HOP,) and pair[1].shape == (10, N_MELS)


def test_a_stored_mel_of_other_bands_is_refused_naming_the_file():
    check = screening.MelFileCheck(_config(mel_length_policy="trim"))
    wrong = {"id": b"x.wav", "audio": np.zeros(10 * HOP, np.int16)}
    with pytest.raises(ValueError, match=r"^/corpus/x\.npy: mel of shape \(10, 8\) has 8 mel"):
        check.numpy_pair(dict(wrong, mel=np.zeros((10, 8), np.float32)))
    with pytest.raises(ValueError, match=r"It looks transposed: save mel\.T"):
        check.numpy_pair(dict(wrong, mel=np.zeros((N_MELS, 10), np.float32)))
