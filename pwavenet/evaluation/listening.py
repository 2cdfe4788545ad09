"""The listening set: the first validation utterances cut to one length, teacher audio and the
Griffin-Lim baseline for their mels, log-mel distances, spectrogram images, wav files, the
report's measures of it, and the training job's audio summaries.

Spectral distance (`log_mel_l1`): mean over frames and bins of |log-mel(generated) -
log-mel(reference)| with the project's one log-mel definition (`audio.log_mel_spectrogram`), in
nats of mel magnitude. Identical audio scores 0. For scale, the report also gives the same
distance between different reference utterances (each against the next, cyclically,
`between_references`): what a model that ignored its mel and produced other, perfectly natural
speech would score.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from pwavenet import audio, training
from pwavenet.data import whole_utterances
from pwavenet.evaluation import densities, quality
from pwavenet.models import builders, generation

__all__ = [
    "listening_utterances",
    "listening_griffin_lim",
    "write_listening_set",
    "listening_scores",
    "generate_for",
    "teacher_samples",
    "log_mel_l1",
    "mel_comparison_image",
    "listening_set",
    "between_references",
    "write_wavs",
    "audio_summaries",
]


def listening_utterances(
    config, num_utterances: int | None = None, max_seconds: float | None = None
) -> dict[str, np.ndarray]:
    """The listening set: the first validation utterances (config.eval.num_utterances unless
    given), cut to one length (config.eval.max_seconds unless given), as one batch."""
    return whole_utterances.validation_utterances(
        config,
        num_utterances=num_utterances or config.eval.num_utterances,
        max_seconds=max_seconds or config.eval.max_seconds,
    )


def listening_griffin_lim(config, utterances: dict[str, np.ndarray]) -> np.ndarray:
    """The Griffin-Lim reconstruction (B, T) of the listening set's mels (quality.griffin_lim)."""
    return np.stack(
        [
            quality.griffin_lim(u["mel"], config.mel, len(u["audio"]))
            for u in listening_set(utterances)
        ]
    )


def write_listening_set(
    config, out: str, reference: np.ndarray, systems: dict[str, np.ndarray], **image_options
) -> None:
    """<out>/reference_<i>.wav and <out>/<system>_<i>.wav for each of `systems` (name -> (B, T)),
    and their log-mel spectrograms in <out>/mels.png (`mel_comparison_image` with
    `image_options`), in the order of `systems`."""
    write_wavs(out, config.mel.sample_rate, {"reference": reference, **systems})
    mel_comparison_image(
        config, reference, systems, os.path.join(out, "mels.png"), **image_options
    )


def listening_scores(
    config,
    teacher: training.Teacher,
    utterances: dict[str, np.ndarray],
    student_audio: np.ndarray,
    teacher_audio: np.ndarray,
) -> dict[str, float]:
    """A student report's measures of the listening set: the log-mel L1 of the student's and
    the teacher's audio to the reference (and between references), and the teacher's NLL of
    the student's, its own and the real audio."""
    reference = utterances["audio"]
    student_l1 = log_mel_l1(config, student_audio, reference)
    teacher_l1 = log_mel_l1(config, teacher_audio, reference)
    teacher_nll = densities.teacher_nll_of(teacher, utterances)
    return {
        "log_mel_l1_student": float(np.mean(student_l1)),
        "log_mel_l1_teacher": float(np.mean(teacher_l1)),
        "log_mel_l1_between_references": between_references(config, reference),
        "student_to_teacher_l1_ratio": float(np.mean(student_l1) / np.mean(teacher_l1)),
        "teacher_nll_of_student_audio": teacher_nll(student_audio),
        "teacher_nll_of_teacher_audio": teacher_nll(teacher_audio),
        "teacher_nll_of_real_audio": teacher_nll(reference),
    }


def generate_for(model, config, params, utterances: dict[str, np.ndarray], rng) -> np.ndarray:
    """Teacher audio (B, T) for a batch of utterances' mels (and speakers)."""

    mel, speaker = builders.model_inputs(config, utterances)
    num_samples = utterances["audio"].shape[1]
    return np.asarray(teacher_samples(model, params, rng, mel, speaker, num_samples))


