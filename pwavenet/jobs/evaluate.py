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
This module restores the checkpoints and assembles the report; what it reports is computed in
pwavenet.evaluation (`tables`, `listening`, `densities`, `speed`, `report`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from pwavenet import config_schema, evaluation, training
from pwavenet.models import builders


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
    teacher = training.Teacher(config, model, params, step, workdir)
    out = o.output_dir or os.path.join(workdir, f"eval_{step}")
    os.makedirs(out, exist_ok=True)
    nll = evaluation.validation_nll(model, config, params)

    utterances = evaluation.listening_utterances(config, o.num_utterances, o.max_seconds)
    generated = evaluation.generate_for(
        model, config, params, utterances, jax.random.PRNGKey(o.seed)
    )
    reference = utterances["audio"]
    griffin_lim = evaluation.listening_griffin_lim(config, utterances)
    evaluation.write_listening_set(
        config, out, reference, {"generated": generated, "griffin_lim": griffin_lim}
    )
    distance = evaluation.log_mel_l1(config, generated, reference)

    table = evaluation.quality_table(
        workdir,
        step,
        config,
        teacher,
        {"teacher": evaluation.teacher_synthesis(model, config, params)},
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
    utterances = evaluation.listening_utterances(config, o.num_utterances, o.max_seconds)
    reference = utterances["audio"]
    student_audio, teacher_audio, speed = evaluation.timed_listening_audio(
        config, student, params, teacher, utterances, o.seed
    )
    terms = evaluation.distillation_terms(config, student, params, teacher, utterances, o.seed)
    listening = {
        "griffin_lim": evaluation.listening_griffin_lim(config, utterances),
        "teacher": teacher_audio,
        "student": student_audio,
    }
    evaluation.write_listening_set(config, out, reference, listening, models_as_rows=True)

    table = evaluation.student_quality_table(
        workdir,
        step,
        config,
        student,
        params,
        teacher,
        split=o.split,
        limit=o.quality_utterances,
        seed=o.seed,
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
        **evaluation.listening_scores(config, teacher, utterances, student_audio, teacher_audio),
        "student_nll_of_real_audio": evaluation.student_nll_of_real_audio(
            student, config, params, utterances
        ),
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
