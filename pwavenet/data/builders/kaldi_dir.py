"""`kaldi_dir`: a Kaldi / ESPnet data directory (wav.scp, optional segments and utt2spk) as a
tfds data set.

The directory is tfds's manual dir (`--config.data.manual_dir=D`, or the builder keyword
`manual_dir=D`). Lists, one entry per line, fields separated by whitespace:

    wav.scp    <recording-id> <path>             a wav (any format soundfile reads) per id
    segments   <utt-id> <recording-id> <start> <end>   optional: utterances are these pieces
               of the recordings, samples [round(start * rate), round(end * rate)) at the
               stored rate, in seconds; end -1 means the recording's end. Without it every
               recording is one utterance (utt-id = recording-id).
    utt2spk    <utt-id> <speaker>                optional: speakers get integer ids in sorted
               name order over all splits (recorded in info.metadata['speakers']); without it
               every utterance is speaker 0.

Paths in wav.scp that are relative resolve against the current directory (Kaldi's and
ESPnet's recipes write them relative to the recipe directory they run in), else against D.
A piped command (`<id> sox in.flac -t wav - |`) or an archive offset (`<id> feats.ark:12`) is
refused with its file and line: pwavenet reads audio files only, so write the command's output
to wav files and list those. A malformed line (too few fields, a start or end that is not a
number, a repeated id) is refused the same way.

Splits: when D has split subfolders, each holding its own wav.scp (ESPnet's data/train,
data/dev, data/eval1, or Kaldi's data/train, data/test), each subfolder is a split of that
name: `--config.data.train_split=train --config.data.eval_split=dev`. Otherwise D itself holds
the lists and its utterances are split 90/5/5 by utterance id as wav_folder splits file names
(train, validation, test; pwavenet.data.builders.wav_folder.assign_splits). When D holds a
wav.scp, its subfolders are not read.

Bad entries follow the builder keyword `bad_audio` ('skip' by default; the input pipeline
passes config.data.bad_audio), as wav_folder's: under 'skip' each is logged with its rule and
left out, under 'fail' the first raises ValueError naming it. The rules: wav_folder's audio
rules (unreadable, empty, non-finite, implausible rate), 'missing file' (the path does not
exist), 'unknown recording' (a segment of a recording wav.scp does not list), 'bad segment'
(start >= end, or beyond the recording's end by more than 0.1 s; a smaller overrun is cut to the
end, as Kaldi's extract-segments does), and 'no speaker' (an utterance utt2spk does not list).
Downmixing, resampling to the config's rate and clipping are wav_folder's. Features and builder
configs are wav_folder's without mels: {'audio': int16 (T,), 'speaker': int64, 'id': utt-id},
`KaldiDirConfig(sample_rate=...)`, predefined as '16000hz' ... '48000hz'.

A prepared data set is not rebuilt when the lists change: use a fresh data_dir.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from pwavenet.data.builders import wav_folder

SEGMENT_OVERRUN_SECONDS = 0.1
_ARCHIVE = re.compile(r"\.ark:\d+$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One example to build: the whole recording, or [start, end) seconds of it (end None:
    to the recording's end)."""

    utt_id: str
    path: str
    start: float = 0.0
    end: float | None = None
    speaker: str | None = None


