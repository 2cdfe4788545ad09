"""Generation speed of the teacher's cached sampler and the student's parallel pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pwavenet.evaluation.listening import teacher_samples
from pwavenet.models import iaf
from pwavenet.training import timing

__all__ = [
    "generation_speed",
    "student_generation_speed",
]


def generation_speed(
    model, config, params, batch_size: int, seconds: float, repeats: int = 2
) -> dict[str, float]:
    """Cached-generation throughput for `seconds` of audio at `batch_size` (median of
    `repeats` runs after     compiling)."""
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
