"""Vocoding files: audio from mel spectrograms (.npy) or from wav files' mels, one file or a
folder, with a trained model (`pwavenet.vocoder.Vocoder`).

`vocode_files(workdir, input_path, output_path)`:
  - input a file: a .wav (any sample rate, any number of channels: downmixed to mono and
    resampled to the model's rate, with one notice, before its log-mel is computed in the
    model's definition) or a .npy log-mel of shape (frames, n_mels) or (1, frames, n_mels) in
    that definition; output a .wav file (or an existing folder to write <name>.wav into);
  - input a folder: every .wav and .npy under it, written to the output folder under the same
    relative names with a .wav suffix.
A bad input file raises ValueError naming it and what is wrong with it as a wav or as an
.npy log-mel; in a folder it is named, skipped, and listed in the result's 'failed'.
Output: 16-bit PCM wav at the model's rate, clipped to [-1, 1]. The vocoder synthesizes in
fixed-shape pieces (pwavenet.vocoder), so memory stays bounded for inputs of any length and
the one program it compiles, before timing starts, serves every file.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from pwavenet import audio
from pwavenet import vocoder as vocoder_lib

INPUT_SUFFIXES = (".wav", ".npy")


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """x (samples,) at `rate` Hz -> at `target` Hz: a polyphase filter (scipy's
    resample_poly, Kaiser window) by target / rate in lowest terms."""
    if rate == target:
        return x
    from scipy import signal  # a dependency of the package; heavy to import

    g = math.gcd(int(rate), int(target))
    return signal.resample_poly(x, target // g, rate // g).astype(np.float32)


def read_mel(
    path: str, vocoder, *, mel_layout: str | None = None, input_stats=None
) -> tuple[np.ndarray, list[str]]:
    """(log-mel (frames, n_mels), what was converted) for one .wav or .npy file.

    A .npy is (frames, n_mels), or (n_mels, frames) with mel_layout='bands_first', with an
    optional leading axis of 1; with input_stats it is mean-variance normalized and is
    de-normalized with those statistics (`vocoder.as_model_mel`). A wav's mel is the model's
    own, so neither applies to it. The conversions list holds 'downmixed from C channels'
    and 'resampled from R Hz' for a wav that needed them (empty otherwise). A file that
    cannot serve raises ValueError naming the file and what is wrong with it as a wav or as
    an .npy log-mel."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return _read_npy_mel(path, vocoder, mel_layout=mel_layout, input_stats=input_stats), []
    if ext != ".wav":
        raise ValueError(f"{path}: expected a .wav or a .npy (log-mel) file.")
    import soundfile

    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise ValueError(f"{path}: not a readable wav file ({e}).") from e
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise ValueError(
            f"{path}: as a wav, {int(bad.sum())} of its {samples.size} samples are NaN or "
            f"infinite (the first at {first / rate:.3f} s); a wav's samples must be finite: "
            "re-export the audio (e.g. as 16-bit PCM)."
        )
    conversions = []
    if samples.shape[1] != 1:
        conversions.append(f"downmixed from {samples.shape[1]} channels")
    x = samples.mean(axis=1)
    if rate != vocoder.sample_rate:
        conversions.append(f"resampled from {rate} Hz")
        x = resample(x, rate, vocoder.sample_rate)
    if len(x) < vocoder.hop_length:
        raise ValueError(
            f"{path}: as a wav, {len(x)} samples at {vocoder.sample_rate} Hz, fewer than one mel "
            f"frame ({vocoder.hop_length} samples)."
        )
    return vocoder.mel(x), conversions


