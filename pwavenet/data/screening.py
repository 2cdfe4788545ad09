"""The bad-data policies: what happens to an utterance too short for a crop and to a stored
mel that does not fit its audio, and how their errors reach the caller.

Too short (config.data.bad_audio): utterances shorter than a crop are never padded. Under
'skip' they are dropped, each logged once and recorded (`DroppedUtterances.ids`, which
`Datasets.dropped` is); under 'fail' the first one raises ValueError naming it.

Stored mels (config.data.mel_source='file', wav_folder only; `MelFileCheck`): the mel of each
utterance is the `name.npy` stored beside `name.wav` (pwavenet.data.builders.wav_folder), e.g. a
TTS model's teacher-forced prediction. Its n_mels must equal config.mel.n_mels (a ValueError
naming the file otherwise). Its frame count F may differ from the audio's T // hop by up to
config.data.mel_length_tolerance frames; both are then cut to min(F, T // hop) frames (the
audio to that many hops). Beyond the tolerance, config.data.mel_length_policy decides: 'fail'
raises ValueError naming the file, 'skip' drops the utterance (logged once, recorded in
`MelFileCheck.skipped`), 'trim' cuts both to the shorter anyway (logged once). Crops and whole
utterances follow the same rules.

A policy's ValueError raised inside tf.data reaches the caller as itself (`numpy_batches`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np
from absl import logging

from pwavenet import audio
from pwavenet import config_schema
from pwavenet.data import builders as pw_datasets
from pwavenet.data import sources

tf = audio.import_tensorflow()

Batch = dict[str, np.ndarray]  # what the pipelines yield: numpy arrays by feature name

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


def too_short(config: Any) -> DroppedUtterances:
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



# --------------------------------------------------------------------- mels from files


class MelFileCheck:
    """Checks each stored mel (config.data.mel_source='file') against its audio.

    n_mels must equal config.mel.n_mels; the frame count may differ from len(audio) // hop by
    up to config.data.mel_length_tolerance frames, and beyond it mel_length_policy applies
    (this module's docstring). `skipped` and `trimmed` map utterance ids to (mel frames,
    audio frames); `error` keeps the ValueError raised inside tf.data so it can be re-raised
    as itself.
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


def stored_mels_checked(config: Any, examples: Iterator[dict[str, Any]]):
    """Numpy examples with their stored mels checked and cut (`MelFileCheck`); unchanged when
    the mels are computed from the audio."""
    if not sources.mels_from_files(config):
        yield from examples
        return
    check = MelFileCheck(config)
    for example in examples:
        pair = check.numpy_pair(example)
        if pair is not None:
            yield dict(example, audio=pair[0], mel=pair[1])


# ------------------------------------------------------------ their errors, re-raised


def numpy_batches(
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


def exact_batches(
    ds: tf.data.Dataset,
    num_batches: int,
    dropped: DroppedUtterances,
    config: Any,
    process_index: int,
    mel_files: MelFileCheck | None = None,
) -> Iterator[Batch]:
    """Exactly `num_batches` numpy batches of the finite `ds`, cycling it when it is shorter,
    so that every process runs the same number of collective eval steps; raises ValueError
    naming the split when it gives no full batch at all."""
    count = 0
    for batch in numpy_batches(ds.repeat().take(num_batches), dropped, mel_files=mel_files):
        count += 1
        yield batch
    if count < num_batches:
        raise ValueError(
            f"The validation split {config.data.eval_split!r} of {config.data.name} gave no "
            f"full batch on process {process_index}: it has fewer usable utterances (at least "
            f"config.data.crop_samples={config.data.crop_samples} samples) than the "
            "per-process batch; lower config.train.batch_size or crop_samples."
        )
