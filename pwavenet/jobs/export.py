"""A trained model for serving without pwavenet: `export(workdir, output, format=...)`.

Formats (the student's synthesis, mel and noise in, audio out, EMA weights baked in; `bundle`
takes a teacher too):
  - `jax`: `jax.export.Exported.serialize()`, lowered for `platforms` (default cpu, cuda and
    tpu), polymorphic in the batch and the frame count (frames >= 2: the synthesis filter's
    design needs two). Loads with jax alone:
        exported = jax.export.deserialize(open("student.jax", "rb").read())
        audio = exported.call(mel, noise)          # (+ speaker ids for a multi-speaker model)
  - `saved_model`: a TensorFlow SavedModel directory (jax2tf), its `serving_default`
    signature taking mel, noise[, speaker] and returning {'audio'}, dynamic in the batch and
    the frame count. Loads with TensorFlow alone (and TensorFlow Serving):
        audio = tf.saved_model.load("student_tf").signatures["serving_default"](
            mel=mel, noise=noise)["audio"]
    The computation is stored as StableHLO (jax2tf's native serialization), which TensorFlow
    runs through XLA: lowered for `platforms` among cpu, cuda and tpu.
  - `onnx`: an ONNX model (jax2onnx) of fixed shapes, batch `batch_size` and `frames` mel
    frames: the converter cannot keep the flows' scan dynamic, so a server keeps one model per
    bucket (export once per shape it serves) and calls the smallest that holds the input
    (the audio of a padded mel differs from the unpadded one's over its last frames). The
    synthesis filter's FFTs are converted as DFT matmuls (pwavenet.audio.lpc.fft_as_matmul;
    ONNX has no real FFT): the same audio up to float32 rounding. Loads with onnxruntime alone:
        audio = onnxruntime.InferenceSession("student.onnx").run(
            ["audio"], {"mel": mel, "noise": noise})[0]
  - `bundle`: one file for pwavenet.load_vocoder (pwavenet.training.bundle): EMA weights,
    config, mel definition and normalization, versions, and a student's teacher.

Beside every format but the bundle, `output + '.json'` is its manifest: sample rate, hop, the
mel definition the model expects and its normalization, the inputs' and output's names,
shapes and dtypes, the noise's distribution and shape.

Inputs: mel (batch, frames, n_mels) float32 log-mel in the model's definition; noise (batch,
frames * hop) float32 standard base noise (logistic or normal, per the manifest); with a
multi-speaker model, speaker (batch,) int32. Output: (batch, frames * hop) float32 audio
clipped to [-1, 1]. The function is one parallel pass (model.synthesis_chunk = 0, the same
result as the windowed flows), so memory grows with the input: serve long inputs in pieces
(pwavenet.vocoder) or in calls of bounded length. With `Vocoder.noise(frames, seed)` as the
noise, it gives `Vocoder.vocode(mel, seed=seed)`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from pwavenet import training
from pwavenet.audio import lpc
from pwavenet.models import builders, iaf

PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("jax", "saved_model", "onnx", "bundle")
MIN_FRAMES = 2
INPUT_NAMES = ("mel", "noise", "speaker")


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
    """The manifest's sample rate, hop, mel size, shortest input, mel definition and the
    normalization of the features the model takes ('none' unless it was trained on
    normalized ones)."""
    mel = config.mel.to_dict()
    return {
        "sample_rate": int(config.mel.sample_rate),
        "hop_length": model.hop_length,
        "n_mels": int(config.model.n_mels),
        "min_frames": MIN_FRAMES,
        "mel": {
            **mel,
            "definition": (
                "pwavenet.audio.log_mel_spectrogram: log(max(|STFT| @ W, log_floor)), natural "
                "log of magnitudes; W = TensorFlow's linear_to_mel_weight_matrix (HTK mel scale, "
                "no area normalisation); periodic Hann window of win_length centred in n_fft; "
                "reflect padding, (n_fft - hop) // 2 on the left; frame i covers samples "
                "[i hop, (i + 1) hop)"
            ),
        },
        "normalization": mel.get("normalization", "none"),
    }


def _fixed_inputs(model, config, batch_size: int, frames: int) -> list[jax.ShapeDtypeStruct]:
    """The synthesis function's arguments at one fixed (batch, frames) shape."""
    args = [
        jax.ShapeDtypeStruct((batch_size, frames, int(config.model.n_mels)), jnp.float32),
        jax.ShapeDtypeStruct((batch_size, frames * model.hop_length), jnp.float32),
    ]
    if config.model.num_speakers:
        args.append(jax.ShapeDtypeStruct((batch_size,), jnp.int32))
    return args


def _write_jax(function, args, output: str, platforms) -> dict[str, Any]:
    exported = jax.export.export(jax.jit(function), platforms=tuple(platforms))(*args)
    with open(output, "wb") as f:
        f.write(exported.serialize())
    return {"platforms": list(exported.platforms), "jax_version": jax.__version__}


