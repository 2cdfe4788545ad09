"""Evaluation: restore a checkpoint, score it, generate audio, and write what a person checks.

`evaluate(workdir)` restores the latest (or a chosen) checkpoint's EMA weights with the config
saved in the workdir and writes to `<workdir>/eval_<step>/`:

  report.json         validation NLL (nats and bits per sample), the log-mel L1 distance of
                      generated to reference audio, generation speed (samples/s and real-time
                      factor = generation time / audio duration) at each batch size measured
  reference_<i>.wav   the validation utterances whose mels condition generation
  generated_<i>.wav   the model's audio for those mels
  mels.png            log-mel spectrograms, reference vs generated, one row per utterance

Spectral distance: mean over frames and bins of |log-mel(generated) - log-mel(reference)|
with the project's one log-mel definition (`audio.log_mel_spectrogram`), in nats of
mel magnitude. Identical audio scores 0. For scale, the report also gives the same distance
between different reference utterances (each against the next, cyclically): what a model that
ignored its mel and produced other, perfectly natural speech would score.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

from absl import logging
from flax import jax_utils
import jax
import jax.numpy as jnp
import numpy as np

from pwavenet import audio
from pwavenet import input_pipeline
from pwavenet import train
from pwavenet import wavenet


def generate_for(model, config, params, utterances: dict[str, np.ndarray], rng) -> np.ndarray:
    """Teacher audio (B, T) for a batch of utterances' mels (and speakers)."""
    from pwavenet import teacher

    mel, speaker = teacher.model_inputs(config, utterances)
    num_samples = utterances["audio"].shape[1]
    return np.asarray(teacher_samples(model, params, rng, mel, speaker, num_samples))


def teacher_samples(model, params, rng, mel, speaker, num_samples: int):
    """`wavenet.generate` for model inputs as `teacher.model_inputs` gives them: (B, T). Not
    traced in a jit of its own, so that a batch spreads over the local devices
    (`wavenet.spread_devices`); the sampler compiles once per model and shape."""
    return wavenet.generate(
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


def generation_speed(
    model, config, params, batch_size: int, seconds: float, repeats: int = 2
) -> dict[str, float]:
    """Cached-generation throughput for `seconds` of audio at `batch_size` (after compiling)."""
    hop = config.mel.hop_length
    frames = max(1, int(seconds * config.mel.sample_rate) // hop)
    num_samples = frames * hop
    rng = jax.random.PRNGKey(0)
    mel = jnp.zeros((batch_size, frames, config.mel.n_mels)) - 5.0 if config.model.n_mels else None
    speaker = jnp.zeros((batch_size,), jnp.int32) if config.model.num_speakers else None
    fn = functools.partial(teacher_samples, model)
    jax.block_until_ready(fn(params, rng, mel, speaker, num_samples))  # compile
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, rng, mel, speaker, num_samples))
        best = min(best, time.perf_counter() - t0)
    audio_seconds = batch_size * num_samples / config.mel.sample_rate
    return {
        "batch_size": batch_size,
        "seconds_per_utterance": num_samples / config.mel.sample_rate,
        "samples_per_second": batch_size * num_samples / best,
        # Generation time over the duration of all audio generated: < 1 is faster than real time.
        "real_time_factor": best / audio_seconds,
    }


