"""The data sources: which tfds data sets the pipeline reads, how each maps onto one example
format, what the split names mean, and the checks of config.data against them.

Data sets (config.data.name; 'name/config' picks a tfds builder config, e.g.
'espeak_corpus/small'):

    espeak_corpus  built locally on first use (pwavenet.data.builders.espeak_corpus)
    wav_folder     config.data.manual_dir, stored at config.mel.sample_rate (resampled)
    kaldi_dir      config.data.manual_dir, a Kaldi/ESPnet data directory (wav.scp, segments,
                   utt2spk; split subfolders or 90/5/5 by utterance id), stored likewise
    ljspeech       tfds 'ljspeech', 22050 Hz, one speaker, feature 'speech'
    vctk           tfds 'vctk', 48 kHz, 110 speakers, features 'speech' and 'speaker'

Every source is read as {'audio': int16 (T,), 'speaker': int32, 'id': string} (`read_split`),
plus 'mel' when the mels are stored files (config.data.mel_source='file', wav_folder only).
ljspeech and vctk have only a 'train' split: for them the split names 'train', 'validation'
and 'test' mean 'train[:98%]', 'train[98%:99%]' and 'train[99%:]' (tfds slices,
deterministic); any other split string is passed to tfds unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pwavenet import audio
from pwavenet import config_schema

tf = audio.import_tensorflow()
import tensorflow_datasets as tfds  # noqa: E402  (after TensorFlow is told to stay off GPUs)

_HOLDOUT_SPLITS = {"train": "train[:98%]", "validation": "train[98%:99%]", "test": "train[99%:]"}
MEL_SOURCES = ("audio", "file")
MEL_LENGTH_POLICIES = ("fail", "skip", "trim")


@dataclasses.dataclass(frozen=True)
class Source:
    """How a tfds data set maps onto {'audio', 'speaker', 'id'}."""

    audio_key: str = "audio"
    speaker_key: str | None = "speaker"
    split_aliases: tuple[tuple[str, str], ...] = ()
    built_locally: bool = False


SOURCES: dict[str, Source] = {
    "espeak_corpus": Source(built_locally=True),
    "wav_folder": Source(built_locally=True),
    "kaldi_dir": Source(built_locally=True),
    "ljspeech": Source(
        audio_key="speech", speaker_key=None, split_aliases=tuple(_HOLDOUT_SPLITS.items())
    ),
    "vctk": Source(
        audio_key="speech", speaker_key="speaker", split_aliases=tuple(_HOLDOUT_SPLITS.items())
    ),
}


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data set."""

    name: str
    sample_rate: int
    num_speakers: int


def source_of(name: str) -> tuple[str, Source]:
    """(base name, Source) of a config.data.name such as 'espeak_corpus/small'."""
    base = name.split("/")[0].split(":")[0]
    if base not in SOURCES:
        raise ValueError(f"config.data.name={name!r} is not one of {sorted(SOURCES)}.")
    return base, SOURCES[base]


def check_config(config: Any) -> None:
    """Raises ValueError for data/mel settings the pipeline cannot honour."""
    hop, crop = config.mel.hop_length, config.data.crop_samples
    if crop <= 0 or crop % hop:
        raise ValueError(
            f"config.data.crop_samples={crop} must be a positive multiple of "
            f"config.mel.hop_length={hop} (e.g. {max(1, round(crop / hop)) * hop})."
        )
    if config.data.bad_audio not in ("skip", "fail"):
        raise ValueError(
            f"config.data.bad_audio={config.data.bad_audio!r} must be 'skip' or 'fail'."
        )
    base, _ = source_of(config.data.name)
    mel_source = config_schema.setting(config.data, "data.mel_source")
    if mel_source not in MEL_SOURCES:
        raise ValueError(f"config.data.mel_source={mel_source!r} must be one of {MEL_SOURCES}.")
    if mel_source == "file":
        _check_stored_mel_settings(config, base)


def _check_stored_mel_settings(config: Any, base: str) -> None:
    """The settings of config.data.mel_source='file': a wav_folder source, a known length
    policy and a tolerance >= 0."""
    if base != "wav_folder":
        raise ValueError(
            f"config.data.mel_source='file' reads each wav's name.npy, which only "
            f"wav_folder stores, but config.data.name={config.data.name!r}. Use "
            "--config.data.name=wav_folder --config.data.manual_dir=<folder of name.wav + "
            "name.npy>, or --config.data.mel_source=audio."
        )
    policy = config_schema.setting(config.data, "data.mel_length_policy")
    if policy not in MEL_LENGTH_POLICIES:
        raise ValueError(
            f"config.data.mel_length_policy={policy!r} must be one of {MEL_LENGTH_POLICIES}."
        )
    if config_schema.setting(config.data, "data.mel_length_tolerance") < 0:
        raise ValueError(
            f"config.data.mel_length_tolerance={config.data.mel_length_tolerance} must be "
            ">= 0 frames."
        )


def mels_from_files(config: Any) -> bool:
    """True when the mels are the stored name.npy files (config.data.mel_source='file')."""
    return config_schema.setting(config.data, "data.mel_source") == "file"


def local_batch_size(global_batch: int, process_count: int, local_devices: int) -> int:
    """Per-process batch; the global batch must split evenly over every device of every host."""
    devices = process_count * local_devices
    if global_batch <= 0 or global_batch % devices:
        raise ValueError(
            f"config.train.batch_size={global_batch} must be a positive multiple of the number "
            f"of devices, {devices} ({process_count} processes x {local_devices} local devices); "
            f"use e.g. {devices * max(1, round(global_batch / devices))}."
        )
    return global_batch // process_count


def resolve_split(config: Any, split: str) -> str:
    """The tfds split string for a split name (ljspeech/vctk carve splits out of 'train')."""
    return dict(source_of(config.data.name)[1].split_aliases).get(split, split)


def read_split(
    builder: tfds.core.DatasetBuilder, config: Any, split: str, *, shuffle_seed: int | None
) -> tf.data.Dataset:
    """A split of the prepared `builder` as {'audio': int16 (T,), 'speaker': int32,
    'id': string} (and the stored 'mel' under mel_source='file'), in file order or, with a
    seed, with its files shuffled."""
    _, source = source_of(config.data.name)
    # No tfds auto-cache: partial reads (validation_utterances) would make it warn.
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None, read_config=read_config
    )
    stored_mels = mels_from_files(config)

    def standardize(example):
        speaker = (
            tf.cast(example[source.speaker_key], tf.int32)
            if source.speaker_key
            else tf.constant(0, tf.int32)
        )
        uid = example["id"] if "id" in example else tf.constant("")
        out = {"audio": example[source.audio_key], "speaker": speaker, "id": uid}
        if stored_mels:
            out["mel"] = example["mel"]
        return out

    return ds.map(standardize, num_parallel_calls=tf.data.AUTOTUNE)
