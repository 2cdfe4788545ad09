"""The evaluation job: restore a checkpoint, score it, generate audio, and write what a person
checks.

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
pwavenet.evaluation.quality (STOI, wide-band PESQ, MCD, F0 RMSE, V/UV error, periodicity RMSE,
multi-resolution STFT distance) and the teacher's NLL, per utterance and as means, for the
reference itself (the ceiling), the Griffin-Lim baseline from the same mels and the model
(for a student: also the teacher and the untrained student). The means also go to
TensorBoard as quality_<split>/<system>/<measure>. For a checkpoint and seed it is
deterministic: utterances are generated in length-sorted batches of config.eval.batch_size,
batch b with the key fold_in(PRNGKey(seed), b). A student's report copies the reference,
Griffin-Lim and teacher rows from the teacher's report (`<teacher_workdir>/eval_<step>/`) when
that scored the same utterances with the same seed and batch size, rather than generating the
teacher's audio again.

The listening set's spectral distance is `evaluation.log_mel_l1` (pwavenet.evaluation.listening).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils

from pwavenet import distillation, evaluation, training
from pwavenet.data import pipelines
from pwavenet.data import whole_utterances
from pwavenet.models import builders, iaf, wavenet
from pwavenet.training import timing
from pwavenet import config_schema


def evaluate(workdir: str, **options) -> dict[str, Any]:
    """Evaluates the checkpoint in `workdir` (a teacher's: `evaluate_teacher`, or a student's:
    `evaluate_student`) with the keyword `options` (the fields of `Options`); returns the
    report it writes. The generation-speed rows are at `speed_batch_sizes` (default: (1,) for
    a teacher, none for a student), `speed_seconds` of audio per utterance."""
    chosen = Options(**options)
    if training.is_student_config(training.load_config(workdir)):
        return evaluate_student(workdir, chosen)
    return evaluate_teacher(workdir, chosen)


@dataclasses.dataclass(frozen=True)
class Options:
    """What `evaluate` is asked for (each None: the config's or the model kind's default).

    step: the checkpoint (latest if None); output_dir: where to write (<workdir>/eval_<step>);
    num_utterances, max_seconds: the listening set (config.eval's); speed_batch_sizes,
    speed_seconds: the generation-speed rows; split, quality_utterances: what the quality
    table scores (config.data.eval_split, config.eval.quality_utterances; 0 = all); seed: the
    noise of every generated utterance."""

    step: int | None = None
    output_dir: str | None = None
    num_utterances: int | None = None
    max_seconds: float | None = None
    speed_batch_sizes: tuple[int, ...] | None = None
    speed_seconds: float = 0.5
    split: str | None = None
    quality_utterances: int | None = None
    seed: int = 0


def evaluate_teacher(workdir: str, options: Options = Options()) -> dict[str, Any]:
    """The teacher's evaluation (module docstring): its validation NLL, the listening set,
    the quality table and the generation speed at each of `speed_batch_sizes` (default (1,))."""
    config = training.load_config(workdir)
    o = options
    speed_batch_sizes = (1,) if o.speed_batch_sizes is None else o.speed_batch_sizes

    model = builders.build_teacher(config)
    params, step = training.restore_params(workdir, o.step)
    out = o.output_dir or os.path.join(workdir, f"eval_{step}")
    os.makedirs(out, exist_ok=True)
    nll = validation_nll(model, config, params)

    utterances = listening_utterances(config, o.num_utterances, o.max_seconds)
    generated = evaluation.generate_for(
        model, config, params, utterances, jax.random.PRNGKey(o.seed)
    )
    reference = utterances["audio"]
    griffin_lim = listening_griffin_lim(config, utterances)
    write_listening_set(
        config, out, reference, {"generated": generated, "griffin_lim": griffin_lim}
    )
    distance = evaluation.log_mel_l1(config, generated, reference)

    table = evaluation.quality_table(
        workdir,
        step,
        config,
        (model, config, params),
        {"teacher": teacher_synthesis(model, config, params)},
        split=o.split,
        limit=o.quality_utterances,
        seed=o.seed,
    )
    speed = [
        evaluation.generation_speed(model, config, params, b, o.speed_seconds)
        for b in speed_batch_sizes
    ]

    report = {
        "workdir": workdir,
        "step": int(step),
        "variant": config_schema.setting(config, "variant"),
        "validation_nll": nll["nll"],
        "validation_bits_per_sample": nll["bits_per_sample"],
        "log_mel_l1": float(np.mean(distance)),
        "log_mel_l1_per_utterance": [float(d) for d in distance],
        "log_mel_l1_between_references": evaluation.between_references(config, reference),
        "num_utterances": int(reference.shape[0]),
        "seconds_per_utterance": reference.shape[1] / config.mel.sample_rate,
        "quality": table,
        "generation_speed": speed,
        "files": sorted(os.listdir(out)),
    }
    return evaluation.write_report(out, report)


def validation_nll(model, config, params) -> dict[str, float]:
    """The teacher's NLL over config.train.eval_batches validation batches: {'nll' (nats per
    sample), 'bits_per_sample'}."""
    eval_step = training.make_eval_step(lambda p, b: builders.nll_metrics(model, config, p, b)[1])
    return training.evaluate_metrics(
        eval_step,
        jax_utils.replicate(params),
        pipelines.create_datasets(config, train=False).eval(config.train.eval_batches),
    )


def listening_utterances(config, num_utterances: int | None, max_seconds: float | None):
    """The listening set: the first validation utterances (config.eval.num_utterances unless
    given), cut to one length (config.eval.max_seconds unless given)."""
    return whole_utterances.validation_utterances(
        config,
        num_utterances=num_utterances or config.eval.num_utterances,
        max_seconds=max_seconds or config.eval.max_seconds,
    )


def listening_griffin_lim(config, utterances) -> np.ndarray:
    """The Griffin-Lim reconstruction (B, T) of the listening set's mels."""
    return np.stack(evaluation.griffin_lim_split(evaluation.listening_set(utterances), config.mel))