def _lines(path: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line."""
    with open(path, encoding="utf-8") as f:
        return [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]


def _entry_error(path: str, number: int, problem: str) -> ValueError:
    return ValueError(f"kaldi_dir: {path} line {number}: {problem}")


def read_wav_scp(path: str, data_dir: str) -> dict[str, str]:
    """{recording id: audio path} of a wav.scp; refuses piped commands and archives."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().split(maxsplit=1)
            if len(fields) < 2:
                raise _entry_error(path, number, f"{line.strip()!r} has no path after its id.")
            key, target = fields[0], fields[1].strip()
            if target.endswith("|") or target.startswith("|"):
                raise _entry_error(
                    path,
                    number,
                    f"'{key}' is a piped command ({target!r}); pwavenet reads audio files only: "
                    "run the command to write a wav file and list its path instead.",
                )
            if _ARCHIVE.search(target):
                raise _entry_error(
                    path,
                    number,
                    f"'{key}' points into an archive ({target!r}); list a wav file's path.",
                )
            if key in out:
                raise _entry_error(path, number, f"'{key}' is listed twice.")
            if not os.path.isabs(target) and not os.path.exists(target):
                target = os.path.join(data_dir, target)  # (missing in both: named from D)
            out[key] = os.path.abspath(target)
    return out


def _read_segments(path: str) -> list[tuple[str, str, float, float | None]]:
    out, seen = [], set()
    for number, fields in _lines(path):
        if len(fields) != 4:
            raise _entry_error(
                path, number, f"{' '.join(fields)!r}; expected <utt-id> <recording-id> <start> "
                "<end> (seconds)."
            )
        utt, reco, start, end = fields
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise _entry_error(path, number, f"start {start!r} or end {end!r} is not a number.")
        if utt in seen:
            raise _entry_error(path, number, f"'{utt}' is listed twice.")
        seen.add(utt)
        out.append((utt, reco, start_s, None if end_s == -1 else end_s))
    return out


def _read_utt2spk(path: str) -> dict[str, str]:
    out = {}
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise _entry_error(path, number, f"{' '.join(fields)!r}; expected <utt-id> <speaker>.")
        out[fields[0]] = fields[1]
    return out


def read_list(folder: str) -> tuple[list[Utterance], dict[str, str]]:
    """(utterances, {utt-id: problem rule}) of one data directory: its wav.scp, segments and
    utt2spk. Entries that refer to what another list lacks are returned as problems
    ('unknown recording', 'no speaker'); format errors raise ValueError."""
    scp = os.path.join(folder, "wav.scp")
    recordings = read_wav_scp(scp, folder)
    segments_path = os.path.join(folder, "segments")
    if os.path.isfile(segments_path):
        pieces = _read_segments(segments_path)
    else:
        pieces = [(reco, reco, 0.0, None) for reco in recordings]
    utt2spk_path = os.path.join(folder, "utt2spk")
    speakers = _read_utt2spk(utt2spk_path) if os.path.isfile(utt2spk_path) else None
    utterances, problems = [], {}
    for utt, reco, start, end in pieces:
        if reco not in recordings:
            problems[utt] = ("unknown recording", f"{reco!r} is not in {scp}")
            continue
        if speakers is not None and utt not in speakers:
            problems[utt] = ("no speaker", f"not in {utt2spk_path}")
            continue
        speaker = speakers[utt] if speakers is not None else None
        utterances.append(Utterance(utt, recordings[reco], start, end, speaker))
    return utterances, problems


def split_folders(data_dir: str) -> dict[str, str]:
    """{split: folder}: D itself as '' when it holds wav.scp, else its subfolders that do."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"kaldi_dir: {data_dir!r} is not a directory (config.data.manual_dir must be a "
            "Kaldi/ESPnet data directory holding wav.scp, or its split subfolders)."
        )
    if os.path.isfile(os.path.join(data_dir, "wav.scp")):
        return {"": data_dir}
    out = {}
    for name in sorted(os.listdir(data_dir)):
        sub = os.path.join(data_dir, name)
        if os.path.isfile(os.path.join(sub, "wav.scp")):
            if not _SPLIT_NAME.match(name):
                raise ValueError(
                    f"kaldi_dir: split folder {sub!r}: a split name may hold letters, digits "
                    "and '_' only; rename the folder."
                )
            out[name] = sub
    if not out:
        raise FileNotFoundError(
            f"kaldi_dir: no wav.scp in {data_dir!r} or in its subfolders; point "
            "config.data.manual_dir at a Kaldi/ESPnet data directory."
        )
    return out


def cut(audio: np.ndarray, rate: int, u: Utterance) -> np.ndarray:
    """The utterance's samples of its recording's int16 audio at `rate`, or raises
    wav_folder.BadAudioError('bad segment')."""
    total = len(audio)
    start = int(round(u.start * rate))
    end = total if u.end is None else int(round(u.end * rate))
    if end > total and end - total <= SEGMENT_OVERRUN_SECONDS * rate:
        end = total
    if not 0 <= start < end <= total:
        raise wav_folder.BadAudioError(
            u.utt_id,
            "bad segment",
            f"[{u.start}, {u.end}) s of {u.path}, which lasts {total / rate:.3f} s",
        )
    return audio[start:end]


@dataclasses.dataclass(eq=False)
class KaldiDirConfig(tfds.core.BuilderConfig):
    """sample_rate: every example is stored at this rate (other recordings are resampled)."""

    sample_rate: int = 22050


def config_for(sample_rate: int) -> KaldiDirConfig | str:
    """The builder config for a sample rate: a predefined name or a new config."""
    name = f"{int(sample_rate)}hz"
    if any(c.name == name for c in KaldiDir.BUILDER_CONFIGS):
        return name
    return KaldiDirConfig(name=name, sample_rate=int(sample_rate))


class KaldiDir(tfds.core.GeneratorBasedBuilder):
    """Utterances listed by a Kaldi/ESPnet data directory (wav.scp, segments, utt2spk)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "wav.scp, segments, utt2spk; split folders or 90/5/5 by id."}
    BUILDER_CONFIGS = [
        KaldiDirConfig(name=f"{rate}hz", sample_rate=rate, description=f"Audio at {rate} Hz.")
        for rate in (16000, 22050, 24000, 44100, 48000)
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "22050hz"
    url_infos = None  # nothing to download (see wav_folder)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point the manual dir at a Kaldi/ESPnet data directory (wav.scp, optional segments "
        "and utt2spk, or split subfolders of them): --config.data.manual_dir=DIR."
    )

    def __init__(self, *, manual_dir: str | None = None, bad_audio: str = "skip", **kwargs):
        wav_folder.check_bad_audio_policy(bad_audio)
        self._manual_dir = manual_dir
        self._bad_audio = bad_audio
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        rate = self.builder_config.sample_rate
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(wav_folder.utterance_features(rate)),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(sample_rate=rate),
        )

    def _bad(self, utt: str, rule: str, detail: str, skipped: dict[str, str]) -> None:
        if self._bad_audio == "fail":
            raise ValueError(
                f"kaldi_dir: utterance {utt!r} is unusable by the rule '{rule}' ({detail}) and "
                "bad_audio='fail'. Fix or remove its entry, or use bad_audio='skip' "
                "(--config.data.bad_audio=skip) to leave it out."
            )
        logging.warning("kaldi_dir: skipping %s: %s (%s)", utt, rule, detail)
        skipped[utt] = rule

    def _split_generators(self, dl_manager):
        data_dir = os.fspath(self._manual_dir or dl_manager.manual_dir)
        folders = split_folders(data_dir)
        rate = self.builder_config.sample_rate
        skipped: dict[str, str] = {}
        lists: dict[str, list[Utterance]] = {}
        for split, folder in folders.items():
            utterances, problems = read_list(folder)
            for utt, (rule, detail) in problems.items():
                self._bad(utt, rule, detail, skipped)
            usable = []
            for u in utterances:  # first pass: the policy, so that splits hold usable ones
                try:
                    if not os.path.isfile(u.path):
                        raise wav_folder.BadAudioError(u.path, "missing file", "no such file")
                    cut(wav_folder.read_wav(u.path, rate).audio, rate, u)
                except wav_folder.BadAudioError as e:
                    self._bad(u.utt_id, e.rule, f"{e.path}: {e.detail}", skipped)
                    continue
                usable.append(u)
            lists[split] = usable
        total = sum(len(v) for v in lists.values())
        (logging.warning if skipped else logging.info)(
            "kaldi_dir: %d utterances usable in %s; skipped %d", total, data_dir, len(skipped)
        )
        if not total:
            raise ValueError(f"kaldi_dir: no usable utterance in {data_dir!r}: {skipped}")
        names = sorted({u.speaker for us in lists.values() for u in us if u.speaker is not None})
        speaker_id = {name: i for i, name in enumerate(names)}
        self.info.metadata["speakers"] = names or [wav_folder.TOP_LEVEL_SPEAKER]
        self.info.metadata["build_report"] = {"skipped": skipped}
        if "" in lists:  # one list: 90/5/5 by utterance id
            by_id = {u.utt_id: u for u in lists.pop("")}
            for split, ids in wav_folder.assign_splits(list(by_id)).items():
                if ids:
                    lists[split] = [by_id[i] for i in ids]
        logging.info("kaldi_dir: splits %s", {k: len(v) for k, v in lists.items()})
        return {
            split: self._generate_examples(utterances, speaker_id)
            for split, utterances in lists.items()
            if utterances
        }

    def _generate_examples(self, utterances: list[Utterance], speaker_id: dict[str, int]):
        rate = self.builder_config.sample_rate
        cached_path, cached = None, None
        for u in utterances:
            if u.path != cached_path:  # segments of one recording are usually listed together
                cached_path, cached = u.path, wav_folder.read_wav(u.path, rate).audio
            speaker = speaker_id[u.speaker] if u.speaker is not None else 0
            yield u.utt_id, {"audio": cut(cached, rate, u), "speaker": speaker, "id": u.utt_id}
