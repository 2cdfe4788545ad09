"""Evaluation: restore a checkpoint, score it, generate audio, and write what a person checks.

`evaluate(workdir)` restores the latest (or a chosen) checkpoint's EMA weights with the config
saved in the workdir and writes to `<workdir>/eval_<step>/`:

  report.json         the quality table (below); validation NLL (nats and bits per sample);
                      the log-mel L1 distance of generated to reference audio on the listening
                      set; generation speed (samples/s and real-time factor = generation time /
                      audio duration) at each batch size measured
  reference_<i>.wav   the listening set: the first config.eval.num_utterances validation
  generated_<i>.wav   utterances (cut to config.eval.max_seconds), the model's audio for their
  griffin_lim_<i>.wav mels and the Griffin-Lim reconstruction of the same mels
  mels.png            log-mel spectrograms of those, one row per utterance

The quality table scores whole utterances of a split (config.data.eval_split unless told
otherwise; config.eval.quality_utterances of them, 0 = all) with every measure of
pwavenet.quality (STOI, wide-band PESQ, MCD, F0 RMSE, V/UV error, periodicity RMSE,
multi-resolution STFT distance) and the teacher's NLL, per utterance and as means, for the
reference itself (the ceiling), the Griffin-Lim baseline from the same mels and the model
(for a student: also the teacher and the untrained student). The means also go to
TensorBoard as quality_<split>/<system>/<measure>. For a checkpoint and seed it is
deterministic: utterances are generated in length-sorted batches of config.eval.batch_size,
batch b with the key fold_in(PRNGKey(seed), b).

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
from pwavenet import quality
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


# ------------------------------------------------------------------- quality over a split


def padded_batches(
    utterances: list[dict[str, Any]], batch_size: int, mel_config, length: int | None = None
):
    """Yields (indices, batch) over `utterances` (input_pipeline.split_utterances) sorted by
    length, each batch {'audio': (B, T), 'mel': (B, T // hop, n_mels), 'speaker': (B,)} padded
    to `length` samples (default: its longest): audio with zeros, the mel with the log floor
    (silence). Every model here is causal in its audio, so padding after an utterance leaves
    its own samples' distribution unchanged except where the upsampler's kernels reach into
    the padding (the last frame). One `length` for all batches compiles each model once."""
    order = sorted(range(len(utterances)), key=lambda i: len(utterances[i]["audio"]))
    floor = math.log(float(mel_config.log_floor))
    if audio.mel_preset(mel_config) == "espnet":  # log10 features
        floor /= math.log(10.0)
    hop = int(mel_config.hop_length)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        size = length or max(len(utterances[i]["audio"]) for i in indices)
        audio_batch = np.zeros((len(indices), size), np.float32)
        mel_batch = np.full(
            (len(indices), size // hop, utterances[indices[0]]["mel"].shape[-1]), floor, np.float32
        )
        for row, i in enumerate(indices):
            u = utterances[i]
            audio_batch[row, : len(u["audio"])] = u["audio"]
            mel_batch[row, : len(u["mel"])] = u["mel"]
        speaker = np.array([utterances[i]["speaker"] for i in indices], np.int32)
        yield indices, {"audio": audio_batch, "mel": mel_batch, "speaker": speaker}


def synthesize_split(
    synthesize,
    utterances: list[dict[str, Any]],
    batch_size: int,
    mel_config,
    seed: int,
    length: int | None = None,
) -> list[np.ndarray]:
    """`synthesize(batch, rng) -> (B, T)` over `padded_batches`, each utterance's audio cut
    back to its length, in the utterances' order. Batch b draws from fold_in(seed key, b)."""
    out: list[np.ndarray | None] = [None] * len(utterances)
    key = jax.random.PRNGKey(seed)
    batches = padded_batches(utterances, batch_size, mel_config, length)
    for b, (indices, batch) in enumerate(batches):
        generated = np.asarray(synthesize(batch, jax.random.fold_in(key, b)), np.float32)
        for row, i in enumerate(indices):
            out[i] = np.clip(generated[row, : len(utterances[i]["audio"])], -1.0, 1.0)
    return out


def listening_set(utterances: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """`input_pipeline.validation_utterances`' batch as a list of utterances."""
    return [
        {"audio": a, "mel": m, "speaker": int(s), "id": i}
        for a, m, s, i in zip(
            utterances["audio"], utterances["mel"], utterances["speaker"], utterances["id"]
        )
    ]


def griffin_lim_split(utterances: list[dict[str, Any]], mel_config) -> list[np.ndarray]:
    """The Griffin-Lim baseline (quality.griffin_lim) of each utterance's mel."""
    return [quality.griffin_lim(u["mel"], mel_config, len(u["audio"])) for u in utterances]


def teacher_log_likelihood(teacher_model, teacher_params):
    """A jitted log p_T(x_t | x_<t, mel, speaker) per sample: (x, mel, speaker) -> (B, T)."""
    return jax.jit(
        lambda x, mel, speaker: wavenet.log_likelihood(
            teacher_model.apply({"params": teacher_params}, x, mel, speaker),
            x,
            teacher_model.distribution,
        )
    )


def teacher_nll_split(
    log_likelihood, teacher_config, utterances, audio_list, batch_size: int, length: int
) -> list[float]:
    """The teacher's NLL (nats/sample) of each utterance's `audio_list` entry given its mel
    (`log_likelihood` from `teacher_log_likelihood`), padding masked out."""
    out = [math.nan] * len(utterances)
    for indices, batch in padded_batches(utterances, batch_size, teacher_config.mel, length):
        x = np.zeros_like(batch["audio"])
        for row, i in enumerate(indices):
            x[row, : len(audio_list[i])] = audio_list[i]
        mel = batch["mel"] if teacher_config.model.n_mels else None
        speaker = batch["speaker"] if teacher_config.model.num_speakers else None
        log_p = np.asarray(log_likelihood(jnp.asarray(x), mel, speaker))
        for row, i in enumerate(indices):
            out[i] = float(-np.mean(log_p[row, : len(audio_list[i])]))
    return out


def score_systems(
    utterances: list[dict[str, Any]],
    systems: dict[str, list[np.ndarray]],
    sample_rate: int,
    teacher_nll: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Every quality measure (pwavenet.quality) of each system's audio against the reference,
    per utterance and as means; the reference itself is scored as a row too (its own ceiling).
    `teacher_nll` adds each system's teacher NLL per utterance where given."""
    f0 = [quality.f0_track(u["audio"], sample_rate) for u in utterances]
    periodicity = [quality.periodicity(u["audio"], sample_rate) for u in utterances]
    rows = {"reference": [u["audio"] for u in utterances], **systems}
    per_utterance: dict[str, list[dict[str, Any]]] = {}
    means: dict[str, dict[str, float]] = {}
    for name, audio_list in rows.items():
        measured = [
            quality.measure(u["audio"], x, sample_rate, f0[i], periodicity[i])
            for i, (u, x) in enumerate(zip(utterances, audio_list))
        ]
        means[name] = quality.mean_measures(measured)
        if teacher_nll and name in teacher_nll:
            for m, nll in zip(measured, teacher_nll[name]):
                m["teacher_nll"] = nll
            means[name]["teacher_nll"] = float(np.mean(teacher_nll[name]))
        per_utterance[name] = [{"id": u["id"], **m} for u, m in zip(utterances, measured)]
    return {
        "num_utterances": len(utterances),
        "seconds": float(sum(len(u["audio"]) for u in utterances) / sample_rate),
        "mean": _undefined_as_none(means),
        "per_utterance": _undefined_as_none(per_utterance),
    }


def _undefined_as_none(tree):
    """NaN (a measure undefined for an utterance, e.g. F0 error with no voiced frame) as None,
    so report.json is standard JSON."""
    if isinstance(tree, dict):
        return {k: _undefined_as_none(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_undefined_as_none(v) for v in tree]
    return None if isinstance(tree, float) and math.isnan(tree) else tree


def quality_utterances_of(config, split: str | None, limit: int | None) -> list[dict[str, Any]]:
    """The utterances a report scores: `limit` (else config.eval.quality_utterances; 0 = the
    whole split) of `split` (else the config's evaluation split), whole unless
    config.eval.quality_max_seconds caps them."""
    if limit is None:
        limit = int(config.eval.get("quality_utterances", 0))
    max_seconds = float(config.eval.get("quality_max_seconds", 0.0))
    return input_pipeline.split_utterances(config, split, limit, max_seconds)


def quality_table(
    workdir: str,
    step: int,
    config,
    teacher_model_config_params: tuple[Any, Any, Any],
    synthesizers: dict[str, Any],
    *,
    split: str | None,
    limit: int | None,
    seed: int,
) -> dict[str, Any]:
    """The report's quality table: the Griffin-Lim baseline and each of `synthesizers`
    (name -> `synthesize(batch, rng) -> (B, T)`, see `synthesize_split`) over the split's
    utterances, scored by `score_systems` with the teacher's NLL (`teacher_model_config_params`
    = (model, config, params)); its means also go to TensorBoard."""
    split_name = split or config.data.eval_split
    utterances = quality_utterances_of(config, split, limit)
    batch_size = int(config.eval.batch_size)
    length = max(len(u["audio"]) for u in utterances)
    systems = {"griffin_lim": griffin_lim_split(utterances, config.mel)}
    for name, synthesize in synthesizers.items():
        systems[name] = synthesize_split(
            synthesize, utterances, batch_size, config.mel, seed, length
        )
    model, model_config, params = teacher_model_config_params
    log_likelihood = teacher_log_likelihood(model, params)
    nlls = {
        name: teacher_nll_split(
            log_likelihood, model_config, utterances, audio_list, batch_size, length
        )
        for name, audio_list in {"reference": [u["audio"] for u in utterances], **systems}.items()
    }
    scores = score_systems(utterances, systems, config.mel.sample_rate, teacher_nll=nlls)
    write_quality_summaries(workdir, step, scores, split_name)
    return {"split": split_name, **scores}


def write_quality_summaries(workdir: str, step: int, scores: dict[str, Any], split: str) -> None:
    """The mean measures in TensorBoard as quality_<split>/<system>/<measure>."""
    writer = train.Writer(workdir)
    for system, values in scores["mean"].items():
        writer.scalars(step, values, f"quality_{split}/{system}/")
    writer.flush()


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


def student_generation_speed(
    student, config, params, teacher, batch_size: int, seconds: float
) -> dict[str, float]:
    """Student synthesis (one parallel pass, `iaf.sample`) and the teacher's cached generation
    (`generation_speed`) of `seconds` of audio per utterance at `batch_size`, both after
    compiling, on the same constant mels."""
    from pwavenet import iaf

    teacher_speed = generation_speed(
        teacher.model, teacher.config, teacher.params, batch_size, seconds, repeats=1
    )
    hop = config.mel.hop_length
    frames = max(1, int(seconds * config.mel.sample_rate) // hop)
    num_samples = frames * hop
    mel = jnp.zeros((batch_size, frames, config.mel.n_mels)) - 5.0 if config.model.n_mels else None
    speaker = jnp.zeros((batch_size,), jnp.int32) if config.model.num_speakers else None
    rng = jax.random.PRNGKey(0)
    student_seconds = _timed(lambda: iaf.sample(student, params, rng, mel, speaker, num_samples))
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


def evaluate(
    workdir: str,
    *,
    step: int | None = None,
    output_dir: str | None = None,
    num_utterances: int | None = None,
    max_seconds: float | None = None,
    speed_batch_sizes=None,
    speed_seconds: float = 0.5,
    split: str | None = None,
    quality_utterances: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluates the checkpoint in `workdir` (a teacher's, or a student's: then
    `evaluate_student`); returns the report it writes.

    `speed_batch_sizes` (default: (1,) for a teacher, none for a student) and `speed_seconds`
    give the generation-speed rows: `speed_seconds` of audio per utterance at each batch size.
    `split` and `quality_utterances` choose what the quality table scores (default: the
    config's evaluation split, config.eval.quality_utterances of it, 0 = all)."""
    config = train.load_config(workdir)
    if "teacher_workdir" in config:
        return evaluate_student(
            workdir,
            step=step,
            output_dir=output_dir,
            num_utterances=num_utterances,
            max_seconds=max_seconds,
            speed_batch_sizes=speed_batch_sizes,
            speed_seconds=speed_seconds,
            split=split,
            quality_utterances=quality_utterances,
            seed=seed,
        )
    from pwavenet import teacher

    if speed_batch_sizes is None:
        speed_batch_sizes = (1,)

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

    # The listening set: a few utterances cut to one length, as wavs and spectrograms.
    utterances = input_pipeline.validation_utterances(
        config, num_utterances=num_utterances, max_seconds=max_seconds
    )
    generated = generate_for(model, config, params, utterances, jax.random.PRNGKey(seed))
    reference = utterances["audio"]
    griffin_lim = np.stack(griffin_lim_split(listening_set(utterances), config.mel))
    distance = log_mel_l1(config, generated, reference)
    sr = config.mel.sample_rate
    write_wavs(out, sr, {"reference": reference, "generated": generated, "griffin_lim": griffin_lim})
    mel_comparison_image(
        config,
        reference,
        {"generated": generated, "griffin_lim": griffin_lim},
        os.path.join(out, "mels.png"),
    )

    def synthesize(batch, rng):
        mel, speaker = teacher.model_inputs(config, batch)
        return teacher_samples(model, params, rng, mel, speaker, batch["audio"].shape[1])

    table = quality_table(
        workdir,
        step,
        config,
        (model, config, params),
        {"teacher": synthesize},
        split=split,
        limit=quality_utterances,
        seed=seed,
    )
    speed = [generation_speed(model, config, params, b, speed_seconds) for b in speed_batch_sizes]

    report = {
        "workdir": workdir,
        "step": int(step),
        "variant": config.get("variant", ""),
        "validation_nll": nll["nll"],
        "validation_bits_per_sample": nll["bits_per_sample"],
        "log_mel_l1": float(np.mean(distance)),
        "log_mel_l1_per_utterance": [float(d) for d in distance],
        "log_mel_l1_between_references": between_references(config, reference),
        "num_utterances": int(reference.shape[0]),
        "seconds_per_utterance": reference.shape[1] / sr,
        "quality": table,
        "generation_speed": speed,
        "files": sorted(os.listdir(out)),
    }
    return write_report(out, report)


def between_references(config, reference: np.ndarray) -> float:
    """The log-mel L1 between different reference utterances (each against the next): what a
    model that ignored its mel and made other natural speech would score; NaN for one."""
    if reference.shape[0] < 2:
        return math.nan
    return float(np.mean(log_mel_l1(config, np.roll(reference, 1, axis=0), reference)))


def write_wavs(out: str, sample_rate: int, audio_by_name: dict[str, np.ndarray]) -> None:
    """<out>/<name>_<i>.wav, 16-bit, for each (N, T) array."""
    import soundfile

    for name, batch in audio_by_name.items():
        for i, x in enumerate(batch):
            path = os.path.join(out, f"{name}_{i}.wav")
            soundfile.write(path, np.clip(x, -1, 1), sample_rate, subtype="PCM_16")


def write_report(out: str, report: dict[str, Any]) -> dict[str, Any]:
    """Writes <out>/report.json (with the folder's file list) and returns the report."""
    report["files"] = sorted(set(os.listdir(out)) | {"report.json"})
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    means = report["quality"]["mean"]
    logging.info(
        "Evaluation of %s step %d on %d %s utterances: %s",
        report["workdir"],
        report["step"],
        report["quality"]["num_utterances"],
        report["quality"]["split"],
        "; ".join(
            f"{name} " + ", ".join(f"{k} {v}" if v is None else f"{k} {v:.3f}" for k, v in m.items())
            for name, m in means.items()
        ),
    )
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
    speed_batch_sizes=None,
    speed_seconds: float = 0.5,
    split: str | None = None,
    quality_utterances: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Student vs teacher vs reference on validation mels; writes `<workdir>/eval_<step>/`:

    report.json   the quality table over the split (pwavenet.quality's measures and the
                  teacher's NLL for the reference, Griffin-Lim, the untrained student, the
                  teacher and the student); on the listening set, the log-mel L1 of the
                  student's and of the teacher's audio to the reference; the teacher's NLL
                  (nats/sample) of the student's samples, of the teacher's own samples and of
                  the real audio; the distillation terms (KL, cross-entropy, entropy, power
                  loss) on these mels; the speed of student synthesis (one parallel pass) and
                  of the teacher's cached generation on the same mels, and their ratio;
                  with `speed_batch_sizes`, `generation_speed`: the same three at each batch
                  size for `speed_seconds` of audio per utterance (`student_generation_speed`)
    reference_<i>.wav, teacher_<i>.wav, student_<i>.wav, griffin_lim_<i>.wav
    mels.png      rows of log-mel spectrograms: reference, Griffin-Lim, teacher, student

    The untrained student is the same architecture with its initial parameters (the synthesis
    filter driven by near-white noise): distillation has to beat it.
    """
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
    griffin_lim = np.stack(griffin_lim_split(listening_set(utterances), config.mel))
    listening = {"griffin_lim": griffin_lim, "teacher": teacher_audio, "student": student_audio}
    write_wavs(out, sr, {"reference": reference, **listening})
    mel_comparison_image(
        config, reference, listening, os.path.join(out, "mels.png"), models_as_rows=True
    )

    untrained = distill.init_params(
        student, config, jax.random.PRNGKey(config.seed), teacher.params
    )

    def student_synthesis(student_params):
        def synthesize(b, r):
            return iaf.sample(student, student_params, r, *teacher_lib.model_inputs(config, b))

        return synthesize

    def teacher_synthesis(b, r):
        m, s = teacher_lib.model_inputs(teacher.config, b)
        return teacher_samples(teacher.model, teacher.params, r, m, s, b["audio"].shape[1])

    table = quality_table(
        workdir,
        step,
        config,
        (teacher.model, teacher.config, teacher.params),
        {
            "untrained_student": student_synthesis(untrained),
            "teacher": teacher_synthesis,
            "student": student_synthesis(params),
        },
        split=split,
        limit=quality_utterances,
        seed=seed,
    )

    student_l1 = log_mel_l1(config, student_audio, reference)
    teacher_l1 = log_mel_l1(config, teacher_audio, reference)
    report = {
        "workdir": workdir,
        "kind": "student",
        "step": int(step),
        "variant": config.get("variant", ""),
        "teacher_workdir": config.teacher_workdir,
        "teacher_step": int(teacher.step),
        "num_utterances": int(reference.shape[0]),
        "seconds_per_utterance": reference.shape[1] / sr,
        "quality": table,
        "log_mel_l1_student": float(np.mean(student_l1)),
        "log_mel_l1_teacher": float(np.mean(teacher_l1)),
        "log_mel_l1_between_references": between_references(config, reference),
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
    }
    if speed_batch_sizes:
        report["generation_speed"] = [
            student_generation_speed(student, config, params, teacher, b, speed_seconds)
            for b in speed_batch_sizes
        ]
    return write_report(out, report)
