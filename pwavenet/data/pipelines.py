"""The tf.data pipelines: utterances -> cropped (audio, mel, speaker) batches per process, for
training and validation (`create_datasets`).

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
utterance, in file order, no shuffling: the same batches on every call. Under
config.data.mel_source='file' the mel is the stored one, checked and cut to the audio first
(pwavenet.data.screening); utterances shorter than a crop are dropped or refused there too.

Training: per-process slice of the split (tfds.split_for_jax_process), shuffled files and
examples (seeded by config.seed and the process index), repeated forever, random crops drawn
from stateless seeds (seed, example counter): the stream is a deterministic function of the
config and the process index, and `Datasets.train_from(step)` resumes it exactly at a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
from absl import logging

from pwavenet import audio
from pwavenet.data import lookup
from pwavenet.data import screening
from pwavenet.data import sources

tf = audio.import_tensorflow()
import tensorflow_datasets as tfds  # noqa: E402  (after TensorFlow is told to stay off GPUs)

Batch = screening.Batch


# ------------------------------------------------------------------------ the tf stages


def features(mel_config: Any) -> Callable:
    """tf map: float audio and its mel (the stored one when the example has it, else
    computed from the whole utterance) and the speaker."""

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
    dropped: screening.DroppedUtterances,
    start_batch: int = 0,
    mel_files: screening.MelFileCheck | None = None,
) -> tf.data.Dataset:
    """Infinite stream of training batches for one process (see the module docstring),
    from its batch `start_batch` on: the examples before it are skipped before their mels are
    computed, so resuming at step N costs reading N batches' records, not computing them."""
    crop_frames = config.data.crop_samples // config.mel.hop_length
    split = tfds.split_for_jax_process(
        sources.resolve_split(config, config.data.train_split),
        process_index=process_index,
        process_count=process_count,
    )
    seed = int(config.seed) * 1_000_003 + process_index
    ds = sources.read_split(builder, config, split, shuffle_seed=seed)
    if mel_files is not None:
        ds = mel_files.apply(ds)
    ds = ds.filter(dropped.keep).repeat()
    ds = ds.shuffle(config.data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.enumerate()
    if start_batch:
        ds = ds.skip(start_batch * batch_size)
    compute = features(config.mel)
    ds = ds.map(lambda i, ex: (i, compute(ex)), num_parallel_calls=tf.data.AUTOTUNE)

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
    dropped: screening.DroppedUtterances,
    mel_files: screening.MelFileCheck | None = None,
) -> tf.data.Dataset:
    """One deterministic pass of centred validation crops for one process (finite)."""
    crop_frames = config.data.crop_samples // config.mel.hop_length
    split = tfds.split_for_jax_process(
        sources.resolve_split(config, config.data.eval_split),
        process_index=process_index,
        process_count=process_count,
        drop_remainder=True,
    )
    ds = sources.read_split(builder, config, split, shuffle_seed=None)
    if mel_files is not None:
        ds = mel_files.apply(ds)
    ds = ds.filter(dropped.keep)
    ds = ds.map(features(config.mel), num_parallel_calls=tf.data.AUTOTUNE)

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
    info: sources.DataInfo
    dropped: screening.DroppedUtterances
    batch_size: int
    train_from: Callable[[int], Iterator[Batch]] | None = None
    mel_files: screening.MelFileCheck | None = None


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
    batch_size = sources.local_batch_size(
        config.train.batch_size, process_count, local_device_count
    )
    builder = lookup.get_builder(config)
    info = lookup.data_info(config, builder)
    _check_model_speakers(config, info)
    dropped = screening.too_short(config)
    mel_files = screening.MelFileCheck(config) if sources.mels_from_files(config) else None
    kwargs = dict(
        process_index=process_index,
        process_count=process_count,
        batch_size=batch_size,
        dropped=dropped,
        mel_files=mel_files,
    )

    def train_from(step: int) -> Iterator[Batch]:
        return screening.numpy_batches(
            train_dataset(config, builder, start_batch=step, **kwargs),
            dropped,
            mel_files=mel_files,
            endless=lambda: _no_training_batch(config, batch_size, process_index, dropped),
        )

    train_iter = train_from(0) if train else None
    eval_ds = eval_dataset(config, builder, **kwargs)

    def eval_batches(num_batches: int | None = None) -> Iterator[Batch]:
        if num_batches is None:
            return screening.numpy_batches(eval_ds, dropped, mel_files=mel_files)
        return screening.exact_batches(
            eval_ds, num_batches, dropped, config, process_index, mel_files
        )

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


def _no_training_batch(
    config: Any, batch_size: int, process_index: int, dropped: screening.DroppedUtterances
) -> str:
    """The error of a training stream that ended: every utterance was dropped as too short."""
    return (
        f"The training split {config.data.train_split!r} of {config.data.name} gave "
        f"no batch of {batch_size} on process {process_index}: too few utterances of "
        f"at least config.data.crop_samples={config.data.crop_samples} samples "
        f"({len(dropped)} dropped as shorter)."
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


def _check_model_speakers(config: Any, info: sources.DataInfo) -> None:
    """Refuses a model with fewer speaker embeddings than the data set has speakers."""
    model_speakers = config.get("model", {}).get("num_speakers", 0)
    if model_speakers and info.num_speakers > model_speakers:
        raise ValueError(
            f"{config.data.name} has {info.num_speakers} speakers but "
            f"config.model.num_speakers={model_speakers}; set it to at least "
            f"{info.num_speakers}."
        )