def evaluate(
    workdir: str,
    *,
    step: int | None = None,
    output_dir: str | None = None,
    num_utterances: int | None = None,
    max_seconds: float | None = None,
    speed_batch_sizes=(1,),
    speed_seconds: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluates the checkpoint in `workdir` (a teacher's, or a student's: then
    `evaluate_student`); returns the report it writes."""
    from pwavenet import teacher
    import soundfile

    config = train.load_config(workdir)
    if "teacher_workdir" in config:
        return evaluate_student(
            workdir,
            step=step,
            output_dir=output_dir,
            num_utterances=num_utterances,
            max_seconds=max_seconds,
            seed=seed,
        )
    model = teacher.build_model(config)
    params, step = train.restore_params(workdir, step)
    out = output_dir or os.path.join(workdir, f"eval_{step}")
    os.makedirs(out, exist_ok=True)
    num_utterances = num_utterances or config.eval.num_utterances
    max_seconds = max_seconds or config.eval.max_seconds

    eval_step = train.make_eval_step(lambda p, b: teacher.nll_metrics(model, config, p, b)[1])
    nll = train.evaluate_metrics(
        eval_step,
        jax_utils.replicate(params),
        input_pipeline.create_datasets(config, train=False).eval(config.train.eval_batches),
    )

    utterances = input_pipeline.validation_utterances(
        config, num_utterances=num_utterances, max_seconds=max_seconds
    )
    generated = generate_for(model, config, params, utterances, jax.random.PRNGKey(seed))
    reference = utterances["audio"]
    distance = log_mel_l1(config, generated, reference)
    unrelated = (
        log_mel_l1(config, np.roll(reference, 1, axis=0), reference)
        if reference.shape[0] > 1
        else np.full(1, np.nan)
    )
    sr = config.mel.sample_rate
    for i in range(reference.shape[0]):
        soundfile.write(os.path.join(out, f"reference_{i}.wav"), reference[i], sr, subtype="PCM_16")
        soundfile.write(
            os.path.join(out, f"generated_{i}.wav"),
            np.clip(generated[i], -1, 1),
            sr,
            subtype="PCM_16",
        )
    mel_comparison_image(config, reference, {"generated": generated}, os.path.join(out, "mels.png"))
    speed = [generation_speed(model, config, params, b, speed_seconds) for b in speed_batch_sizes]

    report = {
        "workdir": workdir,
        "step": int(step),
        "variant": config.get("variant", ""),
        "validation_nll": nll["nll"],
        "validation_bits_per_sample": nll["bits_per_sample"],
        "log_mel_l1": float(np.mean(distance)),
        "log_mel_l1_per_utterance": [float(d) for d in distance],
        "log_mel_l1_between_references": float(np.mean(unrelated)),
        "num_utterances": int(reference.shape[0]),
        "seconds_per_utterance": reference.shape[1] / sr,
        "generation_speed": speed,
        "files": sorted(os.listdir(out)),
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    logging.info("Evaluation of %s step %d: %s", workdir, step, json.dumps(report))
    return report


def _timed(fn, repeats: int = 2) -> float:
    """Best wall time of `repeats` calls after one compiling call."""
    jax.block_until_ready(fn())
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def evaluate_student(
    workdir: str,
    *,
    step: int | None = None,
    output_dir: str | None = None,
    num_utterances: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Student vs teacher vs reference on validation mels; writes `<workdir>/eval_<step>/`:

    report.json   the log-mel L1 of the student's and of the teacher's audio to the
                  reference; the teacher's NLL (nats/sample) of the student's samples, of
                  the teacher's own samples and of the real audio; the distillation terms
                  (KL, cross-entropy, entropy, power loss) on these mels; the speed of
                  student synthesis (one parallel pass) and of the teacher's cached
                  generation on the same mels, and their ratio
    reference_<i>.wav, teacher_<i>.wav, student_<i>.wav
    mels.png      three rows of log-mel spectrograms: reference, teacher, student
    """
    import soundfile

    from pwavenet import distill
    from pwavenet import iaf
    from pwavenet import teacher as teacher_lib

    config = train.load_config(workdir)
    student = distill.build_student(config)
    params, step = train.restore_params(workdir, step)
    teacher = distill.load_teacher(config.teacher_workdir)
    out = output_dir or os.path.join(workdir, f"eval_{step}")
    os.makedirs(out, exist_ok=True)
    utterances = input_pipeline.validation_utterances(
        config,
        num_utterances=num_utterances or config.eval.num_utterances,
        max_seconds=max_seconds or config.eval.max_seconds,
    )
    reference = utterances["audio"]
    mel, speaker = teacher_lib.model_inputs(config, utterances)
    t_mel, t_speaker = teacher_lib.model_inputs(teacher.config, utterances)
    rng = jax.random.PRNGKey(seed)

    student_fn = lambda: iaf.sample(student, params, rng, mel, speaker)  # noqa: E731
    teacher_fn = lambda: teacher_samples(  # noqa: E731
        teacher.model, teacher.params, rng, t_mel, t_speaker, reference.shape[1]
    )
    student_audio = np.asarray(student_fn())
    teacher_audio = np.asarray(teacher_fn())
    student_seconds = _timed(student_fn)
    teacher_seconds = _timed(teacher_fn, repeats=1)
    samples = reference.size

    forced = jax.jit(lambda x: teacher.model.apply({"params": teacher.params}, x, t_mel, t_speaker))
    dist = teacher.model.distribution

    def teacher_nll(x):
        return float(wavenet.negative_log_likelihood(forced(jnp.asarray(x)), x, dist))

    distiller = distill.make_distiller(config, student, teacher)
    batch = {k: jnp.asarray(utterances[k]) for k in ("audio", "mel", "speaker")}
    rngs = jax.random.split(jax.random.PRNGKey(seed + 1), reference.shape[0])
    terms = jax.jit(lambda p, tp, b, r: distiller.losses(p, tp, b, r)[1])(
        params, teacher.params, batch, rngs
    )

    sr = config.mel.sample_rate
    for i in range(reference.shape[0]):
        for name, x in (
            ("reference", reference),
            ("teacher", teacher_audio),
            ("student", student_audio),
        ):
            soundfile.write(
                os.path.join(out, f"{name}_{i}.wav"), np.clip(x[i], -1, 1), sr, subtype="PCM_16"
            )
    mel_comparison_image(
        config,
        reference,
        {"teacher": teacher_audio, "student": student_audio},
        os.path.join(out, "mels.png"),
        models_as_rows=True,
    )
    student_l1 = log_mel_l1(config, student_audio, reference)
    teacher_l1 = log_mel_l1(config, teacher_audio, reference)
    unrelated = (
        log_mel_l1(config, np.roll(reference, 1, axis=0), reference)
        if reference.shape[0] > 1
        else np.full(1, np.nan)
    )
    report = {
        "workdir": workdir,
        "kind": "student",
        "step": int(step),
        "variant": config.get("variant", ""),
        "teacher_workdir": config.teacher_workdir,
        "teacher_step": int(teacher.step),
        "num_utterances": int(reference.shape[0]),
        "seconds_per_utterance": reference.shape[1] / sr,
        "log_mel_l1_student": float(np.mean(student_l1)),
        "log_mel_l1_teacher": float(np.mean(teacher_l1)),
        "log_mel_l1_between_references": float(np.mean(unrelated)),
        "student_to_teacher_l1_ratio": float(np.mean(student_l1) / np.mean(teacher_l1)),
        "teacher_nll_of_student_audio": teacher_nll(student_audio),
        "teacher_nll_of_teacher_audio": teacher_nll(teacher_audio),
        "teacher_nll_of_real_audio": teacher_nll(reference),
        "distillation": {k: float(v) for k, v in terms.items()},
        "speed": {
            "batch_size": int(reference.shape[0]),
            "student_samples_per_second": samples / student_seconds,
            "teacher_samples_per_second": samples / teacher_seconds,
            "student_real_time_factor": student_seconds / (samples / sr),
            "teacher_real_time_factor": teacher_seconds / (samples / sr),
            "student_over_teacher": teacher_seconds / student_seconds,
        },
        "files": sorted(os.listdir(out)),
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    logging.info("Evaluation of %s step %d: %s", workdir, step, json.dumps(report))
    return report
