"""`wav_folder`: a folder of .wav files as a tfds data set.

The folder is tfds's manual dir: `download_config=tfds.download.DownloadConfig(manual_dir=D)`
to `download_and_prepare`, or the builder keyword `manual_dir=D` (which wins). Layout:

    D/*.wav                     speaker 0 (when there are files at the top level)
    D/<speaker>/**/*.wav        one speaker per subfolder, ids by sorted subfolder name
                                (after the top level's 0 if it has files, else from 0)

The extension match is case-insensitive; names starting with '.' are ignored. Speaker names
are recorded in `info.metadata['speakers']` (index = id; '.' is the top level).

Features: {'audio': int16 (T,) at the config's sample rate, 'speaker': int64, 'id': the
file's path relative to D, with '/' separators}. Configs: `WavFolderConfig(sample_rate=...)`,
predefined as '16000hz', '22050hz' (the default), '24000hz', '44100hz', '48000hz'; any other
rate works as `config=WavFolderConfig(name='<rate>hz', sample_rate=<rate>)`.

Mels from files (`WavFolderConfig(mels=True)`, predefined as '<rate>hz_mels'; `config_for(rate,
mels=True)`): every `name.wav` has a `name.npy` beside it, a float (frames, n_mels) log-mel
in the training config's mel definition, e.g. a TTS model's teacher-forced prediction for
that utterance; it is stored as the feature 'mel', float32 (frames, n_mels), unchanged. The
build only checks that it is a finite 2-D float array; its frame count and n_mels are checked
against the config when it is read (pwavenet.data.screening; config.data.mel_length_tolerance
and mel_length_policy), so one build serves any hop. A missing or unusable .npy is bad data
under the policy below (rules 'missing mel' and 'bad mel').

Splits (deterministic, by file name, stable when files are added or removed): a file with
relative path p goes to train if u(p) < 0.90, validation if u(p) < 0.95, else test, where
u(p) is the first 8 bytes of sha256(p) as a fraction of 2^64. Only usable files (below) are
split. With 3 or more each split gets at least one: an empty split takes, from the largest
split, its file with the largest u(p) (the smallest for train). With fewer than 3 usable files
there is only a train split.

Bad data policy (builder keyword `bad_audio`, 'skip' by default; the input pipeline passes
config.data.bad_audio). Never a silent wrong example:

    unreadable   soundfile cannot decode it (corrupt bytes, not audio)      skip | fail
    empty        0 bytes or 0 samples                                       skip | fail
    non-finite   NaN or inf samples (float wavs)                            skip | fail
    implausible  a sample rate outside 1000..768000 Hz (a corrupt header;   skip | fail
    rate         resampling 1 Hz to 22050 Hz would multiply the size by
                 22050)
    multichannel downmixed to mono by averaging the channels                kept, counted
    sample rate  not the config's: resampled (windowed-sinc polyphase
                 filter, `resample` below, 16 zero crossings, Kaiser
                 window, cutoff 0.945 of the lower Nyquist)                 kept, counted
    clipped      samples at or beyond full scale (int16 -32768 or 32767
                 after conversion); values beyond it are clipped            kept, counted
    missing mel  (mels=True) no name.npy beside name.wav                    skip | fail
    bad mel      (mels=True) the .npy is unreadable, not 2-D, not a float
                 array, or not finite                                       skip | fail

The build decodes every file twice: a first pass applies the policy (so splits are drawn
from usable files), the second writes the examples. Under 'skip' each skipped file is logged
(a warning naming the file and the rule), followed by a summary line; under 'fail' the first
unusable file raises ValueError naming the file and the rule. Both policies log the
kept-but-changed files, with a summary per split. `info.metadata['build_report']` holds
{'skipped': {file: rule}, 'splits': {split: {'kept', 'downmixed', 'resampled', 'clipped'}}}.
Utterances too short for a training crop are the bad-data screening's business
(pwavenet.data.screening), under the same policy.

Conversion to int16: soundfile reads every format as floats with integer PCM scaled by
1/2^(bits-1) (int16 s -> s / 32768, exact), so 16-bit files pass through unchanged and other
formats are rounded as round(32768 y), clipped to the int16 range. A float file's samples are
first limited to +-`SAMPLE_LIMIT` (32768 times full scale, 90 dB over it: garbage, clipped to
full scale either way), so that averaging channels, resampling and scaling stay finite; a
sample of 1e308 would otherwise overflow to inf, and the resampler's zero taps times inf make
NaN, which no int16 conversion defines.

A prepared data set is not rebuilt when the folder changes: use a fresh data_dir (or delete
<data_dir>/wav_folder) after editing the folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import numpy as np
import soundfile
import tensorflow_datasets as tfds
from absl import logging

BAD_AUDIO_POLICIES = ("skip", "fail")
# Sample rates a real recording can have; anything else is a corrupt or hostile header.
PLAUSIBLE_RATES = (1000, 768_000)
SAMPLE_LIMIT = 32768.0  # in units of full scale; see the module docstring
SPLIT_FRACTIONS = (("train", 0.90), ("validation", 0.95), ("test", 1.0))
TOP_LEVEL_SPEAKER = "."


class BadAudioError(ValueError):
    """A file that cannot become an example; `rule` is one of the policy's names."""

    def __init__(self, path: str, rule: str, detail: str):
        self.path, self.rule, self.detail = path, rule, detail
        super().__init__(f"{path}: {rule} ({detail})")


