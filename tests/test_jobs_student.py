"""Tests for pwavenet.jobs.student, the distillation job: refusals of a student that does not
match its teacher (before anything is written), and training, checkpoints and resume against
the job's own checkpoints."""

import dataclasses
import os
import re

import jax
import numpy as np
import pytest

from configs import student as student_config
from configs import teacher as teacher_config
from pwavenet import training
from pwavenet.jobs import student as student_job
from pwavenet.jobs import teacher as teacher_job
from pwavenet.models import builders
from pwavenet.models import pitch as pitch_lib


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory, espeak_small_data_dir):
    """A tiny MoL teacher (configs/teacher.py:tiny) trained for 1 step on the small espeak
    corpus by the shared loop (training.fit on teacher.make_job's job, less its evaluation and
    audio summaries, which tests/test_jobs_teacher.py covers), with the data directory."""
    data_dir = espeak_small_data_dir
    config = teacher_config.get_config("tiny")
    config.data.data_dir = data_dir
    config.train.steps = 1
    model = builders.build_teacher(config)
    job = teacher_job.make_job(config, model)
    job = dataclasses.replace(
        job,
        eval_fn=None,
        eval_batches=None,
        summaries=None,
    )
    workdir = str(tmp_path_factory.mktemp("teacher"))
    training.fit(config, workdir, job)
    return workdir, data_dir


def _student_config(teacher_workdir, data_dir, **overrides):
    config = student_config.get_config("tiny")
    config.teacher_workdir = teacher_workdir
    config.data.data_dir = data_dir
    config.update_from_flattened_dict(overrides)
    return config


def test_the_job_refuses_a_student_that_does_not_match_the_teacher(teacher_workdir, tmp_path):
    """Mismatched features and missing teachers are refused before anything is trained or
    written, naming the field and both values, or the teacher workdir."""
    workdir, data_dir = teacher_workdir
    out = str(tmp_path / "student")
    hop = _student_config(
        workdir, data_dir, **{"mel.hop_length": 128, "model.upsample_strides": (16, 8)}
    )
    with pytest.raises(ValueError, match=r"mel.hop_length: teacher 64, student 128"):
        student_job.train_and_evaluate(hop, out)
    mels = _student_config(workdir, data_dir, **{"mel.n_mels": 8})
    assert mels.model.n_mels == 8  # linked to mel.n_mels
    with pytest.raises(ValueError, match=r"mel.n_mels: teacher 16, student 8"):
        student_job.train_and_evaluate(mels, out)
    assert not os.path.exists(out)

    with pytest.raises(ValueError, match="config.teacher_workdir is empty"):
        student_job.train_and_evaluate(_student_config("", data_dir), out)
    missing = str(tmp_path / "no_teacher")
    with pytest.raises(FileNotFoundError, match=re.escape(f"teacher_workdir='{missing}' does not")):
        student_job.train_and_evaluate(_student_config(missing, data_dir), out)
    empty = tmp_path / "empty_teacher"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty)) + ".*not a training workdir"):
        student_job.train_and_evaluate(_student_config(str(empty), data_dir), out)
    assert not os.path.exists(out)


@pytest.mark.slow
def test_distillation_job_trains_checkpoints_and_resumes(teacher_workdir, tmp_path):
    """The job end to end on the tiny configs: one step (no warmup, so it moves the weights)
    writes a checkpoint and the config and returns finite train and eval metrics; asked for a
    second step at learning rate 0, it resumes from the saved state: its parameters are exactly
    the step-1 ones and its EMA (decay 0.9) is 0.9 ema_1 + 0.1 params_1, recomputed from the
    step-1 checkpoint. A run started over would leave both at the initial parameters."""
    workdir, data_dir = teacher_workdir
    out = str(tmp_path / "student")
    one = {"train.steps": 1, "train.warmup_steps": 0}
    metrics = student_job.train_and_evaluate(_student_config(workdir, data_dir, **one), out)
    for name in ("loss", "kl", "power_loss", "grad_norm", "eval_kl", "eval_power_loss"):
        assert np.isfinite(metrics[name]), (name, metrics)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["1"]
    assert training.load_config(out).teacher_workdir == workdir
    params1, _ = training.restore_params(out, ema=False)
    ema1, _ = training.restore_params(out, ema=True)
    gap = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params1, ema1)
    assert max(jax.tree.leaves(gap)) > 1e-4  # the step moved the weights; the EMA lags

    two = dict(one, **{"train.steps": 2, "train.learning_rate": 0.0})
    metrics = student_job.train_and_evaluate(_student_config(workdir, data_dir, **two), out)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["eval_kl"])
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["1", "2"]
    params2, step = training.restore_params(out, ema=False)
    ema2, _ = training.restore_params(out, ema=True)
    assert step == 2
    jax.tree.map(np.testing.assert_array_equal, params2, params1)
    jax.tree.map(
        lambda e2, e1, p1: np.testing.assert_allclose(
            e2, 0.9 * e1 + 0.1 * p1, rtol=1e-5, atol=1e-7
        ),
        ema2,
        ema1,
        params1,
    )


