"""`espeak_corpus`: the embedded default speech corpus, synthesized locally with espeak-ng.

Nothing is downloaded. Sentences come from a small English grammar over a word list, drawn
with a fixed seed per (speaker, utterance); each is spoken by `espeak-ng` (the Debian/Ubuntu
package, 22050 Hz mono 16-bit) in 8 voices that differ in accent, voice variant, pitch and
speed. Each utterance lasts 1 to 4 seconds (including espeak-ng's 0.15 to 0.3 s of
trailing silence): a sentence spoken outside that range is replaced by the next one drawn
for the same (speaker, utterance).

Features: {'audio': int16 (T,) at 22050 Hz, 'speaker': int64 class in 0..7 (the voice,
`ClassLabel` named by its espeak-ng voice), 'id': 's<speaker>_<index>'}.

Splits, stratified over speakers: of each voice's n utterances, indices [0, 0.8 n) are
train, [0.8 n, 0.9 n) validation and the rest test.

Configs:
  default  50 utterances per voice: 400 in all (320 / 40 / 40), 16 minutes of audio
           (mean 2.4 s per utterance)
  small    5 per voice: 40 in all (24 / 8 / 8), for tests

Determinism: the same espeak-ng version writes the same bytes on every build (the tests
check it); the version used is recorded in `info.metadata['espeak_ng_version']`. Another
espeak-ng release may pronounce differently, which changes the audio, not the sentences.

Building runs espeak-ng once per utterance, on a thread pool.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import shutil
import subprocess

import numpy as np
import soundfile
import tensorflow_datasets as tfds

SAMPLE_RATE = 22050

# (espeak-ng voice with variant, speed in words per minute, pitch 0..99)
VOICES: tuple[tuple[str, int, int], ...] = (
    ("en-us+m1", 165, 40),
    ("en-us+f2", 175, 65),
    ("en-gb+m3", 155, 45),
    ("en-gb+f4", 170, 70),
    ("en-gb-scotland+m2", 160, 35),
    ("en-029+f1", 180, 60),
    ("en-gb-x-rp+m4", 150, 50),
    ("en-us+f5", 165, 75),
)

_SEED = 20240611
MIN_SECONDS, MAX_SECONDS = 1.0, 4.0
_MAX_ATTEMPTS = 20
_INSTALL_HINT = (
    "Install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) or "
    "`brew install espeak-ng` (macOS), or pass espeak_binary=PATH to the builder."
)

# ---------------------------------------------------------------------- the grammar

_DETERMINERS = ("the", "a", "every", "one", "that", "this", "my", "our", "some")
_ADJECTIVES = (
    "old",
    "young",
    "quiet",
    "bright",
    "heavy",
    "small",
    "green",
    "narrow",
    "warm",
    "distant",
    "happy",
    "silver",
    "broken",
    "gentle",
    "early",
    "careful",
    "little",
    "golden",
    "simple",
    "tired",
    "clever",
    "wooden",
    "strange",
    "open",
)
_NOUNS = (
    "river",
    "teacher",
    "garden",
    "window",
    "doctor",
    "market",
    "letter",
    "engine",
    "mountain",
    "painter",
    "bridge",
    "kitchen",
    "sailor",
    "village",
    "basket",
    "clock",
    "forest",
    "student",
    "lantern",
    "harbor",
    "neighbor",
    "candle",
    "wagon",
    "meadow",
    "farmer",
    "island",
    "pocket",
    "violin",
    "station",
    "feather",
)
_VERBS = (
    "found",
    "carried",
    "painted",
    "followed",
    "opened",
    "watched",
    "moved",
    "cleaned",
    "visited",
    "borrowed",
    "repaired",
    "noticed",
    "remembered",
    "described",
    "lifted",
    "closed",
    "wanted",
    "answered",
)
_INTRANSITIVE = (
    "waited",
    "laughed",
    "listened",
    "arrived",
    "smiled",
    "traveled",
    "rested",
    "whispered",
    "returned",
    "worked",
)
_ADVERBS = (
    "slowly",
    "quickly",
    "again",
    "today",
    "yesterday",
    "twice",
    "quietly",
    "carefully",
    "early",
    "together",
    "at last",
    "once more",
)
_PREPOSITIONS = (
    "near",
    "behind",
    "under",
    "beside",
    "across",
    "through",
    "above",
    "inside",
    "along",
    "around",
)
_NUMBERS = (
    "two",
    "three",
    "four",
    "five",
    "seven",
    "nine",
    "ten",
    "twelve",
    "twenty",
    "forty",
    "a hundred",
)
_SHORT = (
    "Good morning.",
    "Thank you.",
    "Not yet.",
    "Of course.",
    "Come here.",
    "Very well.",
    "Hello there.",
    "Look again.",
    "Wait for me.",
    "Right away.",
)
_QUESTIONS = ("Where is", "Who saw", "Did you find", "Have you seen", "Why did they move")


def _pick(rng: np.random.RandomState, words: tuple[str, ...]) -> str:
    return words[rng.randint(len(words))]


def _noun_phrase(rng: np.random.RandomState) -> str:
    words = [_pick(rng, _DETERMINERS)]
    if rng.rand() < 0.6:
        words.append(_pick(rng, _ADJECTIVES))
    words.append(_pick(rng, _NOUNS))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def _clause(rng: np.random.RandomState) -> str:
    parts = [_noun_phrase(rng)]
    if rng.rand() < 0.65:
        parts += [_pick(rng, _VERBS), _noun_phrase(rng)]
    else:
        parts.append(_pick(rng, _INTRANSITIVE))
    if rng.rand() < 0.4:
        parts += [_pick(rng, _PREPOSITIONS), _noun_phrase(rng)]
    if rng.rand() < 0.3:
        parts.append(_pick(rng, _ADVERBS))
    return " ".join(parts)


def sentence(speaker: int, index: int, attempt: int = 0) -> str:
    """Text of utterance `index` of `speaker`: a pure function of the arguments and the seed.

    `attempt` > 0 draws another sentence, for when one is spoken too short or too long.
    """
    rng = np.random.RandomState([_SEED, speaker, index, attempt])
    kind = rng.rand()
    if kind < 0.12:
        return _pick(rng, _SHORT)
    if kind < 0.24:
        return f"{_pick(rng, _QUESTIONS)} {_noun_phrase(rng)}?"
    if kind < 0.36:
        return (
            f"{_pick(rng, _NUMBERS).capitalize()} {_pick(rng, _ADJECTIVES)} "
            f"{_pick(rng, _NOUNS)}s {_pick(rng, _INTRANSITIVE)} {_pick(rng, _ADVERBS)}."
        )
    text = _clause(rng)
    if rng.rand() < 0.1:
        text += f", and {_clause(rng)}"
    return text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- espeak-ng


def find_espeak(binary: str = "espeak-ng") -> str:
    """Path of the espeak-ng executable, or a RuntimeError that says how to install it."""
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(
            f"The espeak_corpus data set is synthesized locally with espeak-ng, but the "
            f"executable {binary!r} was not found on PATH. {_INSTALL_HINT}"
        )
    return path


def espeak_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def speak(binary: str, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """int16 (T,) audio of `text` spoken by espeak-ng at 22050 Hz."""
    cmd = [binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"espeak-ng failed ({' '.join(cmd)}): {result.stderr.decode(errors='replace').strip()}"
        )
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="int16", always_2d=True)
    if rate != SAMPLE_RATE or samples.shape[1] != 1 or samples.shape[0] == 0:
        raise RuntimeError(
            f"espeak-ng gave {samples.shape[0]} samples x {samples.shape[1]} "
            f"channels at {rate} Hz for {' '.join(cmd)}; expected mono "
            f"{SAMPLE_RATE} Hz speech."
        )
    return samples[:, 0]


def utterance(binary: str, speaker: int, index: int) -> np.ndarray:
    """int16 audio of utterance `index` of `speaker`: the first of its sentences (attempt 0,
    1, ...) that lasts between MIN_SECONDS and MAX_SECONDS when spoken."""
    voice, speed, pitch = VOICES[speaker]
    for attempt in range(_MAX_ATTEMPTS):
        audio = speak(binary, sentence(speaker, index, attempt), voice, speed, pitch)
        if MIN_SECONDS <= len(audio) / SAMPLE_RATE <= MAX_SECONDS:
            return audio
    raise RuntimeError(
        f"espeak-ng spoke none of {_MAX_ATTEMPTS} sentences for speaker "
        f"{speaker} ({voice}) utterance {index} in {MIN_SECONDS} to "
        f"{MAX_SECONDS} s; is {binary} a standard espeak-ng?"
    )


# ----------------------------------------------------------------------------- builder


@dataclasses.dataclass(eq=False)
class EspeakCorpusConfig(tfds.core.BuilderConfig):
    """utterances_per_speaker: the size; splits take 80/10/10 % of each speaker's."""

    utterances_per_speaker: int = 50


