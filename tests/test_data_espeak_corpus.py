"""Tests for the embedded corpus's tfds builder, pwavenet.data.builders.espeak_corpus.

The corpus is really synthesized (espeak-ng is a test dependency, installed by CI).
"""

import hashlib
import os
import shutil

import numpy as np
import pytest

import pwavenet.data.builders  # noqa: F401  registers the builders
from pwavenet.data.builders import espeak_corpus
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)
RATE = 22050

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


def _examples(builder, split):
    return list(builder.as_dataset(split=split).as_numpy_iterator())


def _file_hashes(root):
    hashes = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


# ------------------------------------------------------------------------ espeak_corpus


def test_sentences_are_a_pure_function_of_speaker_and_index():
    first = [espeak_corpus.sentence(s, i) for s in range(8) for i in range(20)]
    again = [espeak_corpus.sentence(s, i) for s in range(8) for i in range(20)]
    assert first == again
    assert len(set(first)) > 120  # varied (the short phrases repeat)
    words = [len(t.split()) for t in first]
    assert min(words) <= 3 and max(words) >= 9
    assert espeak_corpus.sentence(0, 0, attempt=1) != espeak_corpus.sentence(0, 0)


def test_split_indices_are_80_10_10_and_never_empty():
    assert {k: len(v) for k, v in espeak_corpus.split_indices(50).items()} == {
        "train": 40,
        "validation": 5,
        "test": 5,
    }
    for n in range(3, 60):
        parts = espeak_corpus.split_indices(n)
        assert sorted(i for r in parts.values() for i in r) == list(range(n))
        assert all(len(r) >= 1 for r in parts.values())
    with pytest.raises(ValueError, match="utterances_per_speaker"):
        espeak_corpus.split_indices(2)


@needs_espeak
def test_espeak_small_builds_the_same_bytes_twice(tmp_path):
    hashes = []
    for run in ("a", "b"):
        builder = tfds.builder("espeak_corpus/small", data_dir=str(tmp_path / run))
        builder.download_and_prepare()
        hashes.append(_file_hashes(tmp_path / run))
    assert hashes[0] == hashes[1]
    assert any(name.endswith("tfrecord-00000-of-00001") for name in hashes[0])

    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 24,
        "validation": 8,
        "test": 8,
    }
    assert builder.info.features["speaker"].num_classes == 8
    assert builder.info.features["audio"].sample_rate == RATE
    assert "eSpeak NG" in builder.info.metadata["espeak_ng_version"]
    ids = set()
    for split in ("train", "validation", "test"):
        examples = _examples(builder, split)
        assert {int(e["speaker"]) for e in examples} == set(range(8))  # stratified
        for e in examples:
            assert e["audio"].dtype == np.int16 and e["audio"].ndim == 1
            assert 1.0 <= len(e["audio"]) / RATE <= 4.0
            assert np.abs(e["audio"]).max() > 1000  # speech, not silence
            ids.add(e["id"])
    assert len(ids) == 40


@needs_espeak
def test_espeak_default_corpus_size_and_speakers(tmp_path):
    builder = tfds.builder("espeak_corpus", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 320,
        "validation": 40,
        "test": 40,
    }
    lengths, speakers = [], []
    for split in ("train", "validation", "test"):
        for e in _examples(builder, split):
            lengths.append(len(e["audio"]))
            speakers.append(int(e["speaker"]))
    assert np.bincount(speakers).tolist() == [50] * 8
    seconds = np.asarray(lengths) / RATE
    assert seconds.min() >= 1.0 and seconds.max() <= 4.0
    assert 10 * 60 < seconds.sum() < 25 * 60


def test_espeak_missing_says_how_to_install(tmp_path):
    builder = tfds.builder(
        "espeak_corpus/small", data_dir=str(tmp_path), espeak_binary="espeak-ng-not-installed-here"
    )
    with pytest.raises(RuntimeError) as info:
        builder.download_and_prepare()
    message = str(info.value)
    assert "espeak-ng-not-installed-here" in message
    assert "sudo apt-get install espeak-ng" in message and "brew install espeak-ng" in message
