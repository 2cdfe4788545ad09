"""The tfds builder of config.data, found, checked against the config and prepared.

`get_builder` returns it built or downloaded: espeak_corpus, wav_folder and kaldi_dir are built
locally on first use, under a file lock in the data_dir so that processes sharing it build
once; ljspeech and vctk are downloaded by tfds as `tfds.load` does, after the sample-rate check,
so that a mismatch costs no download. Nothing is resampled in TensorFlow: the audio's sample
rate must equal config.mel.sample_rate (vctk at 48 kHz with the 22050 Hz defaults is an error
that says what to change; wav_folder and kaldi_dir resample when they build).

A local build is quiet unless absl's verbosity is raised (`-v 1`): no tfds progress bars and
no notice of tfds's own deprecated `FeatureConnector.dtype` use (`quiet_tfds`). A download
(ljspeech, vctk) drops the notice too but keeps tfds's progress bars, the sign of life of a
download of gigabytes.
"""

from __future__ import annotations

import contextlib
import logging as python_logging
import os
from typing import Any

import numpy as np
from absl import logging

from pwavenet import audio
from pwavenet.data import builders as pw_datasets
from pwavenet.data import sources

audio.import_tensorflow()
import tensorflow_datasets as tfds  # noqa: E402  (after TensorFlow is told to stay off GPUs)


def get_builder(config: Any, *, prepare: bool = True) -> tfds.core.DatasetBuilder:
    """The tfds builder of config.data, its features checked, prepared (built or downloaded)
    unless prepare=False."""
    sources.check_config(config)
    _, source = sources.source_of(config.data.name)
    kwargs, download_config = _builder_arguments(config)

    def make_builder():
        return tfds.builder(config.data.name, data_dir=config.data.data_dir or None, **kwargs)

    builder = make_builder()
    _check_features(config, builder, source)
    if not prepare:
        return builder
    with quiet_tfds(progress_bars=source.built_locally):
        if not source.built_locally:
            builder.download_and_prepare(download_config=download_config)
            return builder
        # Processes sharing a data_dir (several on one host) take turns; the first builds.
        with _file_lock(
            os.path.join(os.fspath(builder.data_dir_root), f".{builder.name}.build.lock")
        ):
            builder = make_builder()  # sees what another process may have just built
            builder.download_and_prepare(download_config=download_config)
    return builder


def _builder_arguments(
    config: Any,
) -> tuple[dict[str, Any], tfds.download.DownloadConfig | None]:
    """(keyword arguments of tfds.builder, download config) for config.data: the local
    builders' config for config.mel.sample_rate, bad-audio policy and manual_dir."""
    base, _ = sources.source_of(config.data.name)
    kwargs: dict[str, Any] = {}
    download_config = None
    if base == "wav_folder":
        if "/" not in config.data.name:
            kwargs["config"] = pw_datasets.wav_folder.config_for(
                config.mel.sample_rate, mels=sources.mels_from_files(config)
            )
        kwargs["bad_audio"] = config.data.bad_audio
        if config.data.manual_dir:
            download_config = tfds.download.DownloadConfig(manual_dir=config.data.manual_dir)
    elif base == "kaldi_dir":
        if not config.data.manual_dir:
            raise ValueError(
                "config.data.name='kaldi_dir' reads a Kaldi/ESPnet data directory: set "
                "--config.data.manual_dir=<the folder holding wav.scp, or its split folders>."
            )
        if "/" not in config.data.name:
            kwargs["config"] = pw_datasets.kaldi_dir.config_for(config.mel.sample_rate)
        kwargs["bad_audio"] = config.data.bad_audio
        download_config = tfds.download.DownloadConfig(manual_dir=config.data.manual_dir)
    return kwargs, download_config


def _check_features(
    config: Any, builder: tfds.core.DatasetBuilder, source: sources.Source
) -> None:
    """Refuses audio at another rate than config.mel.sample_rate or not int16, and
    mel_source='file' on a builder config that stores no mels."""
    feature = builder.info.features[source.audio_key]
    rate = getattr(feature, "sample_rate", None)
    if rate != config.mel.sample_rate:
        raise ValueError(_rate_message(config.data.name, rate, config.mel.sample_rate))
    if feature.np_dtype != np.int16:
        raise ValueError(
            f"{config.data.name}: feature {source.audio_key!r} is "
            f"{feature.np_dtype}; the pipeline reads int16 audio."
        )
    if sources.mels_from_files(config) and "mel" not in builder.info.features:
        raise ValueError(
            f"config.data.mel_source='file' but the builder config of {config.data.name!r} "
            "stores no mels; name one that does (e.g. wav_folder/22050hz_mels), or just "
            "--config.data.name=wav_folder."
        )


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive advisory lock on `path` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# tfds's Audio feature reads its own deprecated `FeatureConnector.dtype` when it writes a data
# set's info (tensorflow_datasets 4.9, features/audio_feature.py `to_json_content`), and tfds
# then logs this notice: nothing in our builders can avoid it.
DTYPE_NOTICE = "`FeatureConnector.dtype` is deprecated"


class _DtypeNotice(python_logging.Filter):
    """Drops tfds's notice that `FeatureConnector.dtype` is deprecated, and nothing else."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(DTYPE_NOTICE)


@contextlib.contextmanager
def quiet_tfds(*, progress_bars: bool = True):
    """tfds's chatter off while building, unless absl's verbosity is 1 or more (`-v 1`).

    Drops tfds's `FeatureConnector.dtype` deprecation notice (DTYPE_NOTICE) from absl's logger
    inside the block. progress_bars: also set tfds's progress bars ("Generating splits",
    "Shuffling") to follow the verbosity; tfds keeps that setting for the process.
    """
    verbose = logging.get_verbosity() >= 1
    if progress_bars:
        tfds.display_progress_bar(verbose)
    if verbose:
        yield
        return
    notice = _DtypeNotice()
    logger = logging.get_absl_logger()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def _rate_message(name: str, rate: int | None, mel_rate: int) -> str:
    suggestion = ""
    if rate:
        factor = rate / mel_rate
        hop = 2 ** max(0, round(np.log2(256 * factor)))
        n_fft = 4 * hop
        suggestion = (
            f" Either set --config.mel.sample_rate={rate} with features scaled to it, e.g. "
            f"--config.mel.n_fft={n_fft} --config.mel.win_length={n_fft} "
            f"--config.mel.hop_length={hop} (and config.model.upsample_strides multiplying to "
            f"{hop}), or resample the audio to {mel_rate} Hz: convert the wav files (sox in.wav "
            f"-r {mel_rate} out.wav) or use --config.data.name=wav_folder "
            "--config.data.manual_dir=<folder of the wavs>, which resamples to "
            "config.mel.sample_rate when it builds."
        )
    return (
        f"{name} audio is sampled at {rate} Hz but config.mel.sample_rate={mel_rate}; the "
        f"input pipeline does not resample.{suggestion}"
    )


def data_info(
    config: Any, builder: tfds.core.DatasetBuilder | None = None
) -> sources.DataInfo:
    """Name, sample rate and speaker count of config.data."""
    builder = builder or get_builder(config)
    _, source = sources.source_of(config.data.name)
    num_speakers = 1
    if source.speaker_key:
        feature = builder.info.features[source.speaker_key]
        if isinstance(feature, tfds.features.ClassLabel):
            num_speakers = feature.num_classes
        else:
            names = (builder.info.metadata or {}).get("speakers") or [None]
            num_speakers = len(names)
    return sources.DataInfo(config.data.name, int(config.mel.sample_rate), num_speakers)