def _read_npy_mel(path: str, vocoder, *, mel_layout=None, input_stats=None) -> np.ndarray:
    """An .npy file's log-mel (frames, n_mels), float32; ValueError naming the file unless it
    holds a finite, real-valued log-mel of the model's n_mels (after the layout and the
    de-normalization `read_mel` describes)."""
    what = (
        "a log-mel in the model's definition (Vocoder.mel, pwavenet.audio.log_mel_spectrogram "
        "with the model's mel config)"
    )
    try:
        mel = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for unreadable files
        raise ValueError(f"{path}: not a readable .npy file ({e}).") from e
    if not isinstance(mel, np.ndarray):  # an .npz archive
        raise ValueError(f"{path}: an archive of arrays, not one .npy log-mel; save {what}.")
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim == 2 and (mel_layout is not None or input_stats is not None):
        try:
            mel = vocoder_lib.as_model_mel(
                mel, vocoder.n_mels, input_stats=input_stats, mel_layout=mel_layout
            )
        except ValueError as e:
            raise ValueError(f"{path}: as an .npy mel, {e}") from e
    elif mel.ndim == 2 and mel.shape[-1] != vocoder.n_mels and mel.shape[0] == vocoder.n_mels:
        raise ValueError(
            f"{path}: as an .npy mel, an array of shape {mel.shape} looks transposed: the model "
            f"takes (frames, {vocoder.n_mels}); pass --mel_layout=bands_first for (n_mels, "
            "frames)."
        )
    if mel.ndim != 2 or mel.shape[-1] != vocoder.n_mels or mel.shape[0] < 1:
        raise ValueError(
            f"{path}: as an .npy mel, an array of shape {mel.shape}; expected (frames, "
            f"{vocoder.n_mels}) or (1, frames, {vocoder.n_mels}) with frames >= 1: {what}."
        )
    if mel.dtype.kind not in "f":
        raise ValueError(
            f"{path}: as an .npy mel, an array of dtype {mel.dtype}; expected floating point "
            f"(float32): {what}."
        )
    bad = ~np.isfinite(mel)
    if bad.any():
        frame = int(np.argmax(bad.any(axis=1)))
        raise ValueError(
            f"{path}: as an .npy mel, {int(bad.sum())} of its values are NaN or infinite (the "
            f"first in frame {frame}); a log-mel is finite (log of the mel floored at "
            "mel.log_floor): check the model or script that wrote it."
        )
    return mel.astype(np.float32)


def check_writable(output_path: str) -> None:
    """Raises ValueError naming --output unless its files can be written: the path's nearest
    existing folder must be a folder this process may write into (an existing output file
    must be writable itself). Called before the model loads, so a mistake costs nothing."""
    target = os.path.abspath(output_path)
    if os.path.exists(target) and not os.path.isdir(target):
        if not os.access(target, os.W_OK):
            raise ValueError(f"--output={output_path}: the file exists and is not writable.")
        target = os.path.dirname(target)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"--output={output_path}: cannot be written, {existing} is a file, not a folder; "
            "choose an output path under a folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"--output={output_path}: cannot be written, the folder {existing} is not writable; "
            "choose a writable folder, or make it writable."
        )


def plan(input_path: str, output_path: str) -> list[tuple[str, str]]:
    """(input file, output wav) pairs: one for a file, every .wav/.npy under a folder with the
    same relative name (suffix .wav) under the output folder."""
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"--input={input_path}: no such file or folder.")
    if os.path.isfile(input_path):
        if os.path.isdir(output_path):
            name = os.path.splitext(os.path.basename(input_path))[0] + ".wav"
            return [(input_path, os.path.join(output_path, name))]
        if not output_path.lower().endswith(".wav"):
            raise ValueError(
                f"--output={output_path}: name a .wav file (or an existing folder) for one input."
            )
        return [(input_path, output_path)]
    if os.path.isfile(output_path):
        raise ValueError(
            f"--output={output_path} is a file, but --input={input_path} is a folder; name an "
            "output folder."
        )
    pairs = []
    for root, dirs, files in os.walk(input_path):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in INPUT_SUFFIXES:
                relative = os.path.relpath(os.path.join(root, stem), input_path)
                target = os.path.join(output_path, relative + ".wav")
                pairs.append((os.path.join(root, name), target))
    if not pairs:
        raise FileNotFoundError(f"--input={input_path}: no .wav or .npy files under the folder.")
    outputs = [out for _, out in pairs]
    clash = next((o for o in outputs if outputs.count(o) > 1), None)
    if clash:
        raise ValueError(
            f"{clash} would be written twice: the input folder holds both a .wav and a .npy of "
            "that name; move one of them."
        )
    return pairs