def teacher_samples(model, params, rng, mel, speaker, num_samples: int):
    """`generation.generate` for model inputs as `builders.model_inputs` gives them: (B, T). Not
    traced in a jit of its own, so that a batch spreads over the local devices
    (`placement.spread_devices`); the sampler compiles once per model and shape."""
    return generation.generate(
        model,
        params,
        rng,
        mel=mel,
        speaker=speaker,
        num_samples=None if mel is not None else num_samples,
    )


def log_mel_l1(config, generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-utterance mean |log-mel difference|: (B,)."""
    a = np.asarray(audio.log_mel_spectrogram(np.asarray(generated, np.float32), config.mel))
    b = np.asarray(audio.log_mel_spectrogram(np.asarray(reference, np.float32), config.mel))
    return np.mean(np.abs(a - b), axis=(-2, -1))


def mel_comparison_image(
    config,
    reference: np.ndarray,
    others: dict[str, np.ndarray],
    path: str | None = None,
    *,
    models_as_rows: bool = False,
) -> np.ndarray:
    """Log-mel images: per utterance a row with the reference, then each entry of `others`;
    with `models_as_rows`, a row per model (reference first) and a column per utterance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {"reference": reference, **others}
    mels = {
        k: np.asarray(audio.log_mel_spectrogram(np.asarray(v, np.float32), config.mel))
        for k, v in columns.items()
    }
    n = reference.shape[0]
    rows, cols = (len(columns), n) if models_as_rows else (n, len(columns))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 2.4 * rows), squeeze=False)
    vmin = min(float(m.min()) for m in mels.values())
    vmax = max(float(m.max()) for m in mels.values())
    for i in range(n):
        for j, (name, m) in enumerate(mels.items()):
            ax = axes[j, i] if models_as_rows else axes[i, j]
            ax.imshow(m[i].T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
            ax.set_title(f"{name} #{i}", fontsize=9)
            ax.set_xlabel("frame")
            ax.set_ylabel("mel bin")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=80)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


# ------------------------------------------------------------------- quality over a split


def listening_set(utterances: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """`whole_utterances.validation_utterances`' batch as a list of utterances."""
    return [
        {"audio": a, "mel": m, "speaker": int(s), "id": i}
        for a, m, s, i in zip(
            utterances["audio"], utterances["mel"], utterances["speaker"], utterances["id"]
        )
    ]


def between_references(config, reference: np.ndarray) -> float:
    """The log-mel L1 between different reference utterances (each against the next): what a
    model that ignored its mel and made other natural speech would score; NaN for one."""
    if reference.shape[0] < 2:
        return math.nan
    return float(np.mean(log_mel_l1(config, np.roll(reference, 1, axis=0), reference)))


def write_wavs(out: str, sample_rate: int, audio_by_name: dict[str, np.ndarray]) -> None:
    """<out>/<name>_<i>.wav, 16-bit, for each (N, T) array."""
    for name, batch in audio_by_name.items():
        for i, x in enumerate(batch):
            audio.write_wav(os.path.join(out, f"{name}_{i}.wav"), x, sample_rate)


def audio_summaries(config, name: str, synthesize_utterances):
    """A `Job.summaries` that writes audio of validation utterances and a log-mel image.

    synthesize_utterances(ema_params, utterances, rng) -> (B, T) audio for the utterances' mels. The
    references are read once, at the first summary, and written beside the first audio.
    """
    references = {}

    def summaries(writer: training.Writer, step: int, ema_params):
        if not references:
            references.update(
                whole_utterances.validation_utterances(
                    config, num_utterances=2, max_seconds=config.train.audio_seconds
                )
            )
            writer.audio(step, "reference", references["audio"], config.mel.sample_rate)
        generated = np.asarray(
            synthesize_utterances(ema_params, references, jax.random.PRNGKey(step))
        )
        writer.audio(step, name, generated, config.mel.sample_rate)
        writer.image(
            step,
            f"mel/reference_vs_{name}",
            mel_comparison_image(config, references["audio"], {name: generated}),
        )

    return summaries
