"""The distillation job: a frozen teacher, the student and `distillation.Distiller` plugged into
the shared training loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from pwavenet import distillation, evaluation, training
from pwavenet.data import pipelines
from pwavenet.jobs import mel_stats
from pwavenet.models import builders, iaf
from pwavenet.models import pitch as pitch_lib

# The data pipeline (TensorFlow, tfds) is imported where datasets are built, so the objective
# and the models import without TensorFlow (the benchmark needs none).

Array = jax.Array

KL_METHODS = ("auto", "closed_form", "monte_carlo")
UPSAMPLER_MODES = ("frozen", "fine_tune", "own")


def teacher_mismatches(
    config: ml_collections.ConfigDict, teacher_config: ml_collections.ConfigDict
) -> list[str]:
    """Every student setting that contradicts the teacher's saved config."""
    problems = [
        p.replace("saved", "teacher").replace("now", "student")
        for p in training.config_mismatches(teacher_config, config, ("mel",))
    ]
    if config.model.upsampler != "own" and config.model.n_mels:
        for field in ("upsample_strides", "upsample_kernel_multiple"):
            t, s = teacher_config.model[field], config.model[field]
            if tuple(np.atleast_1d(t)) != tuple(np.atleast_1d(s)):
                problems.append(
                    f"model.{field}: teacher {t!r}, student {s!r} (model.upsampler="
                    f"{config.model.upsampler!r} shares the teacher's upsampler; set "
                    "model.upsampler='own' to train a separate one)"
                )
    if teacher_config.model.output == "mulaw":
        problems.append(
            "model.output: teacher 'mulaw' cannot be distilled (no gradient through a "
            "categorical); train a 'mol' or 'gaussian' teacher"
        )
    return problems


def check_teacher(config, teacher: training.Teacher) -> None:
    problems = teacher_mismatches(config, teacher.config)
    if problems:
        raise ValueError(
            f"The student config does not match the teacher in {teacher.workdir}:\n  "
            + "\n  ".join(problems)
            + "\nOverride the student's fields to the teacher's values, or distill another "
            "teacher."
        )


def make_job(config, student: iaf.IAFStudent, teacher: training.Teacher) -> training.Job:

    datasets = pipelines.create_datasets(config)
    distiller = distillation.make_distiller(config, student, teacher)

    def loss_fn(params, batch, rngs, teacher_params):
        return distiller.losses(params, teacher_params, batch, rngs)

    def eval_fn(params, batch, teacher_params):
        # A fixed key per example position, so every evaluation scores the same noise.
        rngs = jax.random.split(jax.random.PRNGKey(0), batch["audio"].shape[0])
        return distiller.losses(params, teacher_params, batch, rngs)[1]

    def synthesize_utterances(params, utterances, rng):
        mel, speaker = builders.model_inputs(config, utterances)
        return iaf.sample(student, params, rng, mel, speaker)

    return training.Job(
        init_params=lambda rng: with_pitch_predictor(
            config, student, builders.init_student_params(student, config, rng, teacher.params)
        ),
        loss_fn=loss_fn,
        train_batches=datasets.train_from,
        eval_fn=eval_fn,
        eval_batches=lambda: datasets.eval(config.train.eval_batches),
        summaries=evaluation.audio_summaries(config, "student", synthesize_utterances),
        samples_per_example=config.data.crop_samples,
        frozen=teacher.params,
        adapt_init_from=lambda params: frozen_upsampler(config, params, teacher.params),
    )


def with_pitch_predictor(config, student: iaf.IAFStudent, params):
    """A learned-pitch student's parameters with the fitted predictor of config.pitch_workdir
    in `pitch` (the distillation leaves it as it is: its outputs are not differentiated);
    unchanged for other students. Refused, naming the fix, without a pitch_workdir or when
    the fit read another mel definition or has another architecture."""
    if not student.learned_pitch:
        return params
    workdir = config.get("pitch_workdir", "")
    if not workdir:
        raise ValueError(
            "model.pitch_source='learned' takes its pitch predictor from a fit: run "
            "python -m launch.fit_pitch --workdir=DIR on the teacher's data and pass "
            "--config.pitch_workdir=DIR."
        )
    fitted = training.load_config(workdir)
    differ = [
        f"mel.{k}: {fitted.mel[k]!r} there, {config.mel[k]!r} here"
        for k in fitted.mel
        if k in config.mel and fitted.mel[k] != config.mel[k]
    ]
    if differ:
        raise ValueError(
            f"the pitch predictor in {workdir} was fitted on another mel definition ("
            + "; ".join(differ)
            + "): fit one on the student's mel (configs/pitch.py with the teacher's variant)."
        )
    return dict(params, pitch=pitch_lib.read_params(workdir, params["pitch"]))


def frozen_upsampler(config, params, teacher_params):
    """Student params with model.upsampler='frozen' given this teacher's upsampler (a frozen
    upsampler is the teacher's by definition, also when the other weights come from
    config.init_from); unchanged otherwise."""
    if config.model.upsampler != "frozen" or not config.model.n_mels:
        return params
    return dict(params, upsampler=jax.tree.map(jnp.array, teacher_params["upsampler"]))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Distills the teacher in config.teacher_workdir into a student in `workdir` (resuming if
    it has checkpoints; else starting from config.init_from's weights when set). Refused
    (training.WorkdirInUse) while another job trains in `workdir`."""
    with training.workdir_lock(workdir):
        teacher = training.load_teacher(config.teacher_workdir)
        check_teacher(config, teacher)
        training.check_workdir_config(config, workdir, sections=("mel",))  # before stats
        mel_stats.prepare(config, workdir, teacher_workdir=config.teacher_workdir)
        training.check_workdir_config(config, workdir, sections=("model", "mel"))
        training.check_init_from(config)
        student = builders.build_student(config)
        logging.info(
            "Distilling the teacher of %s (step %d) into a %d-flow student; KL: %s.",
            teacher.workdir,
            teacher.step,
            student.num_flows,
            distillation.kl_method(config.distill, student, teacher.model.distribution),
        )
        return training.fit(config, workdir, make_job(config, student, teacher))