def write_listening_set(
    config, out: str, reference: np.ndarray, systems: dict[str, np.ndarray], **image_options
) -> None:
    """<out>/reference_<i>.wav and <out>/<system>_<i>.wav for each of `systems` (name -> (B, T)),
    and their log-mel spectrograms in <out>/mels.png, in the order of `systems`."""
    evaluation.write_wavs(out, config.mel.sample_rate, {"reference": reference, **systems})
    evaluation.mel_comparison_image(
        config, reference, systems, os.path.join(out, "mels.png"), **image_options
    )


def teacher_synthesis(model, config, params):
    """synthesize_batch(batch, rng) -> (B, T): the teacher's generation for a batch's mels."""

    def synthesize_batch(batch, rng):
        mel, speaker = builders.model_inputs(config, batch)
        return evaluation.teacher_samples(model, params, rng, mel, speaker, batch["audio"].shape[1])

    return synthesize_batch


def student_synthesis(student, config, params):
    """synthesize_batch(batch, rng) -> (B, T): the student's synthesis for a batch's mels."""

    def synthesize_batch(batch, rng):
        return iaf.sample(student, params, rng, *builders.model_inputs(config, batch))

    return synthesize_batch


def evaluate_student(workdir: str, options: Options = Options()) -> dict[str, Any]:
    """Student vs teacher vs reference on validation mels; writes `<workdir>/eval_<step>/`:

    report.json   the quality table over the split (pwavenet.evaluation.quality's measures
                  and the teacher's NLL for the reference, Griffin-Lim, the untrained
                  student, the teacher and the student); on the listening set, the log-mel L1
                  of the student's and of the teacher's audio to the reference; the teacher's
                  NLL (nats/sample) of the student's samples, of the teacher's own samples and
                  of the real audio, and the student's own NLL of the real audio (through
                  its sequential inverse: the teacher should score it better); the
                  distillation terms (KL, cross-entropy, entropy, power loss) on these mels;
                  the speed of student synthesis (one parallel pass) and of the teacher's
                  cached generation on the same mels, and their ratio; with
                  `speed_batch_sizes`, generation_speed: the same three at each batch size for
                  `speed_seconds` of audio per utterance (`evaluation.student_generation_speed`)
    reference_<i>.wav, teacher_<i>.wav, student_<i>.wav, griffin_lim_<i>.wav
    mels.png      rows of log-mel spectrograms: reference, Griffin-Lim, teacher, student

    The untrained student is the same architecture with its initial parameters (the synthesis
    filter driven by near-white noise): distillation has to beat it.
    """

    o = options
    config = training.load_config(workdir)
    student = builders.build_student(config)
    params, step = training.restore_params(workdir, o.step)
    teacher = training.load_teacher(training.student_teacher_workdir(config, workdir))
    out = o.output_dir or os.path.join(workdir, f"eval_{step}")
    os.makedirs(out, exist_ok=True)
    utterances = listening_utterances(config, o.num_utterances, o.max_seconds)
    reference = utterances["audio"]
    student_audio, teacher_audio, speed = timed_listening_audio(
        config, student, params, teacher, utterances, o.seed
    )
    terms = distillation_terms(config, student, params, teacher, utterances, o.seed)
    listening = {
        "griffin_lim": listening_griffin_lim(config, utterances),
        "teacher": teacher_audio,
        "student": student_audio,
    }
    write_listening_set(config, out, reference, listening, models_as_rows=True)

    table = student_quality_table(
        workdir, step, config, student, params, teacher, o.split, o.quality_utterances, o.seed
    )
    report = {
        "workdir": workdir,
        "kind": "student",
        "step": int(step),
        "variant": config_schema.setting(config, "variant"),
        "teacher_workdir": teacher.workdir,
        "teacher_step": int(teacher.step),
        "num_utterances": int(reference.shape[0]),
        "seconds_per_utterance": reference.shape[1] / config.mel.sample_rate,
        "quality": table,
        **listening_scores(config, teacher, utterances, student_audio, teacher_audio),
        "student_nll_of_real_audio": student_nll_of_real_audio(student, config, params, utterances),
        "distillation": terms,
        "speed": speed,
    }
    if o.speed_batch_sizes:
        report["generation_speed"] = [
            evaluation.student_generation_speed(
                student, config, params, teacher, b, o.speed_seconds
            )
            for b in o.speed_batch_sizes
        ]
    return evaluation.write_report(out, report)