# -------------------------------------------------------------------------- resampling


def resample(
    x: np.ndarray,
    orig_rate: int,
    target_rate: int,
    *,
    zero_crossings: int = 16,
    rolloff: float = 0.945,
    beta: float = 8.6,
) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by the rational factor target / orig.

    Output sample n sits at input time n * orig / target (time 0 aligned), and there are
    ceil(T * target / orig) of them. Each is a dot product of the input with a Kaiser-windowed
    sinc low-pass whose cutoff is `rolloff` times the lower of the two Nyquist frequencies;
    each of the `up` filter phases is normalised to unit DC gain.

    Args:
      x: (T,) float signal.
      orig_rate, target_rate: positive integer sample rates.

    Returns:
      (ceil(T * target_rate / orig_rate),) float64.
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"Sample rates must be positive, got {orig_rate} and {target_rate}.")
    x = np.asarray(x, np.float64)
    g = math.gcd(orig_rate, target_rate)
    up, down = target_rate // g, orig_rate // g
    if up == down:
        return x.copy()
    cutoff = rolloff * min(1.0, up / down)  # in units of the input Nyquist frequency
    half = int(math.ceil(zero_crossings / cutoff))
    offsets = np.arange(-half + 1, half + 1)
    # tau[p, j]: time from input sample k0 + offsets[j] to an output at k0 + p / up.
    tau = np.arange(up)[:, None] / up - offsets[None, :]
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (tau / half) ** 2, 0.0, None))) / np.i0(beta)
    taps = cutoff * np.sinc(cutoff * tau) * window
    taps /= taps.sum(axis=1, keepdims=True)
    num_out = -(-len(x) * up // down)
    padded = np.pad(x, (half, half + 1))
    y = np.empty(num_out)
    chunk = max(1, (1 << 22) // taps.shape[1])
    for start in range(0, num_out, chunk):
        n = np.arange(start, min(num_out, start + chunk))
        base, phase = np.divmod(n * down, up)
        gathered = padded[base[:, None] + offsets[None, :] + half]
        y[start : start + len(n)] = np.einsum("ij,ij->i", gathered, taps[phase])
    return y


# ------------------------------------------------------------------------ reading files


@dataclasses.dataclass
class WavRead:
    """A decoded file: int16 mono audio and what was done to it on the way."""

    audio: np.ndarray
    downmixed_from: int = 0  # channels, when more than one
    resampled_from: int = 0  # Hz, when not the target rate
    clipped_samples: int = 0


def read_wav(path: str, sample_rate: int | None) -> WavRead:
    """Decodes `path` to int16 mono at `sample_rate` (None: its own), or raises BadAudioError."""
    if os.path.getsize(path) == 0:
        raise BadAudioError(path, "empty", "0 bytes")
    try:
        data, rate = soundfile.read(path, dtype="float64", always_2d=True)
    except Exception as e:  # noqa: BLE001  libsndfile reports corrupt files in several ways
        raise BadAudioError(path, "unreadable", f"{type(e).__name__}: {e}") from e
    if data.shape[0] == 0:
        raise BadAudioError(path, "empty", "0 samples")
    low, high = PLAUSIBLE_RATES
    if not low <= rate <= high:
        raise BadAudioError(
            path, "implausible rate", f"{rate} Hz in the header, outside {low}..{high} Hz"
        )
    finite = np.isfinite(data)
    if not finite.all():
        raise BadAudioError(
            path, "non-finite", f"{int(data.size - finite.sum())} NaN/inf samples of {data.size}"
        )
    result = WavRead(audio=np.empty(0, np.int16))
    data = np.clip(data, -SAMPLE_LIMIT, SAMPLE_LIMIT)
    if data.shape[1] > 1:
        result.downmixed_from = data.shape[1]
    mono = data.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        result.resampled_from = int(rate)
        mono = resample(mono, int(rate), sample_rate)
    scaled = np.round(mono * 32768.0)
    result.clipped_samples = int(np.sum((scaled <= -32768) | (scaled >= 32767)))
    result.audio = np.clip(scaled, -32768, 32767).astype(np.int16)
    return result


# ------------------------------------------------------------------ files and splits


def list_wavs(folder: str) -> tuple[list[tuple[str, int]], list[str]]:
    """([(relative path, speaker id)] sorted by path, speaker names by id)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"wav_folder: {folder!r} is not a directory (the manual dir "
            "must be the folder of .wav files)."
        )

    def is_wav(name: str) -> bool:
        return name.lower().endswith(".wav") and not name.startswith(".")

    entries = sorted(os.listdir(folder))
    top = [e for e in entries if is_wav(e) and os.path.isfile(os.path.join(folder, e))]
    speakers: list[str] = [TOP_LEVEL_SPEAKER] if top else []
    files = [(e, 0) for e in top]
    for sub in entries:
        root = os.path.join(folder, sub)
        if sub.startswith(".") or not os.path.isdir(root):
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, folder).replace(os.sep, "/")
            found += [f"{rel}/{f}" for f in sorted(filenames) if is_wav(f)]
        if found:
            files += [(f, len(speakers)) for f in found]
            speakers.append(sub)
    if not files:
        raise FileNotFoundError(f"wav_folder: no .wav files in {folder!r} or its subfolders.")
    return sorted(files), speakers


def split_fraction(relative_path: str) -> float:
    """u(p) in [0, 1): the first 8 bytes of sha256 of the path, over 2^64."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(paths: list[str]) -> dict[str, list[str]]:
    """Deterministic train/validation/test assignment of relative paths (module docstring)."""
    splits: dict[str, list[str]] = {name: [] for name, _ in SPLIT_FRACTIONS}
    for p in sorted(paths):
        if len(paths) < 3:
            splits["train"].append(p)
            continue
        u = split_fraction(p)
        splits[next(name for name, upper in SPLIT_FRACTIONS if u < upper)].append(p)
    if len(paths) >= 3:
        for name in ("validation", "test", "train"):
            if splits[name]:
                continue
            donor = max(splits, key=lambda s: len(splits[s]))
            pick = (min if name == "train" else max)(splits[donor], key=split_fraction)
            splits[donor].remove(pick)
            splits[name].append(pick)
    return splits


def mel_path(wav_path: str) -> str:
    """The predicted mel's file beside a wav: `name.wav` -> `name.npy`."""
    return os.path.splitext(wav_path)[0] + ".npy"


def read_mel(wav_path: str) -> np.ndarray:
    """The (frames, n_mels) float32 mel stored beside `wav_path`, or raises BadAudioError."""
    path = mel_path(wav_path)
    if not os.path.isfile(path):
        raise BadAudioError(path, "missing mel", f"no {os.path.basename(path)} beside the wav")
    try:
        mel = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  numpy reports corrupt files in several ways
        raise BadAudioError(path, "bad mel", f"{type(e).__name__}: {e}") from e
    if mel.ndim != 2 or not np.issubdtype(mel.dtype, np.floating):
        raise BadAudioError(
            path, "bad mel", f"{mel.dtype} array of shape {mel.shape}; need float (frames, n_mels)"
        )
    finite = np.isfinite(mel)
    if not finite.all():
        raise BadAudioError(
            path, "bad mel", f"{int(mel.size - finite.sum())} NaN/inf values of {mel.size}"
        )
    return mel.astype(np.float32)


# ----------------------------------------------------------------------------- builder


def check_bad_audio_policy(bad_audio: str) -> None:
    """Raises ValueError unless `bad_audio` is one of BAD_AUDIO_POLICIES."""
    if bad_audio not in BAD_AUDIO_POLICIES:
        raise ValueError(f"bad_audio must be one of {BAD_AUDIO_POLICIES}, got {bad_audio!r}.")


def utterance_features(rate: int) -> dict:
    """The features every local-file builder stores: 16-bit audio at `rate`, the speaker id
    and the utterance id."""
    return {
        "audio": tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=rate),
        "speaker": np.int64,
        "id": tfds.features.Text(),
    }


@dataclasses.dataclass(eq=False)
class WavFolderConfig(tfds.core.BuilderConfig):
    """sample_rate: every example is stored at this rate (other files are resampled).
    mels: also store each wav's `name.npy` beside it as the feature 'mel'."""

    sample_rate: int = 22050
    mels: bool = False


def _describe(sample_rate: int, mels: bool) -> str:
    return f"Audio at {sample_rate} Hz" + (" with the mel from name.npy." if mels else ".")


def config_for(sample_rate: int, mels: bool = False) -> WavFolderConfig | str:
    """The builder config for a sample rate (and mels from files): a predefined name or a
    new config."""
    name = f"{int(sample_rate)}hz" + ("_mels" if mels else "")
    if any(c.name == name for c in WavFolder.BUILDER_CONFIGS):
        return name
    return WavFolderConfig(
        name=name,
        sample_rate=int(sample_rate),
        mels=bool(mels),
        description=_describe(sample_rate, mels),
    )


class WavFolder(tfds.core.GeneratorBasedBuilder):
    """Utterances from a folder of .wav files (optionally one subfolder per speaker)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: speaker subfolders, hash-based 90/5/5 splits, resampling, "
        "bad-audio policy skip | fail.",
    }
    BUILDER_CONFIGS = [
        WavFolderConfig(
            name=f"{rate}hz" + ("_mels" if mels else ""),
            sample_rate=rate,
            mels=mels,
            description=_describe(rate, mels),
        )
        for mels in (False, True)
        for rate in (16000, 22050, 24000, 44100, 48000)
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "22050hz"
    # Nothing to download. Also sidesteps tfds 4.9.10 looking up a checksums file through
    # `importlib_resources`, which it imports without depending on it (tensorflow/datasets#11212).
    url_infos = None
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point the manual dir at a folder of .wav files (optionally one subfolder per "
        "speaker): --config.data.manual_dir=DIR, or "
        "download_config=tfds.download.DownloadConfig(manual_dir=DIR)."
    )

    def __init__(self, *, manual_dir: str | None = None, bad_audio: str = "skip", **kwargs):
        check_bad_audio_policy(bad_audio)
        self._manual_dir = manual_dir
        self._bad_audio = bad_audio
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        rate = self.builder_config.sample_rate
        features = utterance_features(rate)
        if self.builder_config.mels:
            # (frames, n_mels): two unknown dimensions need an explicit encoding.
            features["mel"] = tfds.features.Tensor(
                shape=(None, None), dtype=np.float32, encoding="bytes"
            )
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(sample_rate=rate),
        )

    def _split_generators(self, dl_manager):
        folder = os.fspath(self._manual_dir or dl_manager.manual_dir)
        files, speakers = list_wavs(folder)
        # First pass: decode every file once to apply the policy, so that splits are drawn
        # from usable files only (every declared split then has examples).
        skipped: dict[str, str] = {}
        usable: list[tuple[str, int]] = []
        for relative, speaker in files:
            try:
                read_wav(os.path.join(folder, relative), None)
                if self.builder_config.mels:
                    read_mel(os.path.join(folder, relative))
            except BadAudioError as e:
                if self._bad_audio == "fail":
                    raise ValueError(
                        f"wav_folder: {e.path} is unusable by the rule '{e.rule}' ({e.detail}) "
                        "and bad_audio='fail'. Fix or remove the file, or use bad_audio='skip' "
                        "(--config.data.bad_audio=skip) to leave it out."
                    ) from e
                logging.warning("wav_folder: skipping %s: %s (%s)", e.path, e.rule, e.detail)
                skipped[relative] = e.rule
                continue
            usable.append((relative, speaker))
        (logging.warning if skipped else logging.info)(
            "wav_folder: %d of %d files usable in %s; skipped %d %s",
            len(usable),
            len(files),
            folder,
            len(skipped),
            _count_rules(skipped),
        )
        if not usable:
            raise ValueError(
                f"wav_folder: none of the {len(files)} .wav files in {folder!r} "
                f"is usable: {skipped}"
            )
        speaker_of = dict(usable)
        splits = {k: v for k, v in assign_splits(list(speaker_of)).items() if v}
        self.info.metadata["speakers"] = speakers
        self.info.metadata["build_report"] = {"skipped": skipped, "splits": {}}
        logging.info(
            "wav_folder: %d speakers; splits %s",
            len(speakers),
            {k: len(v) for k, v in splits.items()},
        )
        return {
            name: self._generate_examples(folder, name, [(p, speaker_of[p]) for p in paths])
            for name, paths in splits.items()
        }

    def _generate_examples(self, folder: str, split: str, files: list[tuple[str, int]]):
        rate = self.builder_config.sample_rate
        report = {"kept": 0, "downmixed": [], "resampled": [], "clipped": []}
        self.info.metadata["build_report"]["splits"][split] = report
        for relative, speaker in files:
            read = read_wav(os.path.join(folder, relative), rate)
            if read.downmixed_from:
                logging.info(
                    "wav_folder: %s: downmixed %d channels to mono", relative, read.downmixed_from
                )
                report["downmixed"].append(relative)
            if read.resampled_from:
                logging.info(
                    "wav_folder: %s: resampled %d Hz -> %d Hz", relative, read.resampled_from, rate
                )
                report["resampled"].append(relative)
            if read.clipped_samples:
                logging.warning(
                    "wav_folder: %s: %d samples at full scale (clipped audio); kept",
                    relative,
                    read.clipped_samples,
                )
                report["clipped"].append(relative)
            report["kept"] += 1
            example = {"audio": read.audio, "speaker": speaker, "id": relative}
            if self.builder_config.mels:
                example["mel"] = read_mel(os.path.join(folder, relative))
            yield relative, example
        logging.info(
            "wav_folder %s split: %d files; downmixed %d, resampled %d, clipped %d",
            split,
            report["kept"],
            len(report["downmixed"]),
            len(report["resampled"]),
            len(report["clipped"]),
        )


def _count_rules(skipped: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in skipped.values():
        counts[rule] = counts.get(rule, 0) + 1
    return counts