def split_indices(n: int) -> dict[str, range]:
    """Utterance indices of each split for n utterances per speaker (80/10/10, >= 1 each)."""
    if n < 3:
        raise ValueError(f"utterances_per_speaker must be >= 3, got {n}.")
    n_train = max(1, int(round(0.8 * n)))
    n_valid = max(1, int(round(0.1 * n)))
    if n_train + n_valid >= n:
        n_train = n - n_valid - 1
    return {
        "train": range(0, n_train),
        "validation": range(n_train, n_train + n_valid),
        "test": range(n_train + n_valid, n),
    }


class EspeakCorpus(tfds.core.GeneratorBasedBuilder):
    """Eight espeak-ng voices reading generated English sentences (built locally)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: 8 espeak-ng voices, sentences from a seeded grammar, "
        "22050 Hz int16, 80/10/10 splits stratified over speakers.",
    }
    BUILDER_CONFIGS = [
        EspeakCorpusConfig(
            name="default", utterances_per_speaker=50, description="50 utterances per voice (400)."
        ),
        EspeakCorpusConfig(
            name="small",
            utterances_per_speaker=5,
            description="5 utterances per voice (40), for tests.",
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    # Nothing to download. Also sidesteps tfds 4.9.10 looking up a checksums file through
    # `importlib_resources`, which it imports without depending on it (tensorflow/datasets#11212).
    url_infos = None

    def __init__(self, *, espeak_binary: str | None = None, **kwargs):
        """espeak_binary: the espeak-ng executable (default: $PWAVENET_ESPEAK or espeak-ng)."""
        self._espeak_binary = espeak_binary or os.environ.get("PWAVENET_ESPEAK", "espeak-ng")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Audio(
                        shape=(None,), dtype=np.int16, sample_rate=SAMPLE_RATE
                    ),
                    "speaker": tfds.features.ClassLabel(names=[v for v, _, _ in VOICES]),
                    "id": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        binary = find_espeak(self._espeak_binary)
        self.info.metadata["espeak_ng_version"] = espeak_version(binary)
        self.info.metadata["voices"] = [
            {"speaker": i, "voice": v, "speed_wpm": s, "pitch": p}
            for i, (v, s, p) in enumerate(VOICES)
        ]
        splits = split_indices(self.builder_config.utterances_per_speaker)
        return {name: self._generate_examples(binary, indices) for name, indices in splits.items()}

    def _generate_examples(self, binary: str, indices: range):
        jobs = [(speaker, index) for speaker in range(len(VOICES)) for index in indices]

        def run(job):
            return utterance(binary, *job)

        workers = min(8, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for (speaker, index), audio in zip(jobs, pool.map(run, jobs)):
                key = f"s{speaker}_{index:03d}"
                yield key, {"audio": audio, "speaker": speaker, "id": key}
