"""Tests for the whole-utterance readers, pwavenet.data.whole_utterances, on the small espeak
corpus: what each returns is checked against the utterances read straight from tfds and their
log-mel computed here on the full utterance (pwavenet.audio's reference is tested in
tests/test_audio_mel.py)."""

import numpy as np
import pytest

from data_helpers import espeak_small_config
from data_helpers import stored_utterances
from pwavenet import audio
from pwavenet.data import lookup
from pwavenet.data import whole_utterances
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    lookup.get_builder(espeak_small_config(espeak_small_data_dir))  # builds it on first use
    return espeak_small_data_dir


def _check_whole(got_audio, got_mel, example, length, mel_config):
    """The first `length` samples of a stored utterance and its full log-mel's frames there."""
    full = audio.pcm16_to_float(example["audio"])
    hop = mel_config.hop_length
    np.testing.assert_array_equal(got_audio, full[:length])
    np.testing.assert_allclose(
        got_mel, audio.log_mel_spectrogram(full, mel_config)[: length // hop], atol=1e-5
    )


def test_validation_utterances_are_whole_and_aligned(data_dir):
    c = espeak_small_config(data_dir)
    got = whole_utterances.validation_utterances(c, num_utterances=3, max_seconds=1.0)
    hop = c.mel.hop_length
    length = (22050 // hop) * hop
    assert got["audio"].shape == (3, length) and got["mel"].shape == (3, length // hop, 16)
    assert got["speaker"].dtype == np.int32 and got["mel"].dtype == np.float32
    validation = stored_utterances(data_dir, "validation")
    # The first three in file order that are at least that long.
    assert list(got["id"]) == [u for u, e in validation.items() if len(e["audio"]) >= length][:3]
    for i, uid in enumerate(got["id"]):
        _check_whole(got["audio"][i], got["mel"][i], validation[uid], length, c.mel)
        assert got["speaker"][i] == validation[uid]["speaker"]
    again = whole_utterances.validation_utterances(c, num_utterances=3, max_seconds=1.0)
    np.testing.assert_array_equal(again["audio"], got["audio"])
    # None is 10 s long: the longest fill in, all cut to the shortest's length (hop multiple).
    long = whole_utterances.validation_utterances(c, num_utterances=8, max_seconds=10.0)
    by_length = sorted(validation, key=lambda u: -len(validation[u]["audio"]))
    assert list(long["id"]) == by_length
    shortest = min(len(e["audio"]) for e in validation.values())
    assert long["audio"].shape == (8, shortest // hop * hop)
    with pytest.raises(ValueError, match="max_seconds or max_samples"):
        whole_utterances.validation_utterances(c, num_utterances=3)


def test_split_utterances_are_whole_in_file_order(data_dir):
    c = espeak_small_config(data_dir)
    hop = c.mel.hop_length
    validation = stored_utterances(data_dir, "validation")
    got = whole_utterances.split_utterances(c, "validation")
    assert [u["id"] for u in got] == list(validation)
    for u in got:
        example = validation[u["id"]]
        length = len(example["audio"]) // hop * hop
        assert u["audio"].dtype == np.float32 and u["mel"].dtype == np.float32
        _check_whole(u["audio"], u["mel"], example, length, c.mel)
        assert u["speaker"] == example["speaker"]
    # The first two, each cut to at most one second (then to a multiple of the hop).
    first = whole_utterances.split_utterances(c, "validation", limit=2, max_seconds=1.0)
    assert [u["id"] for u in first] == list(validation)[:2]
    for u in first:
        example = validation[u["id"]]
        length = min(len(example["audio"]), 22050) // hop * hop
        _check_whole(u["audio"], u["mel"], example, length, c.mel)


def test_split_mels_are_the_training_utterances_full_log_mels(data_dir):
    c = espeak_small_config(data_dir)
    train = stored_utterances(data_dir, "train")
    mels = list(whole_utterances.split_mels(c))  # the training split by default
    long_enough = [e for e in train.values() if len(e["audio"]) >= c.mel.n_fft]
    assert len(mels) == len(long_enough) == len(train)  # espeak-ng's utterances are >= 1 s
    for mel, example in zip(mels, long_enough):
        want = audio.log_mel_spectrogram(audio.pcm16_to_float(example["audio"]), c.mel)
        np.testing.assert_allclose(mel, want, atol=1e-5)