def student_quality_table(
    workdir, step, config, student, params, teacher, split, limit, seed
) -> dict[str, Any]:
    """`evaluation.quality_table` of the untrained student (its initial parameters), the
    teacher and the student, the teacher's NLL scoring each. The reference, Griffin-Lim and
    teacher rows are copied from the teacher's own report (`teacher_report`) where it scored
    the same utterances with the same seed and batch size."""
    untrained = builders.init_student_params(
        student, config, jax.random.PRNGKey(config.seed), teacher.params
    )
    earlier = teacher_report(teacher)
    return evaluation.quality_table(
        workdir,
        step,
        config,
        (teacher.model, teacher.config, teacher.params),
        {
            "untrained_student": student_synthesis(student, config, untrained),
            "teacher": teacher_synthesis(teacher.model, teacher.config, teacher.params),
            "student": student_synthesis(student, config, params),
        },
        split=split,
        limit=limit,
        seed=seed,
        earlier=None if earlier is None else earlier.get("quality"),
    )


def teacher_report(teacher) -> dict[str, Any] | None:
    """The teacher's report.json from its default evaluation folder (eval_<step> of the step
    the student was distilled from), or None if there is none."""
    path = os.path.join(teacher.workdir, f"eval_{teacher.step}", "report.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def listening_scores(config, teacher, utterances, student_audio, teacher_audio) -> dict:
    """The report's measures of the listening set: the log-mel L1 of the student's and the
    teacher's audio to the reference (and between references), and the teacher's NLL of the
    student's, its own and the real audio."""
    reference = utterances["audio"]
    student_l1 = evaluation.log_mel_l1(config, student_audio, reference)
    teacher_l1 = evaluation.log_mel_l1(config, teacher_audio, reference)
    teacher_nll = teacher_nll_of(teacher, utterances)
    return {
        "log_mel_l1_student": float(np.mean(student_l1)),
        "log_mel_l1_teacher": float(np.mean(teacher_l1)),
        "log_mel_l1_between_references": evaluation.between_references(config, reference),
        "student_to_teacher_l1_ratio": float(np.mean(student_l1) / np.mean(teacher_l1)),
        "teacher_nll_of_student_audio": teacher_nll(student_audio),
        "teacher_nll_of_teacher_audio": teacher_nll(teacher_audio),
        "teacher_nll_of_real_audio": teacher_nll(reference),
    }


def student_nll_of_real_audio(student, config, params, utterances) -> float:
    """The student's NLL (nats per sample) of the listening set's real audio, through its
    sequential inverse (`iaf.log_prob`): beside the teacher's NLL of the same audio, whether
    distillation left the teacher the better density model of real speech, as it should be."""
    mel, speaker = builders.model_inputs(config, utterances)
    x = jnp.asarray(utterances["audio"])
    return float(-jnp.mean(iaf.log_prob(student, params, x, mel, speaker)) / x.shape[1])


def timed_listening_audio(config, student, params, teacher, utterances, seed: int):
    """(student audio (B, T), teacher audio (B, T), the report's speed row) for the listening
    set's mels: the student's one parallel pass against the teacher's cached generation, each
    timed by `timing.median_seconds` after the call that compiles it."""
    reference = utterances["audio"]
    mel, speaker = builders.model_inputs(config, utterances)
    t_mel, t_speaker = builders.model_inputs(teacher.config, utterances)
    rng = jax.random.PRNGKey(seed)

    student_fn = lambda: iaf.sample(student, params, rng, mel, speaker)  # noqa: E731
    teacher_fn = lambda: evaluation.teacher_samples(  # noqa: E731
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


def distillation_terms(config, student, params, teacher, utterances, seed: int):
    """The distillation objective's terms (KL, cross-entropy, entropy, power loss, ...) on
    the listening set's utterances, each example's noise from PRNGKey(seed + 1)."""
    distiller = distillation.make_distiller(config, student, teacher)
    batch = {k: jnp.asarray(utterances[k]) for k in ("audio", "mel", "speaker")}
    rngs = jax.random.split(jax.random.PRNGKey(seed + 1), utterances["audio"].shape[0])
    terms = jax.jit(lambda p, tp, b, r: distiller.losses(p, tp, b, r)[1])(
        params, teacher.params, batch, rngs
    )
    return {k: float(v) for k, v in terms.items()}


def teacher_nll_of(teacher, utterances):
    """nll(audio (B, T)) -> the teacher's NLL (nats per sample) of audio for the utterances'
    mels, by teacher forcing."""
    mel, speaker = builders.model_inputs(teacher.config, utterances)
    forced = jax.jit(lambda x: teacher.model.apply({"params": teacher.params}, x, mel, speaker))

    def nll(x):
        return float(
            wavenet.negative_log_likelihood(forced(jnp.asarray(x)), x, teacher.model.distribution)
        )

    return nll