def vocode_files(
    workdir: str,
    input_path: str,
    output_path: str,
    *,
    model: str | None = None,
    speaker: int = 0,
    seed: int = 0,
    chunk_frames: int | None = None,
    step: int | None = None,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
    mel_layout: str | None = None,
    input_stats: str | None = None,
) -> dict[str, Any]:
    """Vocodes a file or a folder (module docstring).

    Returns {'files', 'audio_seconds', 'seconds', 'real_time_factor', 'model', 'outputs',
    'conversions', 'failed'}: `files` and `outputs` count and list the wavs written;
    `seconds` is the synthesis time of all files, excluding the program's one compilation (it
    runs once on one frame first); real_time_factor = seconds / audio_seconds. `mel_layout`
    and `input_stats` (a statistics file) apply to the .npy inputs (`read_mel`). `notify`
    gets one line naming the files that were downmixed or resampled, and, for a folder, one
    line per input file that could not be vocoded ('skipped: <file>: <why>'), which is then
    left out and listed in `failed` {file: why} while the others are written (default:
    stderr). A single input file that cannot be vocoded raises ValueError naming it. An
    output that cannot be written raises ValueError before the model is loaded
    (`check_writable`)."""
    from tqdm import tqdm

    pairs = plan(input_path, output_path)
    check_writable(output_path)
    stats = audio.load_mel_stats(input_stats) if input_stats else None  # checked before loading
    report = notify or (lambda line: print(line, file=sys.stderr))
    vocoder = vocoder_lib.load_vocoder(workdir, step, model=model, chunk_frames=chunk_frames)
    speaker_id = speaker if vocoder.num_speakers else None
    vocoder.vocode(np.zeros((1, vocoder.n_mels), np.float32), speaker_id)  # compile
    folder = os.path.isdir(input_path)
    audio_seconds = seconds = 0.0
    converted, failed, written = {}, {}, []
    for source, target in tqdm(pairs, desc="vocoding", unit="file", disable=not progress):
        try:
            mel, conversions = read_mel(
                source, vocoder, mel_layout=mel_layout, input_stats=stats
            )
            start = time.perf_counter()
            x = vocoder.vocode(mel, speaker_id, seed)
            seconds += time.perf_counter() - start
        except ValueError as e:
            if not folder:
                raise
            # One bad file of a folder is named and skipped; the others are still written.
            failed[source] = str(e)
            report(f"skipped: {e}")
            continue
        if conversions:
            converted[source] = conversions
        audio_seconds += len(x) / vocoder.sample_rate
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        audio.write_wav(target, x, vocoder.sample_rate)
        written.append(target)
    if converted:
        kinds = sorted({c for cs in converted.values() for c in cs})
        first = next(iter(converted))
        more = f" and {len(converted) - 1} more" if len(converted) > 1 else ""
        report(
            f"notice: {first}{more} converted to mono at {vocoder.sample_rate} Hz for the "
            f"model ({'; '.join(kinds)})."
        )
    return {
        "model": vocoder.kind,
        "files": len(written),
        "audio_seconds": audio_seconds,
        "seconds": seconds,
        "real_time_factor": seconds / audio_seconds if audio_seconds else float("nan"),
        "outputs": written,
        "conversions": converted,
        "failed": failed,
    }


def failure_line(result: dict[str, Any], output_path: str) -> str | None:
    """None when every input was vocoded; else one line with the count of files that failed
    (each was named as it was skipped) and where the others went."""
    failed = len(result["failed"])
    if not failed:
        return None
    total = failed + result["files"]
    return (
        f"{failed} of {total} input files could not be vocoded (each named above, 'skipped: "
        f"...'); the other {result['files']} were written under {output_path}."
    )


def summary_line(result: dict[str, Any]) -> str:
    """One line: files, audio seconds, synthesis seconds and the real-time factor."""
    files = result["files"]
    return (
        f"{files} file{'s' if files != 1 else ''} vocoded by the {result['model']}: "
        f"{result['audio_seconds']:.2f} s of audio in {result['seconds']:.2f} s, real-time "
        f"factor {result['real_time_factor']:.3f}"
    )
