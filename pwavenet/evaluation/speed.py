"""Generation speed of the teacher's cached sampler and the student's parallel pass."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pwavenet import training
from pwavenet.evaluation.listening import teacher_samples
from pwavenet.models import builders, iaf
from pwavenet.training import timing

__all__ = [
    "generation_speed",
    "student_generation_speed",
    "timed_listening_audio",
]


def generation_speed(
    model, config, params, batch_size: int, seconds: float, repeats: int = 2
) -> dict[str, float]:
    """Cached-generation throughput for `seconds` of audio at `batch_size` (median of
    `repeats` runs after compiling)."""
    hop = config.mel.hop_length
    frames = max(1, int(seconds * config.mel.sample_rate) // hop)
    num_samples = frames * hop
    rng = jax.random.PRNGKey(0)
    mel = jnp.zeros((batch_size, frames, config.mel.n_mels)) - 5.0 if config.model.n_mels else None
    speaker = jnp.zeros((batch_size,), jnp.int32) if config.model.num_speakers else None
    best = timing.median_seconds(
        lambda: teacher_samples(model, params, rng, mel, speaker, num_samples), repeats
    )
    audio_seconds = batch_size * num_samples / config.mel.sample_rate
    return {
        "batch_size": batch_size,
        "seconds_per_utterance": num_samples / config.mel.sample_rate,
        "samples_per_second": batch_size * num_samples / best,
        # Generation time over the duration of all audio generated: < 1 is faster than real time.
        "real_time_factor": best / audio_seconds,
    }


def student_generation_speed(
    student, config, params, teacher, batch_size: int, seconds: float
) -> dict[str, float]:
    """Student synthesis (one parallel pass, `iaf.sample`) and the teacher's cached generation
    (`generation_speed`) of `seconds` of audio per utterance at `batch_size`, both after
    compiling, on the same constant mels."""
    teacher_speed = generation_speed(
        teacher.model, teacher.config, teacher.params, batch_size, seconds, repeats=1
    )
    hop = config.mel.hop_length
    frames = max(1, int(seconds * config.mel.sample_rate) // hop)
    num_samples = frames * hop
    mel = jnp.zeros((batch_size, frames, config.mel.n_mels)) - 5.0 if config.model.n_mels else None
    speaker = jnp.zeros((batch_size,), jnp.int32) if config.model.num_speakers else None
    rng = jax.random.PRNGKey(0)
    student_seconds = timing.median_seconds(
        lambda: iaf.sample(student, params, rng, mel, speaker, num_samples), repeats=2
    )
    samples = batch_size * num_samples
    audio_seconds = samples / config.mel.sample_rate
    teacher_seconds = samples / teacher_speed["samples_per_second"]
    return {
        "batch_size": batch_size,
        "seconds_per_utterance": num_samples / config.mel.sample_rate,
        "student_samples_per_second": samples / student_seconds,
        "student_real_time_factor": student_seconds / audio_seconds,
        "teacher_samples_per_second": teacher_speed["samples_per_second"],
        "teacher_real_time_factor": teacher_speed["real_time_factor"],
        "student_over_teacher": teacher_seconds / student_seconds,
    }


def timed_listening_audio(
    config,
    student,
    params,
    teacher: training.Teacher,
    utterances: dict[str, np.ndarray],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(student audio (B, T), teacher audio (B, T), the report's speed row) for the listening
    set's mels: the student's one parallel pass against the teacher's cached generation, each
    timed by `timing.median_seconds` after the call that compiles it."""
    reference = utterances["audio"]
    mel, speaker = builders.model_inputs(config, utterances)
    t_mel, t_speaker = builders.model_inputs(teacher.config, utterances)
    rng = jax.random.PRNGKey(seed)

    student_fn = lambda: iaf.sample(student, params, rng, mel, speaker)  # noqa: E731
    teacher_fn = lambda: teacher_samples(  # noqa: E731
        teacher.model, teacher.params, rng, t_mel, t_speaker, reference.shape[1]
    )
    student_audio = np.asarray(student_fn())
    teacher_audio = np.asarray(teacher_fn())
    student_seconds = timing.median_seconds(student_fn, repeats=2)
    teacher_seconds = timing.median_seconds(teacher_fn, repeats=1)
    samples, sr = reference.size, config.mel.sample_rate
    speed = {
        "batch_size": int(reference.shape[0]),
        "student_samples_per_second": samples / student_seconds,
        "teacher_samples_per_second": samples / teacher_seconds,
        "student_real_time_factor": student_seconds / (samples / sr),
        "teacher_real_time_factor": teacher_seconds / (samples / sr),
        "student_over_teacher": teacher_seconds / student_seconds,
    }
    return student_audio, teacher_audio, speed
