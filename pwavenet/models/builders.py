"""Models from job configs, checked against the mel features, and their initial parameters."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pwavenet import audio
from pwavenet.models import builders, iaf, wavenet
from pwavenet import config_schema

# The data pipeline (TensorFlow, tfds) is imported where datasets are built, so the objective
# and the models import without TensorFlow (the benchmark needs none).

Array = jax.Array

KL_METHODS = ("auto", "closed_form", "monte_carlo")
UPSAMPLER_MODES = ("frozen", "fine_tune", "own")


def build_student(config: ml_collections.ConfigDict) -> iaf.IAFStudent:
    """The student from a job config, after checking it against the mel features."""
    builders.check_model_against_mel(config)
    if config.model.upsampler not in UPSAMPLER_MODES:
        raise ValueError(
            f"config.model.upsampler={config.model.upsampler!r}; expected one of {UPSAMPLER_MODES}"
        )
    return iaf.IAFStudent(config.model)


def init_student_params(student: iaf.IAFStudent, config, rng, teacher_params=None):
    """Student parameters; the teacher's upsampler weights copied in unless upsampler='own'."""
    frames = config.data.crop_samples // config.mel.hop_length
    z = jnp.zeros((1, config.data.crop_samples))
    mel = jnp.zeros((1, frames, config.mel.n_mels)) if config.model.n_mels else None
    speaker = jnp.zeros((1,), jnp.int32) if config.model.num_speakers else None
    params = student.init(rng, z, mel, speaker)["params"]
    if config.model.upsampler != "own" and config.model.n_mels and teacher_params is not None:
        params = dict(params, upsampler=jax.tree.map(jnp.array, teacher_params["upsampler"]))
    return params


def build_teacher(config: ml_collections.ConfigDict) -> wavenet.WaveNet:
    """The teacher from a job config, after checking it against the mel features."""
    check_model_against_mel(config)
    return wavenet.WaveNet(config.model)


def check_model_against_mel(config: ml_collections.ConfigDict) -> None:
    """The model's upsampling must produce the mel's hop, and its n_mels equal the mel's."""
    hop = int(np.prod(config.model.upsample_strides))
    if config.model.n_mels and hop != config.mel.hop_length:
        raise ValueError(
            f"config.model.upsample_strides={tuple(config.model.upsample_strides)} upsample by "
            f"{hop}, but config.mel.hop_length={config.mel.hop_length}; their product must equal "
            "the hop."
        )
    if config.model.n_mels and config.model.n_mels != config.mel.n_mels:
        raise ValueError(
            f"config.model.n_mels={config.model.n_mels} differs from "
            f"config.mel.n_mels={config.mel.n_mels}."
        )
    preset = audio.mel_preset(config.mel)
    lpc_order = config_schema.setting(config.model, "model.lpc_order")
    if lpc_order and preset != "pwavenet":
        raise ValueError(
            f"config.model.lpc_order={lpc_order} inverts the project's own mel "
            f"definition, but config.mel.preset={preset!r}; set model.lpc_order=0, or use "
            "the 'pwavenet' preset."
        )
    if lpc_order and audio.mel_log_base(config.mel) != math.e:
        raise ValueError(
            f"config.model.lpc_order={lpc_order} inverts natural-log mels, but "
            f"config.mel.log_base={config.mel.log_base}; set model.lpc_order=0, or "
            "mel.log_base=0 (the preset's)."
        )


def model_inputs(config, batch):
    """(mel, speaker) for the model from a batch, None where the model is unconditioned."""
    mel = batch["mel"] if config.model.n_mels else None
    speaker = batch["speaker"] if config.model.num_speakers else None
    return mel, speaker


def init_teacher_params(model, config, rng):
    frames = config.data.crop_samples // config.mel.hop_length
    batch = {
        "audio": jnp.zeros((1, config.data.crop_samples)),
        "mel": jnp.zeros((1, frames, config.mel.n_mels)),
        "speaker": jnp.zeros((1,), jnp.int32),
    }
    return model.init(rng, batch["audio"], *model_inputs(config, batch))["params"]
