"""Vocoding: audio from a mel spectrogram (or from a wav file's mel) with a trained model.

`synthesize(workdir, input_path, output_path)`:
  - a student workdir (written by the distillation job) synthesizes with the student in one
    parallel pass, in chunks of `chunk_seconds` each computed with enough mel and noise
    context around it (`iaf.chunk_context`) that the result equals a single pass while memory
    stays bounded by the chunk; `model='teacher'` uses the teacher it was distilled from
    (cached autoregressive generation) for comparison;
  - a teacher workdir synthesizes with the teacher.
Input: a .wav file (mono, at the model's sample rate; its log-mel is computed with the
project's one definition) or a .npy log-mel of shape (frames, n_mels) or (1, frames, n_mels)
in that same definition. Output: 16-bit PCM wav, clipped to [-1, 1].
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pwavenet import audio
from pwavenet import iaf
from pwavenet import train


def is_student_workdir(config) -> bool:
    return "teacher_workdir" in config


def load_mel(input_path: str, mel_config) -> np.ndarray:
    """(1, frames, n_mels) log-mel from a .wav or .npy file, with clear errors."""
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"--input={input_path!r} does not exist.")
    ext = os.path.splitext(input_path)[1].lower()
    if ext == ".npy":
        mel = np.load(input_path)
        if mel.ndim == 2:
            mel = mel[None]
        if mel.ndim != 3 or mel.shape[0] != 1 or mel.shape[-1] != mel_config.n_mels:
            raise ValueError(
                f"{input_path}: a mel of shape {mel.shape}; expected (frames, {mel_config.n_mels})"
                f" or (1, frames, {mel_config.n_mels}), log-mel as pwavenet.audio."
                "log_mel_spectrogram computes it with the model's mel settings."
            )
        if not np.all(np.isfinite(mel)):
            raise ValueError(f"{input_path}: the mel contains NaN or infinite values.")
        return mel.astype(np.float32)
    if ext != ".wav":
        raise ValueError(f"--input={input_path!r}: expected a .wav or a .npy (log-mel) file.")
    import soundfile

    try:
        samples, rate = soundfile.read(input_path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise ValueError(f"{input_path}: not a readable wav file ({e}).") from e
    if samples.shape[1] != 1:
        raise ValueError(
            f"{input_path} has {samples.shape[1]} channels; the vocoder needs mono audio. "
            "Mix it down first (e.g. sox in.wav -c 1 out.wav)."
        )
    if rate != mel_config.sample_rate:
        raise ValueError(
            f"{input_path} is sampled at {rate} Hz but the model's mel.sample_rate is "
            f"{mel_config.sample_rate} Hz; resample it first (e.g. sox in.wav -r "
            f"{mel_config.sample_rate} out.wav)."
        )
    x = samples[:, 0]
    frames = len(x) // mel_config.hop_length
    if frames < 1:
        raise ValueError(
            f"{input_path} has {len(x)} samples, fewer than one mel frame "
            f"({mel_config.hop_length} samples)."
        )
    x = x[: frames * mel_config.hop_length]
    return np.asarray(audio.log_mel_spectrogram(x[None], mel_config), np.float32)


def synthesize(
    workdir: str,
    input_path: str,
    output_path: str,
    *,
    model: str = "student",
    speaker: int = 0,
    seed: int = 0,
    chunk_seconds: float = 10.0,
    step: int | None = None,
) -> dict[str, Any]:
    """Writes `output_path`; returns {'samples', 'seconds', 'samples_per_second',
    'real_time_factor', 'model'} (timings exclude compilation: the student runs twice)."""
    import soundfile

    from pwavenet import distill
    from pwavenet import evaluate
    from pwavenet import teacher as teacher_lib

    config = train.load_config(workdir)
    student_dir = is_student_workdir(config)
    if model not in ("student", "teacher"):
        raise ValueError(f"--model={model!r}; expected 'student' or 'teacher'.")
    if model == "student" and not student_dir:
        raise ValueError(
            f"{workdir} is a teacher's workdir; use --model=teacher, or pass a student's "
            "workdir (python -m launch.distill)."
        )
    mel = load_mel(input_path, config.mel)
    model_config = config.model
    if model_config.num_speakers and not 0 <= speaker < model_config.num_speakers:
        raise ValueError(
            f"--speaker={speaker} is out of range: the model knows {model_config.num_speakers} "
            f"speakers (0 .. {model_config.num_speakers - 1})."
        )
    speakers = np.array([speaker], np.int32) if model_config.num_speakers else None
    sr = config.mel.sample_rate
    rng = jax.random.PRNGKey(seed)

    if model == "student":
        student = distill.build_student(config)
        params, step = train.restore_params(workdir, step)
        num_samples = mel.shape[1] * student.hop_length
        z = student.sample_base(rng, (1, num_samples))
        chunk_frames = max(1, int(chunk_seconds * sr) // student.hop_length)

        def run():
            return np.asarray(
                iaf.chunked_sample(student, params, z, mel, speakers, chunk_frames=chunk_frames)
            )

        run()  # compile
    else:
        tdir = config.teacher_workdir if student_dir else workdir
        teacher = distill.load_teacher(tdir)
        tmel, tspk = teacher_lib.model_inputs(
            teacher.config, {"mel": jnp.asarray(mel), "speaker": speakers}
        )
        num_samples = mel.shape[1] * teacher.model.hop_length

        def run():
            return np.asarray(
                evaluate.teacher_samples(
                    teacher.model, teacher.params, rng, tmel, tspk, num_samples
                )
            )

        run()
    t0 = time.perf_counter()
    x = run()
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    soundfile.write(output_path, np.clip(x[0], -1.0, 1.0), sr, subtype="PCM_16")
    return {
        "model": model,
        "samples": int(num_samples),
        "seconds": seconds,
        "samples_per_second": num_samples / seconds,
        "real_time_factor": seconds / (num_samples / sr),
    }
