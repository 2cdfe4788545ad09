"""The student's synthesis as a serialized `jax.export` artifact, for serving without pwavenet.

`export_student(workdir, output)` writes
  - `output`: `jax.export.Exported.serialize()` of audio = f(mel, noise[, speaker]),
    the EMA weights baked in, lowered for `platforms` (default cpu, cuda and tpu), polymorphic
    in the batch and the frame count (frames >= 2: the synthesis filter's design needs two);
  - `output + '.json'`: the manifest: sample rate, hop, the mel definition the model expects,
    the inputs' and output's shapes and dtypes, the noise's distribution and shape.

Inputs: mel (batch, frames, n_mels) float32 log-mel in the model's definition; noise (batch,
frames * hop) float32 standard base noise (logistic or normal, per the manifest); with a
multi-speaker model, speaker (batch,) int32. Output: (batch, frames * hop) float32 audio
clipped to [-1, 1]. The function is one parallel pass (model.synthesis_chunk = 0, the same
result as the windowed flows), so memory grows with the input: serve long inputs in pieces
(pwavenet.vocoder) or in calls of bounded length. With `Vocoder.noise(frames, seed)` as the
noise, it gives `Vocoder.vocode(mel, seed=seed)`.

Loading needs jax alone:

    exported = jax.export.deserialize(open("student.jax", "rb").read())
    audio = exported.call(mel, noise)              # (+ speaker ids for a multi-speaker model)
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from pwavenet import training
from pwavenet.models import builders, iaf

PLATFORMS = ("cpu", "cuda", "tpu")
MIN_FRAMES = 2


def synthesis_function(model: iaf.IAFStudent, params):
    """f(mel (B, F, n_mels), noise (B, F * hop)[, speaker (B,)]) -> audio (B, F * hop)
    clipped to [-1, 1]: the student's one-pass synthesis with `params` baked in."""

    def student_audio(mel, noise, speaker=None):
        x = iaf.forward(model, params, noise, mel, speaker)[0]
        return jnp.clip(x, -1.0, 1.0)

    if model.config.num_speakers:
        return student_audio
    return lambda mel, noise: student_audio(mel, noise)


def exported_inputs(
    model: iaf.IAFStudent, config
) -> tuple[list[jax.ShapeDtypeStruct], list[dict[str, Any]]]:
    """The synthesis function's arguments, polymorphic in the batch and the frame count (at
    least MIN_FRAMES), and their manifest entries: mel, noise[, speaker]."""
    hop, n_mels = model.hop_length, int(config.model.n_mels)
    batch, frames = jax.export.symbolic_shape(
        "batch, frames", constraints=(f"frames >= {MIN_FRAMES}",)
    )
    args = [
        jax.ShapeDtypeStruct((batch, frames, n_mels), jnp.float32),
        jax.ShapeDtypeStruct((batch, frames * hop), jnp.float32),
    ]
    inputs = [
        {"name": "mel", "shape": ["batch", "frames", n_mels], "dtype": "float32"},
        {
            "name": "noise",
            "shape": ["batch", f"frames * {hop}"],
            "dtype": "float32",
            "distribution": "logistic(0, 1)" if model.config.base == "logistic" else "normal(0, 1)",
        },
    ]
    if config.model.num_speakers:
        args.append(jax.ShapeDtypeStruct((batch,), jnp.int32))
        inputs.append(
            {
                "name": "speaker",
                "shape": ["batch"],
                "dtype": "int32",
                "range": [0, int(config.model.num_speakers) - 1],
            }
        )
    return args, inputs


def model_description(model: iaf.IAFStudent, config) -> dict[str, Any]:
    """The manifest's sample rate, hop, mel size, shortest input and mel definition."""
    return {
        "sample_rate": int(config.mel.sample_rate),
        "hop_length": model.hop_length,
        "n_mels": int(config.model.n_mels),
        "min_frames": MIN_FRAMES,
        "mel": {
            **config.mel.to_dict(),
            "definition": (
                "pwavenet.audio.log_mel_spectrogram: log(max(|STFT| @ W, log_floor)), natural "
                "log of magnitudes; W = TensorFlow's linear_to_mel_weight_matrix (HTK mel scale, "
                "no area normalisation); periodic Hann window of win_length centred in n_fft; "
                "reflect padding, (n_fft - hop) // 2 on the left; frame i covers samples "
                "[i hop, (i + 1) hop)"
            ),
        },
    }


def export_student(
    workdir: str,
    output: str,
    *,
    step: int | None = None,
    platforms: tuple[str, ...] = PLATFORMS,
) -> dict[str, Any]:
    """Writes the artifact and its manifest (module docstring); returns the manifest."""

    config = training.load_config(workdir)
    if not training.is_student_config(config):
        raise ValueError(
            f"{workdir} is a teacher's workdir; export needs a student's (python -m "
            "launch.distill): the teacher's generation is sequential, one step per sample."
        )
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ValueError(f"platforms={platforms}: choose among {PLATFORMS}.")
    params, step = training.restore_params(workdir, step, ema=True)
    config.model.synthesis_chunk = 0  # one pass: the windows' count would need a known length
    model = builders.build_student(config)
    args, inputs = exported_inputs(model, config)
    exported = jax.export.export(
        jax.jit(synthesis_function(model, params)), platforms=tuple(platforms)
    )(*args)
    os.makedirs(os.path.dirname(os.path.abspath(output)) or ".", exist_ok=True)
    with open(output, "wb") as f:
        f.write(exported.serialize())
    manifest = {
        "format": "jax.export",
        "artifact": os.path.basename(output),
        "jax_version": jax.__version__,
        "platforms": list(exported.platforms),
        "workdir": os.path.abspath(workdir),
        "step": int(step),
        **model_description(model, config),
        "inputs": inputs,
        "output": {
            "name": "audio",
            "shape": ["batch", f"frames * {model.hop_length}"],
            "dtype": "float32",
            "range": [-1.0, 1.0],
        },
    }
    with open(output + ".json", "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