def _write_saved_model(function, model, config, output: str, platforms) -> dict[str, Any]:
    """A SavedModel directory at `output` whose serving_default signature runs `function`."""
    # Function-local: TensorFlow (and jax2tf, which needs it) only for this format.
    import tensorflow as tf
    from jax.experimental import jax2tf

    n_mels, hop = int(config.model.n_mels), model.hop_length
    specs = [
        tf.TensorSpec([None, None, n_mels], tf.float32, name="mel"),
        tf.TensorSpec([None, None], tf.float32, name="noise"),
    ]
    shapes = [f"(batch, frames, {n_mels})", f"(batch, frames * {hop})"]
    if config.model.num_speakers:
        specs.append(tf.TensorSpec([None], tf.int32, name="speaker"))
        shapes.append("(batch,)")
    converted = jax2tf.convert(
        function,
        polymorphic_shapes=shapes,
        polymorphic_constraints=(f"frames >= {MIN_FRAMES}",),
        native_serialization_platforms=tuple(platforms),
        with_gradient=False,  # serving only: no custom gradient to save
    )
    module = tf.Module()
    module.synthesize = tf.function(
        lambda *inputs: {"audio": converted(*inputs)}, input_signature=specs, autograph=False
    )
    tf.saved_model.save(
        module, output, signatures={"serving_default": module.synthesize.get_concrete_function()}
    )
    return {"platforms": list(platforms), "tensorflow_version": tf.__version__}


def _write_onnx(function, args, output: str) -> dict[str, Any]:
    """An ONNX model at `output` of `function` at the fixed shapes of `args`."""
    # Function-local: the converter is needed for this format only.
    import logging

    import onnx

    # The converter's plugins for libraries this model does not use may fail to load, and its
    # serializer notes values of unknown type; neither is the user's concern.
    quiet = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        import jax2onnx

        # jax2onnx traces Flax modules with its own patches, which nn.scan's shape handling
        # does not survive; converting the traced program (primitives only) sidesteps them.
        # The synthesis filter's FFTs as DFT matmuls: the converter has no FFT nor complex
        # numbers (a trace-time choice; jnp.fft elsewhere).
        with lpc.fft_as_matmul():
            closed = jax.make_jaxpr(function)(*args)

        def program(*inputs):
            return jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *inputs)[0]

        proto = jax2onnx.to_onnx(
            program,
            args,
            model_name="pwavenet_student",
            input_names=list(INPUT_NAMES[: len(args)]),
            output_names=["audio"],
        )
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    onnx.save(proto, output)
    return {"opset": int(proto.opset_import[0].version), "onnx_version": onnx.__version__}


def export(
    workdir: str,
    output: str,
    *,
    format: str = "jax",
    step: int | None = None,
    platforms: tuple[str, ...] = PLATFORMS,
    batch_size: int = 1,
    frames: int = 256,
) -> dict[str, Any]:
    """Writes the student of `workdir` (any model for `bundle`) in `format` to `output` with
    its manifest (module docstring); returns the manifest (a bundle's bundle.json).
    `batch_size` and `frames` fix the ONNX model's shapes; other formats are dynamic."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose among {', '.join(FORMATS)}.")
    if format == "bundle":
        return training.write_bundle(workdir, output, step)
    config = training.load_config(workdir)
    if not training.is_student_config(config):
        raise ValueError(
            f"{workdir} is a teacher's workdir; export needs a student's (python -m "
            "launch.distill): the teacher's generation is sequential, one step per sample. "
            "--format=bundle takes a teacher."
        )
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ValueError(f"platforms={platforms}: choose among {PLATFORMS}.")
    if format == "onnx" and (batch_size < 1 or frames < MIN_FRAMES):
        raise ValueError(
            f"batch_size={batch_size}, frames={frames}: an ONNX model has fixed shapes; use a "
            f"batch_size >= 1 and frames >= {MIN_FRAMES}."
        )
    config.model.synthesis_chunk = 0  # one pass: the windows' count would need a known length
    model = builders.build_student(config)
    params, step = training.restore_params(workdir, step, ema=True)
    function = synthesis_function(model, params)
    args, inputs = exported_inputs(model, config)
    output_shape = ["batch", f"frames * {model.hop_length}"]
    os.makedirs(os.path.dirname(os.path.abspath(output)) or ".", exist_ok=True)
    if format == "jax":
        written = _write_jax(function, args, output, platforms)
    elif format == "saved_model":
        written = _write_saved_model(function, model, config, output, platforms)
    else:
        written = _write_onnx(function, _fixed_inputs(model, config, batch_size, frames), output)
        hop = model.hop_length
        fixed = {"batch": batch_size, "frames": frames, f"frames * {hop}": frames * hop}
        for spec in inputs:
            spec["shape"] = [fixed.get(d, d) for d in spec["shape"]]
        output_shape = [batch_size, frames * hop]
    manifest = {
        "format": {"jax": "jax.export", "saved_model": "tf.saved_model", "onnx": "onnx"}[format],
        "artifact": os.path.basename(os.path.normpath(output)),
        **written,
        "workdir": os.path.abspath(workdir),
        "step": int(step),
        **model_description(model, config),
        "inputs": inputs,
        "output": {
            "name": "audio",
            "shape": output_shape,
            "dtype": "float32",
            "range": [-1.0, 1.0],
        },
    }
    if format == "onnx":
        manifest["buckets"] = "fixed shapes: export once per (batch_size, frames) served"
    with open(os.path.normpath(output) + ".json", "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def export_student(
    workdir: str,
    output: str,
    *,
    step: int | None = None,
    platforms: tuple[str, ...] = PLATFORMS,
) -> dict[str, Any]:
    """`export(..., format='jax')`: the serialized `jax.export` artifact and its manifest."""
    return export(workdir, output, format="jax", step=step, platforms=platforms)
