"""tf.data pipelines: utterances -> (audio, mel, speaker) batches, per host, onto devices.

Data sets (config.data.name; 'name/config' picks a tfds builder config, e.g.
'espeak_corpus/small'):

    espeak_corpus  built locally on first use (pwavenet.data.builders.espeak_corpus)
    wav_folder     config.data.manual_dir, stored at config.mel.sample_rate (resampled)
    kaldi_dir      config.data.manual_dir, a Kaldi/ESPnet data directory (wav.scp, segments,
                   utt2spk; split subfolders or 90/5/5 by utterance id), stored likewise
    ljspeech       tfds 'ljspeech', 22050 Hz, one speaker, feature 'speech'
    vctk           tfds 'vctk', 48 kHz, 110 speakers, features 'speech' and 'speaker'

Every source is mapped onto {'audio': int16 (T,), 'speaker', 'id'}. ljspeech and vctk have
only a 'train' split: for them the split names 'train', 'validation' and 'test' mean
'train[:98%]', 'train[98%:99%]' and 'train[99%:]' (tfds slices, deterministic); any other
split string is passed to tfds unchanged. The audio's sample rate must equal
config.mel.sample_rate: a mismatch (vctk at 48 kHz with the 22050 Hz defaults) is an error
that says what to change; nothing is resampled in TensorFlow (wav_folder resamples at build
time).

Batches (dicts of numpy arrays; B is the per-process batch, config.train.batch_size divided
by the process count):

    audio    float32 (B, crop)                 (2 s + 1) / 65535 for int16 s (audio.pcm16_to_float):
                                               the 16-bit bin centres, in [-1, 1]
    mel      float32 (B, crop // hop, n_mels)  log-mel of the FULL utterance, the crop's frames
    speaker  int32 (B,)                        0 for single-speaker data

crop = config.data.crop_samples (a multiple of config.mel.hop_length). Training crops start at
a uniformly random frame j (sample j * hop) and take mel frames [j, j + crop // hop): exactly
the features evaluation and synthesis compute with `audio.log_mel_spectrogram` on the whole
utterance. Validation crops are the centred crop (frame (frames - crop // hop) // 2) of each
utterance, in file order, no shuffling: the same batches on every call.

Utterances shorter than a crop are never padded: under config.data.bad_audio='skip' they are
dropped, each logged once and recorded in `Datasets.dropped`; under 'fail' the first one
raises ValueError naming it.

Mels from files (config.data.mel_source='file', wav_folder only): the mel of each utterance is
the `name.npy` stored beside `name.wav` (pwavenet.data.builders.wav_folder), e.g. a TTS model's
teacher-forced prediction, instead of one computed from the audio; crops pair its frames with
the audio exactly as above. Its n_mels must equal config.mel.n_mels (a ValueError naming the
file otherwise). Its frame count F may differ from the audio's T // hop by up to
config.data.mel_length_tolerance frames; both are then cut to min(F, T // hop) frames (the
audio to that many hops). Beyond the tolerance, config.data.mel_length_policy decides: 'fail'
raises ValueError naming the file, 'skip' drops the utterance (logged once, recorded in
`Datasets.mel_files.skipped`), 'trim' cuts both to the shorter anyway (logged once). Whole
utterances for evaluation (`validation_utterances`, `split_utterances`) follow the same rules.

Training: per-process slice of the split (tfds.split_for_jax_process), shuffled files and
examples (seeded by config.seed and the process index), repeated forever, random crops drawn
from stateless seeds (seed, example counter): the stream is a deterministic function of the
config and the process index, and `Datasets.train_from(step)` resumes it exactly at a batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator

import jax
import numpy as np
from absl import logging

from pwavenet import audio
from pwavenet.data import builders as pw_datasets

tf = audio.import_tensorflow()
import tensorflow_datasets as tfds  # noqa: E402  (after TensorFlow is told to stay off GPUs)
from pwavenet import config_schema

Batch = dict[str, np.ndarray]

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


# ------------------------------------------------------------------------ config checks


def _source(name: str) -> tuple[str, Source]:
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
    base, _ = _source(config.data.name)
    mel_source = config_schema.setting(config.data, "data.mel_source")
    if mel_source not in MEL_SOURCES:
        raise ValueError(f"config.data.mel_source={mel_source!r} must be one of {MEL_SOURCES}.")
    if mel_source == "file":
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


# ------------------------------------------------------------------------------ builders


def get_builder(config: Any, *, prepare: bool = True) -> tfds.core.DatasetBuilder:
    """The tfds builder of config.data, its rate checked, prepared (built or downloaded).

    espeak_corpus and wav_folder are built locally on first use, under a file lock in the
    data_dir so that processes sharing it build once; ljspeech and vctk are downloaded by
    tfds like `tfds.load` does (after the sample-rate check, so a mismatch costs no
    download).
    """
    check_config(config)
    base, source = _source(config.data.name)
    kwargs: dict[str, Any] = {}
    download_config = None
    if base == "wav_folder":
        if "/" not in config.data.name:
            kwargs["config"] = pw_datasets.wav_folder.config_for(
                config.mel.sample_rate, mels=mels_from_files(config)
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

    def make_builder():
        return tfds.builder(config.data.name, data_dir=config.data.data_dir or None, **kwargs)

    builder = make_builder()
    feature = builder.info.features[source.audio_key]
    rate = getattr(feature, "sample_rate", None)
    if rate != config.mel.sample_rate:
        raise ValueError(_rate_message(config.data.name, rate, config.mel.sample_rate))
    if feature.np_dtype != np.int16:
        raise ValueError(
            f"{config.data.name}: feature {source.audio_key!r} is "
            f"{feature.np_dtype}; the pipeline reads int16 audio."
        )
    if mels_from_files(config) and "mel" not in builder.info.features:
        raise ValueError(
            f"config.data.mel_source='file' but the builder config of {config.data.name!r} "
            "stores no mels; name one that does (e.g. wav_folder/22050hz_mels), or just "
            "--config.data.name=wav_folder."
        )
    if prepare and source.built_locally:
        # Processes sharing a data_dir (several on one host) take turns; the first builds.
        with _file_lock(
            os.path.join(os.fspath(builder.data_dir_root), f".{builder.name}.build.lock")
        ):
            builder = make_builder()  # sees what another process may have just built
            builder.download_and_prepare(download_config=download_config)
    elif prepare:
        builder.download_and_prepare(download_config=download_config)
    return builder


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


def data_info(config: Any, builder: tfds.core.DatasetBuilder | None = None) -> DataInfo:
    """Name, sample rate and speaker count of config.data."""
    builder = builder or get_builder(config)
    _, source = _source(config.data.name)
    num_speakers = 1
    if source.speaker_key:
        feature = builder.info.features[source.speaker_key]
        if isinstance(feature, tfds.features.ClassLabel):
            num_speakers = feature.num_classes
        else:
            names = (builder.info.metadata or {}).get("speakers") or [None]
            num_speakers = len(names)
    return DataInfo(config.data.name, int(config.mel.sample_rate), num_speakers)


def resolve_split(config: Any, split: str) -> str:
    """The tfds split string for a split name (ljspeech/vctk carve splits out of 'train')."""
    return dict(_source(config.data.name)[1].split_aliases).get(split, split)


# ------------------------------------------------------------------ too-short utterances


class DroppedUtterances:
    """Utterances shorter than `min_samples`, by id; applies config.data.bad_audio.

    'skip': each is logged once (however many epochs meet it) and kept in `ids`;
    'fail': the first one raises ValueError (re-raised from the batch iterator).
    """

    def __init__(self, policy: str, min_samples: int, what: str = "a crop"):
        self.policy, self.min_samples, self.what = policy, min_samples, what
        self.ids: dict[str, int] = {}
        self.error: ValueError | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def _record(self, utterance_id: Any, num_samples: Any) -> bool:
        uid = utterance_id.numpy().decode("utf-8", "replace")
        n = int(num_samples.numpy())
        if self.policy == "fail":
            self.error = ValueError(
                f"Utterance {uid!r} has {n} samples, fewer than {self.what} "
                f"({self.min_samples} samples), and config.data.bad_audio='fail'. Lower "
                "config.data.crop_samples, remove the utterance, or use "
                "--config.data.bad_audio=skip to drop such utterances."
            )
            raise self.error
        if uid not in self.ids:
            self.ids[uid] = n
            logging.warning(
                "input pipeline: dropping utterance %r: %d samples < %s (%d); %d dropped so far",
                uid,
                n,
                self.what,
                self.min_samples,
                len(self.ids),
            )
        return False

    def keep(self, example: dict[str, Any]) -> Any:
        """tf predicate: True when the utterance is long enough (records it otherwise)."""
        n = tf.shape(example["audio"])[0]
        return tf.cond(
            n >= self.min_samples,
            lambda: tf.constant(True),
            lambda: tf.py_function(self._record, [example["id"], n], tf.bool),
        )


# --------------------------------------------------------------------- mels from files


class MelFileCheck:
    """Checks each stored mel (config.data.mel_source='file') against its audio.

    n_mels must equal config.mel.n_mels; the frame count may differ from len(audio) // hop by
    up to config.data.mel_length_tolerance frames, and beyond it mel_length_policy applies
    (module docstring). `skipped` and `trimmed` map utterance ids to (mel frames, audio frames);
    `error` keeps the ValueError raised inside tf.data so it can be re-raised as itself.
    """

    def __init__(self, config: Any):
        self.hop = int(config.mel.hop_length)
        self.n_mels = int(config.mel.n_mels)
        self.tolerance = int(config_schema.setting(config.data, "data.mel_length_tolerance"))
        self.policy = config_schema.setting(config.data, "data.mel_length_policy")
        self.manual_dir = config.data.manual_dir
        self.skipped: dict[str, tuple[int, int]] = {}
        self.trimmed: dict[str, tuple[int, int]] = {}
        self.error: ValueError | None = None

    def file_of(self, utterance_id: str) -> str:
        """The .npy file of an utterance (its id is the wav's path under the manual dir)."""
        return pw_datasets.wav_folder.mel_path(os.path.join(self.manual_dir or "", utterance_id))

    def check(self, utterance_id: str, num_samples: int, mel_shape: tuple[int, int]) -> bool:
        """True to keep the utterance (cut to the shorter); False to skip it; raises
        ValueError for a wrong n_mels and, under 'fail', a length beyond the tolerance."""
        frames, bands = int(mel_shape[0]), int(mel_shape[1])
        audio_frames = num_samples // self.hop
        if bands != self.n_mels:
            hint = (
                " It looks transposed: save mel.T, (frames, n_mels)."
                if frames == self.n_mels
                else ""
            )
            self.error = ValueError(
                f"{self.file_of(utterance_id)}: mel of shape {(frames, bands)} has {bands} "
                f"mel bands, but config.mel.n_mels={self.n_mels}.{hint} Save mels in this "
                "config's mel definition (pwavenet.audio.mel_settings), or change config.mel "
                "to the TTS model's."
            )
            raise self.error
        if abs(frames - audio_frames) <= self.tolerance:
            return True
        what = (
            f"{self.file_of(utterance_id)}: {frames} mel frames, but its wav has "
            f"{num_samples} samples = {audio_frames} frames of hop {self.hop}, a difference "
            f"beyond config.data.mel_length_tolerance={self.tolerance}"
        )
        if self.policy == "fail":
            self.error = ValueError(
                f"{what} and config.data.mel_length_policy='fail'. Check that the mel belongs "
                "to the wav and uses this hop (config.mel.hop_length), raise the tolerance, or "
                "use --config.data.mel_length_policy=skip (drop such files) or trim (cut both "
                "to the shorter)."
            )
            raise self.error
        record = self.skipped if self.policy == "skip" else self.trimmed
        if utterance_id not in record:
            record[utterance_id] = (frames, audio_frames)
            logging.warning(
                "input pipeline: %s; %s it (%d so far)",
                what,
                "skipping" if self.policy == "skip" else "cutting both to the shorter in",
                len(record),
            )
        return self.policy == "trim"

    def _check_tensors(self, utterance_id, num_samples, mel_shape) -> bool:
        return self.check(
            utterance_id.numpy().decode("utf-8", "replace"),
            int(num_samples.numpy()),
            tuple(mel_shape.numpy()),
        )

    def keep(self, example: dict[str, Any]) -> Any:
        """tf predicate on {'audio', 'mel', 'id'}: `check`, in Python only off the fast path."""
        frames = tf.shape(example["mel"])[0]
        audio_frames = tf.shape(example["audio"])[0] // self.hop
        fits = tf.logical_and(
            tf.equal(tf.shape(example["mel"])[1], self.n_mels),
            tf.abs(frames - audio_frames) <= self.tolerance,
        )
        return tf.cond(
            fits,
            lambda: tf.constant(True),
            lambda: tf.ensure_shape(
                tf.py_function(
                    self._check_tensors,
                    [example["id"], tf.shape(example["audio"])[0], tf.shape(example["mel"])],
                    tf.bool,
                ),
                [],
            ),
        )

    def cut(self, example: dict[str, Any]) -> dict[str, Any]:
        """tf: audio and mel cut to the shorter, min(F, T // hop) frames and as many hops."""
        frames = tf.minimum(tf.shape(example["mel"])[0], tf.shape(example["audio"])[0] // self.hop)
        mel = tf.ensure_shape(example["mel"][:frames], [None, self.n_mels])
        return dict(example, audio=example["audio"][: frames * self.hop], mel=mel)

    def apply(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Utterances with their stored mels checked and cut (before the crop-length filter)."""
        return ds.filter(self.keep).map(self.cut, num_parallel_calls=tf.data.AUTOTUNE)

    def numpy_pair(self, example: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """(int16 audio, float32 mel) of a numpy example, checked and cut; None to skip."""
        uid = example["id"]
        uid = uid.decode("utf-8", "replace") if isinstance(uid, bytes) else str(uid)
        if not self.check(uid, len(example["audio"]), example["mel"].shape):
            return None
        frames = min(len(example["mel"]), len(example["audio"]) // self.hop)
        return example["audio"][: frames * self.hop], example["mel"][:frames]


def _numpy_batches(
    ds: tf.data.Dataset,
    dropped: DroppedUtterances,
    *,
    endless: Callable[[], str] | None = None,
    op_error: type = tf.errors.OpError,
    mel_files: MelFileCheck | None = None,
) -> Iterator[Batch]:
    """Numpy batches of `ds`; re-raises the bad-audio policy's ValueError (and the stored
    mels' check's) as itself.

    endless: for a stream that should never end, gives the message for when it does anyway
    (a repeated split that yields nothing: every utterance was dropped).
    """
    try:
        yield from ds.as_numpy_iterator()
    except op_error:
        if dropped.error is not None:
            raise dropped.error from None
        if mel_files is not None and mel_files.error is not None:
            raise mel_files.error from None
        raise
    if endless:
        raise ValueError(endless())


# ------------------------------------------------------------------------ the tf stages


def _utterances(builder, config: Any, split: str, *, shuffle_seed: int | None) -> tf.data.Dataset:
    """{'audio': int16 (T,), 'speaker': int32, 'id': string} in file order (or shuffled)."""
    _, source = _source(config.data.name)
    # No tfds auto-cache: partial reads (validation_utterances) would make it warn.
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None, read_config=read_config
    )

    def standardize(example):
        speaker = (
            tf.cast(example[source.speaker_key], tf.int32)
            if source.speaker_key
            else tf.constant(0, tf.int32)
        )
        uid = example["id"] if "id" in example else tf.constant("")
        out = {"audio": example[source.audio_key], "speaker": speaker, "id": uid}
        if mels_from_files(config):
            out["mel"] = example["mel"]
        return out

    return ds.map(standardize, num_parallel_calls=tf.data.AUTOTUNE)


def _features(mel_config: Any) -> Callable:
    """Float audio and its mel: the stored one when the example has it, else computed."""

    def compute(example):
        x = audio.pcm16_to_float(example["audio"])
        mel = example["mel"] if "mel" in example else audio.log_mel_spectrogram(x, mel_config)
        return {"audio": x, "mel": mel, "speaker": example["speaker"]}

    return compute


def _crop(example, start_frame, crop_frames: int, mel_config: Any):
    """Samples [j hop, (j + c) hop) with mel frames [j, j + c), j = start_frame, c = crop_frames."""
    hop = mel_config.hop_length
    audio_crop = example["audio"][start_frame * hop : (start_frame + crop_frames) * hop]
    mel_crop = example["mel"][start_frame : start_frame + crop_frames]
    return {
        "audio": tf.ensure_shape(audio_crop, [crop_frames * hop]),
        "mel": tf.ensure_shape(mel_crop, [crop_frames, mel_config.n_mels]),
        "speaker": example["speaker"],
    }


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def train_dataset(
    config: Any,
    builder,
    *,
    process_index: int,
    process_count: int,
    batch_size: int,
    dropped: DroppedUtterances,
    start_batch: int = 0,
    mel_files: MelFileCheck | None = None,
) -> tf.data.Dataset:
    """Infinite stream of training batches for one process (see the module docstring),
    from its batch `start_batch` on: the examples before it are skipped before their mels are
    computed, so resuming at step N costs reading N batches' records, not computing them."""
    crop_frames = config.data.crop_samples // config.mel.hop_length
    split = tfds.split_for_jax_process(
        resolve_split(config, config.data.train_split),
        process_index=process_index,
        process_count=process_count,
    )
    seed = int(config.seed) * 1_000_003 + process_index
    ds = _utterances(builder, config, split, shuffle_seed=seed)
    if mel_files is not None:
        ds = mel_files.apply(ds)
    ds = ds.filter(dropped.keep).repeat()
    ds = ds.shuffle(config.data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.enumerate()
    if start_batch:
        ds = ds.skip(start_batch * batch_size)
    features = _features(config.mel)
    ds = ds.map(lambda i, ex: (i, features(ex)), num_parallel_calls=tf.data.AUTOTUNE)

    def random_crop(index, example):
        frames = tf.shape(example["mel"])[0]
        start = tf.random.stateless_uniform(
            [],
            seed=tf.stack([tf.constant(seed, tf.int64), index]),
            minval=0,
            maxval=frames - crop_frames + 1,
            dtype=tf.int32,
        )
        return _crop(example, start, crop_frames, config.mel)

    ds = ds.map(random_crop, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(
    config: Any,
    builder,
    *,
    process_index: int,
    process_count: int,
    batch_size: int,
    dropped: DroppedUtterances,
    mel_files: MelFileCheck | None = None,
) -> tf.data.Dataset:
    """One deterministic pass of centred validation crops for one process (finite)."""
    crop_frames = config.data.crop_samples // config.mel.hop_length
    split = tfds.split_for_jax_process(
        resolve_split(config, config.data.eval_split),
        process_index=process_index,
        process_count=process_count,
        drop_remainder=True,
    )
    ds = _utterances(builder, config, split, shuffle_seed=None)
    if mel_files is not None:
        ds = mel_files.apply(ds)
    ds = ds.filter(dropped.keep)
    ds = ds.map(_features(config.mel), num_parallel_calls=tf.data.AUTOTUNE)

    def centre_crop(example):
        frames = tf.shape(example["mel"])[0]
        return _crop(example, (frames - crop_frames) // 2, crop_frames, config.mel)

    ds = ds.map(centre_crop, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).with_options(_options())


# ---------------------------------------------------------------------- the public entry


@dataclasses.dataclass
class Datasets:
    """What `create_datasets` returns.

    train: iterator of per-process training batches (None when built with train=False).
    train_from(step): the same stream from batch `step` on: the batches a run that has done
      `step` steps has not seen yet, so a resumed run sees exactly what an uninterrupted one
      would.
    eval(num_batches=None): a fresh iterator of validation batches, identical on every call;
      with num_batches it yields exactly that many (cycling the split when it is smaller),
      so that every process runs the same number of collective eval steps.
    dropped: the too-short utterances seen so far ({id: samples}); info: DataInfo.
    mel_files: the stored mels' check (config.data.mel_source='file'), with the utterances it
      skipped and trimmed so far; None for mels computed from the audio.
    """

    train: Iterator[Batch] | None
    eval: Callable[..., Iterator[Batch]]
    info: DataInfo
    dropped: DroppedUtterances
    batch_size: int
    train_from: Callable[[int], Iterator[Batch]] | None = None
    mel_files: MelFileCheck | None = None


def create_datasets(
    config: Any,
    *,
    train: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
) -> Datasets:
    """Training and validation pipelines for this process from a full teacher/student config.

    Args:
      config: ConfigDict with sections data, mel, train (and seed; model.num_speakers is
        checked against the data set's speakers when present).
      train: also build the training stream.
      process_index, process_count, local_device_count: default to jax's.
    """
    process_index, process_count, local_device_count = _this_process(
        process_index, process_count, local_device_count
    )
    batch_size = local_batch_size(config.train.batch_size, process_count, local_device_count)
    builder = get_builder(config)
    info = data_info(config, builder)
    _check_model_speakers(config, info)
    dropped = _too_short(config)
    mel_files = MelFileCheck(config) if mels_from_files(config) else None
    kwargs = dict(
        process_index=process_index,
        process_count=process_count,
        batch_size=batch_size,
        dropped=dropped,
        mel_files=mel_files,
    )

    def train_from(step: int) -> Iterator[Batch]:
        return _numpy_batches(
            train_dataset(config, builder, start_batch=step, **kwargs),
            dropped,
            mel_files=mel_files,
            endless=lambda: (
                f"The training split {config.data.train_split!r} of {config.data.name} gave "
                f"no batch of {batch_size} on process {process_index}: too few utterances of "
                f"at least config.data.crop_samples={config.data.crop_samples} samples "
                f"({len(dropped)} dropped as shorter)."
            ),
        )

    train_iter = train_from(0) if train else None
    eval_ds = eval_dataset(config, builder, **kwargs)

    def eval_batches(num_batches: int | None = None) -> Iterator[Batch]:
        if num_batches is None:
            return _numpy_batches(eval_ds, dropped, mel_files=mel_files)
        return _exactly(eval_ds, num_batches, dropped, config, process_index, mel_files)

    logging.info(
        "Data %s: %d speakers at %d Hz; process %d of %d reads batches of %d (global %d).",
        info.name,
        info.num_speakers,
        info.sample_rate,
        process_index,
        process_count,
        batch_size,
        config.train.batch_size,
    )
    return Datasets(
        train=train_iter,
        eval=eval_batches,
        info=info,
        dropped=dropped,
        batch_size=batch_size,
        train_from=train_from if train else None,
        mel_files=mel_files,
    )


def _this_process(
    process_index: int | None, process_count: int | None, local_device_count: int | None
) -> tuple[int, int, int]:
    """(process index, process count, local devices), jax's where not given, checked."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    local_device_count = (
        jax.local_device_count() if local_device_count is None else local_device_count
    )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, {process_count}).")
    return process_index, process_count, local_device_count


def _check_model_speakers(config: Any, info: DataInfo) -> None:
    """Refuses a model with fewer speaker embeddings than the data set has speakers."""
    model_speakers = config.get("model", {}).get("num_speakers", 0)
    if model_speakers and info.num_speakers > model_speakers:
        raise ValueError(
            f"{config.data.name} has {info.num_speakers} speakers but "
            f"config.model.num_speakers={model_speakers}; set it to at least "
            f"{info.num_speakers}."
        )


def _too_short(config: Any) -> DroppedUtterances:
    """The record of utterances too short for a crop, under config.data.bad_audio's policy."""
    # The log-mel's reflect padding also needs a few samples; crops are nearly always longer.
    min_samples = max(config.data.crop_samples, audio.mel_padding(config.mel)[1] + 1)
    return DroppedUtterances(
        config.data.bad_audio,
        min_samples,
        "config.data.crop_samples"
        if min_samples == config.data.crop_samples
        else "the log-mel's reflect padding",
    )


def _exactly(
    ds: tf.data.Dataset,
    num_batches: int,
    dropped: DroppedUtterances,
    config: Any,
    process_index: int,
    mel_files: MelFileCheck | None = None,
) -> Iterator[Batch]:
    count = 0
    for batch in _numpy_batches(ds.repeat().take(num_batches), dropped, mel_files=mel_files):
        count += 1
        yield batch
    if count < num_batches:
        raise ValueError(
            f"The validation split {config.data.eval_split!r} of {config.data.name} gave no "
            f"full batch on process {process_index}: it has fewer usable utterances (at least "
            f"config.data.crop_samples={config.data.crop_samples} samples) than the "
            "per-process batch; lower config.train.batch_size or crop_samples."
        )


# ------------------------------------------------------------- whole utterances (eval)


def validation_utterances(
    config: Any,
    *,
    num_utterances: int,
    max_seconds: float | None = None,
    max_samples: int | None = None,
    split: str | None = None,
) -> dict[str, np.ndarray]:
    """The first validation utterances, whole up to a length, for generation and listening.

    Every process gets the same ones. Picks, in file order, the first `num_utterances` at
    least `max_samples` long (max_seconds * sample_rate rounded down to a multiple of the
    hop); if the split has too few, the longest of the others fill in. All are cut to a
    common length T = min(max_samples, shortest chosen) rounded down to a multiple of the hop.
    The mel is computed on the FULL utterance (as in training) and cut to frames [0, T // hop).

    Returns:
      {'audio': float32 (N, T), 'mel': float32 (N, T // hop, n_mels), 'speaker': int32 (N,),
       'id': str (N,)} (numpy; 'id' is for file names, not for devices).
    """
    hop, rate = config.mel.hop_length, config.mel.sample_rate
    if max_samples is None:
        if max_seconds is None:
            raise ValueError("Give max_seconds or max_samples.")
        max_samples = int(max_seconds * rate)
    max_samples = (max_samples // hop) * hop
    if max_samples < hop or num_utterances < 1:
        raise ValueError(
            f"Need num_utterances >= 1 and at least one hop ({hop} samples) of "
            f"audio; got {num_utterances} and {max_samples} samples."
        )
    builder = get_builder(config)
    split = resolve_split(config, split or config.data.eval_split)
    chosen: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for example in _stored_mels_checked(
        config, _utterances(builder, config, split, shuffle_seed=None).as_numpy_iterator()
    ):
        if len(example["audio"]) >= max_samples:
            chosen.append(example)
            if len(chosen) == num_utterances:
                break
        else:
            others.append(example)
    others.sort(key=lambda e: -len(e["audio"]))
    chosen += others[: num_utterances - len(chosen)]
    if not chosen:
        raise ValueError(f"The split {split!r} of {config.data.name} has no utterances.")
    length = min(max_samples, min(len(e["audio"]) for e in chosen) // hop * hop)
    if length < hop:
        raise ValueError(f"The chosen utterances of {split!r} are shorter than one hop.")
    full = [audio.pcm16_to_float(e["audio"]) for e in chosen]
    mels = [
        (e["mel"] if "mel" in e else audio.log_mel_spectrogram(x, config.mel))[: length // hop]
        for e, x in zip(chosen, full)
    ]
    return {
        "audio": np.stack([x[:length] for x in full]),
        "mel": np.stack(mels).astype(np.float32),
        "speaker": np.array([e["speaker"] for e in chosen], np.int32),
        "id": np.array([e["id"].decode("utf-8", "replace") for e in chosen]),
    }


def split_utterances(
    config: Any, split: str | None = None, limit: int = 0, max_seconds: float = 0.0
) -> list[dict[str, Any]]:
    """Whole utterances of a split in file order (the first `limit`; 0: all), for scoring.

    Each is {'audio': float32 (T,), 'mel': float32 (T // hop, n_mels), 'speaker': int,
    'id': str}, its audio cut to a multiple of the hop (and to `max_seconds` if > 0) and its
    mel computed on the full utterance, as in training. Every process gets the same ones.
    """
    hop = config.mel.hop_length
    builder = get_builder(config)
    split = resolve_split(config, split or config.data.eval_split)
    out = []
    for example in _stored_mels_checked(
        config, _utterances(builder, config, split, shuffle_seed=None).as_numpy_iterator()
    ):
        x = audio.pcm16_to_float(example["audio"])
        length = (
            len(x) if max_seconds <= 0 else min(len(x), int(max_seconds * config.mel.sample_rate))
        )
        length = length // hop * hop
        if length < hop:
            continue
        out.append(
            {
                "audio": np.asarray(x[:length], np.float32),
                "mel": np.asarray(
                    (
                        example["mel"]
                        if "mel" in example
                        else audio.log_mel_spectrogram(x, config.mel)
                    )[: length // hop],
                    np.float32,
                ),
                "speaker": int(example["speaker"]),
                "id": example["id"].decode("utf-8", "replace"),
            }
        )
        if limit and len(out) == limit:
            break
    if not out:
        raise ValueError(f"The split {split!r} of {config.data.name} has no utterances.")
    return out


def split_mels(config: Any, split: str | None = None) -> Iterator[np.ndarray]:
    """The log-mel (frames, n_mels) of every utterance of a split (default: the training
    split) in file order, as training computes (or, with mel_source='file', reads and cuts)
    them: what `mel.normalization` takes its statistics over. Utterances shorter than
    mel.n_fft samples are left out (their few frames are mostly padding)."""
    builder = get_builder(config)
    split = resolve_split(config, split or config.data.train_split)
    ds = _utterances(builder, config, split, shuffle_seed=None)
    if mels_from_files(config):
        for example in _stored_mels_checked(config, ds.as_numpy_iterator()):
            if len(example["audio"]) >= config.mel.n_fft:
                yield np.asarray(example["mel"], np.float32)
        return
    n_fft = int(config.mel.n_fft)
    ds = ds.filter(lambda e: tf.shape(e["audio"])[0] >= n_fft)
    ds = ds.map(_features(config.mel), num_parallel_calls=tf.data.AUTOTUNE)
    for example in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        yield example["mel"]


def _stored_mels_checked(config: Any, examples: Iterator[dict[str, Any]]):
    """Numpy examples with their stored mels checked and cut (`MelFileCheck`); unchanged when
    the mels are computed from the audio."""
    if not mels_from_files(config):
        yield from examples
        return
    check = MelFileCheck(config)
    for example in examples:
        pair = check.numpy_pair(example)
        if pair is not None:
            yield dict(example, audio=pair[0], mel=pair[1])