@pytest.mark.slow
def test_distillation_job_with_the_contrastive_term_and_a_fine_tuned_upsampler(
    teacher_workdir, tmp_path
):
    """The job with the contrastive term on and upsampler='fine_tune': its loss is the KL plus
    the weighted power loss minus the weighted KL under mismatched conditioning (the tiny MoL
    teacher gives a Monte Carlo KL, no regularizer), and the upsampler starts from the
    teacher's and trains: after one Adam step from it (no warmup) every weight is within the
    learning rate of the teacher's, and some moved."""
    workdir, data_dir = teacher_workdir
    out = str(tmp_path / "student")
    overrides = {
        "train.steps": 1,
        "train.warmup_steps": 0,
        "distill.contrastive_weight": 0.5,
        "model.upsampler": "fine_tune",
    }
    config = _student_config(workdir, data_dir, **overrides)
    metrics = student_job.train_and_evaluate(config, out)
    for name in ("loss", "kl", "power_loss", "contrastive_kl", "eval_contrastive_kl"):
        assert np.isfinite(metrics[name]), (name, metrics)
    expected = (
        metrics["kl"]
        + config.distill.power_weight * metrics["power_loss"]
        - 0.5 * metrics["contrastive_kl"]
    )
    scale = abs(metrics["kl"]) + abs(metrics["power_loss"]) + abs(metrics["contrastive_kl"])
    np.testing.assert_allclose(metrics["loss"], expected, rtol=0, atol=1e-5 * scale)

    teacher_params, _ = training.restore_params(workdir, ema=True)
    student_params, _ = training.restore_params(out, ema=False)
    moved = jax.tree.map(
        lambda s, t: float(np.max(np.abs(np.asarray(s) - np.asarray(t)))),
        student_params["upsampler"],
        teacher_params["upsampler"],
    )
    assert max(jax.tree.leaves(moved)) > 0.0, moved
    assert max(jax.tree.leaves(moved)) <= config.train.learning_rate * (1 + 1e-4), moved


def _learned_pitch_student():
    """The tiny student with pulses at a learned predictor's pitch (8 channels, dilations
    1 and 2), its config and initial parameters."""
    config = student_config.get_config("tiny")
    config.model.lpc_order = 6
    config.model.excitation = "pulses"
    config.model.pitch_source = "learned"
    config.model.pitch_channels = 8
    config.model.pitch_dilations = (1, 2)
    student = builders.build_student(config)
    params = builders.init_student_params(student, config, jax.random.key(0))
    return config, student, params


def _fitted_pitch_workdir(path, config, params):
    """A workdir as launch.fit_pitch leaves it: config.json (mel and pitch sections) and
    the predictor's parameters."""
    from flax import serialization

    from configs import pitch as pitch_config

    fitted = pitch_config.get_config("tiny")
    fitted.mel = config.mel
    os.makedirs(path, exist_ok=True)
    training.save_config(fitted, str(path))
    with open(os.path.join(path, "pitch_params.msgpack"), "wb") as f:
        f.write(serialization.to_bytes(params))
    return str(path)


def test_a_learned_pitch_student_starts_from_the_fitted_predictor_and_keeps_it(tmp_path):
    """The fit's parameters become the student's `pitch` subtree, array for array, and the
    student's pitch contour, the predictor's only way to the audio, has zero gradient with
    respect to them (the distillation leaves them as they are); a missing pitch_workdir, another mel or another architecture is refused
    by name."""
    config, student, params = _learned_pitch_student()
    rng = np.random.default_rng(0)
    fitted = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), params["pitch"])
    config.pitch_workdir = _fitted_pitch_workdir(tmp_path / "pitch", config, fitted)
    loaded = student_job.with_pitch_predictor(config, student, params)
    jax.tree.map(np.testing.assert_array_equal, loaded["pitch"], fitted)

    frames = 8
    mel = jax.numpy.asarray(rng.normal(-3.0, 1.0, (1, frames, 16)), jax.numpy.float32)
    speaker = jax.numpy.zeros((1,), jax.numpy.int32)

    def contour_energy(pitch_params):
        # The predictor reaches the audio only through the source's F0 and voicing contour.
        contour = student.apply(
            {"params": dict(loaded, pitch=pitch_params)},
            mel,
            speaker,
            method=type(student).excitation_inputs,
        )
        return jax.numpy.sum(jax.numpy.square(contour.f0) + jax.numpy.square(contour.voicing))

    energy, grads = jax.value_and_grad(contour_energy)(loaded["pitch"])
    assert float(energy) > 0
    assert all(float(np.max(np.abs(g))) == 0.0 for g in jax.tree.leaves(grads))

    config.pitch_workdir = ""
    with pytest.raises(ValueError, match="pitch_workdir"):
        student_job.with_pitch_predictor(config, student, params)
    other_mel = config.copy_and_resolve_references()
    other_mel.mel.n_fft = 2 * config.mel.n_fft
    config.pitch_workdir = _fitted_pitch_workdir(tmp_path / "other_mel", other_mel, fitted)
    with pytest.raises(ValueError, match="mel.n_fft"):
        student_job.with_pitch_predictor(config, student, params)
    narrow = pitch_lib.PitchPredictor(channels=4, dilations=(1, 2), num_speakers=8)
    narrow_params = narrow.init(jax.random.key(1), mel, speaker)["params"]
    config.pitch_workdir = _fitted_pitch_workdir(tmp_path / "narrow", config, narrow_params)
    with pytest.raises(ValueError, match="model.pitch_channels"):
        student_job.with_pitch_predictor(config, student, params)


def test_a_student_saved_before_the_pitch_fields_still_resumes():
    """A saved student config without model.pitch_source and the predictor's architecture
    means the hand-made estimate; choosing the learned pitch is a difference, named."""
    import json

    import ml_collections

    new = student_config.get_config("tiny")
    saved = ml_collections.ConfigDict(json.loads(new.to_json_best_effort()))
    for field in ("pitch_source", "pitch_channels", "pitch_dilations", "pitch_speaker_dim"):
        del saved.model[field]
    assert training.config_mismatches(saved, new, ("model", "mel")) == []
    new.model.pitch_source = "learned"
    assert training.config_mismatches(saved, new, ("model", "mel")) == [
        "model.pitch_source: saved 'estimate', now 'learned'"
    ]
