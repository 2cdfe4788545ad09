"""Tests for the data sources, pwavenet.data.sources: the split names of each source, the
config.data checks and their messages, and the per-process batch. Nothing is built or read."""

import pytest

from configs import teacher as teacher_config
from pwavenet.data import sources


def _config(name="espeak_corpus/small", **data):
    config = teacher_config.get_config("tiny")
    config.data.name = name
    for k, v in data.items():
        setattr(config.data, k, v)
    return config


def test_ljspeech_and_vctk_carve_their_splits_out_of_train():
    for name in ("ljspeech", "vctk"):
        config = _config(name)
        assert sources.resolve_split(config, "train") == "train[:98%]"
        assert sources.resolve_split(config, "validation") == "train[98%:99%]"
        assert sources.resolve_split(config, "test") == "train[99%:]"
        assert sources.resolve_split(config, "train[:10]") == "train[:10]"  # passed on
    for name in ("espeak_corpus/small", "wav_folder", "kaldi_dir"):
        assert sources.resolve_split(_config(name), "validation") == "validation"
    assert sources.source_of("vctk") == ("vctk", sources.SOURCES["vctk"])
    assert sources.SOURCES["ljspeech"].speaker_key is None
    with pytest.raises(ValueError, match=r"config.data.name='librispeech' is not one of \["):
        sources.resolve_split(_config("librispeech"), "train")


def test_config_checks_name_the_field_and_a_valid_value():
    sources.check_config(_config())  # the tiny config is fine
    with pytest.raises(ValueError, match=r"crop_samples=500 .*hop_length=64 \(e.g. 512\)"):
        sources.check_config(_config(crop_samples=500))
    with pytest.raises(ValueError, match=r"bad_audio='drop' must be 'skip' or 'fail'"):
        sources.check_config(_config(bad_audio="drop"))
    with pytest.raises(ValueError, match=r"mel_source='npy' must be one of \('audio', 'file'\)"):
        sources.check_config(_config(mel_source="npy"))
    assert not sources.mels_from_files(_config())
    assert sources.mels_from_files(_config("wav_folder", mel_source="file"))


def test_mel_source_file_needs_wav_folder():
    config = _config(mel_source="file")
    refusal = r"only wav_folder stores.*data.name='espeak_corpus/small'"
    with pytest.raises(ValueError, match=refusal):
        sources.check_config(config)
    config.data.name = "wav_folder"
    config.data.mel_length_policy = "pad"
    with pytest.raises(ValueError, match=r"mel_length_policy='pad' must be one of"):
        sources.check_config(config)
    config.data.mel_length_policy = "trim"
    config.data.mel_length_tolerance = -1
    with pytest.raises(ValueError, match=r"mel_length_tolerance=-1 must be >= 0 frames"):
        sources.check_config(config)


def test_local_batch_size_splits_the_global_batch_over_every_device():
    assert sources.local_batch_size(32, 2, 8) == 16
    assert sources.local_batch_size(8, 1, 8) == 8
    with pytest.raises(ValueError, match=r"batch_size=12 .* 8 \(1 processes x 8 .*e.g. 16"):
        sources.local_batch_size(12, 1, 8)
    with pytest.raises(ValueError, match=r"batch_size=0 must be a positive multiple"):
        sources.local_batch_size(0, 1, 8)
