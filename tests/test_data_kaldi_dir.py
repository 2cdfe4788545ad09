"""Tests for the kaldi_dir data set (pwavenet.data.builders.kaldi_dir): a Kaldi/ESPnet data
directory written here (wavs via soundfile, wav.scp, segments, utt2spk), built through
pwavenet.data.lookup and read by the pipelines; each utterance's audio is checked against
numpy slicing of the written samples."""


import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from configs import teacher as teacher_config
from pwavenet.data import lookup
from pwavenet.data import pipelines
from pwavenet.data.builders import wav_folder

tfds.display_progress_bar(False)
RATE = 22050


def _wav(path, seconds, seed):
    pcm = np.random.default_rng(seed).integers(-9000, 9000, int(seconds * RATE)).astype(np.int16)
    soundfile.write(path, pcm, RATE, subtype="PCM_16")
    return pcm


def _lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _config(data_dir, build_dir, **data):
    config = teacher_config.get_config("tiny")
    config.data.update(name="kaldi_dir", manual_dir=str(data_dir), data_dir=str(build_dir), **data)
    return config


def _utterances(builder, split):
    return {
        e["id"].decode(): (e["audio"], int(e["speaker"]))
        for e in builder.as_dataset(split=split).as_numpy_iterator()
    }


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """An ESPnet-style data/ with train (two recordings cut by segments, paths relative to the
    data directory) and dev (one whole recording, absolute path) split folders."""
    root = tmp_path_factory.mktemp("kaldi")
    wavs = root / "wavs"
    wavs.mkdir()
    pcm = {name: _wav(wavs / f"{name}.wav", seconds, i)
           for i, (name, seconds) in enumerate([("r1", 1.5), ("r2", 1.0), ("r3", 0.8)])}
    data = root / "data"
    (data / "train").mkdir(parents=True)
    (data / "dev").mkdir()
    _lines(data / "train" / "wav.scp", ["r1 ../../wavs/r1.wav", "r2 ../../wavs/r2.wav"])
    _lines(data / "train" / "segments", ["u1 r1 0.10 0.55", "u2 r1 0.60 1.30", "u3 r2 0.25 -1"])
    _lines(data / "train" / "utt2spk", ["u1 bob", "u2 alice", "u3 bob"])
    _lines(data / "dev" / "wav.scp", [f"r3 {wavs / 'r3.wav'}"])
    _lines(data / "dev" / "utt2spk", ["r3 carol"])
    return root, data, pcm


def test_split_folders_segments_and_speakers(recipe):
    root, data, pcm = recipe
    config = _config(data, root / "built", train_split="train", eval_split="dev")
    builder = lookup.get_builder(config)
    train = _utterances(builder, "train")
    assert sorted(train) == ["u1", "u2", "u3"]
    cuts = {"u1": ("r1", 0.10, 0.55), "u2": ("r1", 0.60, 1.30), "u3": ("r2", 0.25, None)}
    for utt, (reco, start, end) in cuts.items():
        expected = pcm[reco][round(start * RATE) : None if end is None else round(end * RATE)]
        np.testing.assert_array_equal(train[utt][0], expected)
    # Speakers in sorted name order over all splits: alice 0, bob 1, carol 2.
    assert {u: s for u, (_, s) in train.items()} == {"u1": 1, "u2": 0, "u3": 1}
    dev = _utterances(builder, "dev")
    np.testing.assert_array_equal(dev["r3"][0], pcm["r3"])
    assert dev["r3"][1] == 2
    assert lookup.data_info(config, builder).num_speakers == 3
    # The training pipeline runs on it.
    config.data.crop_samples = 512
    batch = next(pipelines.create_datasets(config, process_index=0, process_count=1,
                                                local_device_count=1).train_from(0))
    assert batch["audio"].shape == (8, 512)


def test_one_list_splits_90_5_5_by_utterance_id(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pcm = {f"utt{i:02d}": _wav(data / f"utt{i:02d}.wav", 0.1, i) for i in range(20)}
    _lines(data / "wav.scp", [f"{u} {u}.wav" for u in pcm])  # relative to the directory
    builder = lookup.get_builder(_config(data, tmp_path / "built"))
    expected = wav_folder.assign_splits(sorted(pcm))
    for split in ("train", "validation", "test"):
        got = _utterances(builder, split)
        assert sorted(got) == sorted(expected[split]) and got
        for utt, (samples, speaker) in got.items():
            np.testing.assert_array_equal(samples, pcm[utt])
            assert speaker == 0


def test_a_piped_command_is_refused_naming_the_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _wav(data / "a.wav", 0.2, 0)
    _lines(data / "wav.scp", ["a a.wav", "b sox b.flac -t wav - |"])
    with pytest.raises(ValueError) as info:
        lookup.get_builder(_config(data, tmp_path / "built"))
    assert str(info.value) == (
        f"kaldi_dir: {data / 'wav.scp'} line 2: 'b' is a piped command ('sox b.flac -t wav - |'); "
        "pwavenet reads audio files only: run the command to write a wav file and list its path "
        "instead."
    )
    assert not (tmp_path / "built" / "kaldi_dir").exists() or not any(
        p.name.endswith(".tfrecord") for p in (tmp_path / "built").rglob("*"))


def test_bad_entries_are_skipped_or_fail_by_the_policy(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pcm = {name: _wav(data / f"{name}.wav", 0.5, i) for i, name in enumerate("abc")}
    _lines(data / "wav.scp", ["a a.wav", "b b.wav", "c c.wav", "gone gone.wav"])
    _lines(data / "segments", [
        "a1 a 0.0 0.2", "a2 a 0.2 0.45",
        "b1 b 0.1 0.9",      # 0.4 s past the end of a 0.5 s recording
        "b2 b 0.0 0.53",     # within 0.1 s of the end: cut to it
        "c1 c 0.0 0.3", "c2 c 0.3 -1",
        "g1 gone 0 1",       # its file does not exist
        "x1 nowhere 0 1",    # its recording is not in wav.scp
    ])
    config = _config(data, tmp_path / "built")
    builder = lookup.get_builder(config)
    got = {}
    for split in builder.info.splits:
        got.update(_utterances(builder, split))
    assert sorted(got) == ["a1", "a2", "b2", "c1", "c2"]
    np.testing.assert_array_equal(got["b2"][0], pcm["b"])
    np.testing.assert_array_equal(got["a2"][0], pcm["a"][round(0.2 * RATE) : round(0.45 * RATE)])
    assert builder.info.metadata["build_report"]["skipped"] == {  # and each was logged
        "b1": "bad segment", "g1": "missing file", "x1": "unknown recording"}
    with pytest.raises(ValueError, match=r"utterance 'x1' is unusable by the rule 'unknown "
                       r"recording' \('nowhere' is not in .*wav.scp\) and bad_audio='fail'"):
        lookup.get_builder(_config(data, tmp_path / "built_fail", bad_audio="fail"))
    _lines(data / "segments", ["a1 a 0.0 0.2", "b1 b 0.1 0.9"])
    with pytest.raises(ValueError, match=r"utterance 'b1' is unusable by the rule 'bad segment' "
                       r"\(b1: \[0.1, 0.9\) s of .*b.wav, which lasts 0.500 s\)"):
        lookup.get_builder(_config(data, tmp_path / "built_fail2", bad_audio="fail"))


def test_kaldi_dir_needs_a_manual_dir(tmp_path):
    with pytest.raises(ValueError, match=r"set --config.data.manual_dir=<the folder holding"):
        lookup.get_builder(_config("", tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no wav.scp in"):
        lookup.get_builder(_config(tmp_path, tmp_path / "b"))
