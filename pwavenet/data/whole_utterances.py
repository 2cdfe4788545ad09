"""Whole utterances of a split, uncropped, in file order: for scoring, listening and the mel
statistics.

`split_utterances` gives each utterance at its own length, `validation_utterances` a batch of
them cut to one length, `split_mels` the log-mels alone. Every process reads the same ones.
Each mel is computed on the FULL utterance and then cut, as in training; under
config.data.mel_source='file' it is the stored one, checked and cut to its audio under the
same policy as training's (pwavenet.data.screening).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from pwavenet import audio
from pwavenet.data import lookup
from pwavenet.data import pipelines
from pwavenet.data import screening
from pwavenet.data import sources

tf = audio.import_tensorflow()


def _examples(
    config: Any, split: str | None, default_split: str
) -> tuple[str, Iterator[dict[str, Any]]]:
    """(tfds split string, its numpy examples {'audio': int16 (T,), 'speaker', 'id': bytes
    (, 'mel')} in file order, their stored mels checked and cut) of a split name (else
    `default_split`)."""
    builder = lookup.get_builder(config)
    split = sources.resolve_split(config, split or default_split)
    ds = sources.read_split(builder, config, split, shuffle_seed=None)
    return split, screening.stored_mels_checked(config, ds.as_numpy_iterator())


def _whole(example: dict[str, Any], length: int, mel_config: Any) -> dict[str, Any]:
    """{'audio': float32 (length,), 'mel': float32 (length // hop, n_mels), 'speaker': int,
    'id': str}: the first `length` samples (a multiple of the hop) of an example and the
    frames of its full utterance's mel over them."""
    x = audio.pcm16_to_float(example["audio"])
    mel = example["mel"] if "mel" in example else audio.log_mel_spectrogram(x, mel_config)
    return {
        "audio": np.asarray(x[:length], np.float32),
        "mel": np.asarray(mel[: length // mel_config.hop_length], np.float32),
        "speaker": int(example["speaker"]),
        "id": example["id"].decode("utf-8", "replace"),
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
    split, examples = _examples(config, split, config.data.eval_split)
    out = []
    for example in examples:
        length = len(example["audio"])
        if max_seconds > 0:
            length = min(length, int(max_seconds * config.mel.sample_rate))
        length = length // hop * hop
        if length < hop:
            continue
        out.append(_whole(example, length, config.mel))
        if limit and len(out) == limit:
            break
    if not out:
        raise ValueError(f"The split {split!r} of {config.data.name} has no utterances.")
    return out


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
    hop = config.mel.hop_length
    max_samples = _max_samples(config, num_utterances, max_seconds, max_samples)
    split, examples = _examples(config, split, config.data.eval_split)
    chosen = _first_long_enough(examples, num_utterances, max_samples)
    if not chosen:
        raise ValueError(f"The split {split!r} of {config.data.name} has no utterances.")
    length = min(max_samples, min(len(e["audio"]) for e in chosen) // hop * hop)
    if length < hop:
        raise ValueError(f"The chosen utterances of {split!r} are shorter than one hop.")
    whole = [_whole(e, length, config.mel) for e in chosen]
    return {
        "audio": np.stack([u["audio"] for u in whole]),
        "mel": np.stack([u["mel"] for u in whole]),
        "speaker": np.array([u["speaker"] for u in whole], np.int32),
        "id": np.array([u["id"] for u in whole]),
    }


def _max_samples(
    config: Any, num_utterances: int, max_seconds: float | None, max_samples: int | None
) -> int:
    """validation_utterances' length cap in samples, rounded down to a multiple of the hop."""
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
    return max_samples


def _first_long_enough(
    examples: Iterator[dict[str, Any]], count: int, min_samples: int
) -> list[dict[str, Any]]:
    """The first `count` examples of at least `min_samples` samples, in order; if there are
    fewer, the longest of the others after them."""
    chosen: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for example in examples:
        if len(example["audio"]) >= min_samples:
            chosen.append(example)
            if len(chosen) == count:
                break
        else:
            others.append(example)
    others.sort(key=lambda e: -len(e["audio"]))
    return chosen + others[: count - len(chosen)]


def split_mels(config: Any, split: str | None = None) -> Iterator[np.ndarray]:
    """The log-mel (frames, n_mels) of every utterance of a split (default: the training
    split) in file order, as training computes (or, with mel_source='file', reads and cuts)
    them: what `mel.normalization` takes its statistics over. Utterances shorter than
    mel.n_fft samples are left out (their few frames are mostly padding)."""
    if sources.mels_from_files(config):
        _, examples = _examples(config, split, config.data.train_split)
        for example in examples:
            if len(example["audio"]) >= config.mel.n_fft:
                yield np.asarray(example["mel"], np.float32)
        return
    builder = lookup.get_builder(config)
    split = sources.resolve_split(config, split or config.data.train_split)
    n_fft = int(config.mel.n_fft)
    ds = sources.read_split(builder, config, split, shuffle_seed=None)
    ds = ds.filter(lambda e: tf.shape(e["audio"])[0] >= n_fft)
    ds = ds.map(pipelines.features(config.mel), num_parallel_calls=tf.data.AUTOTUNE)
    for example in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        yield example["mel"]
