"""Exports a trained model for serving: the student's synthesis (mel and noise in, audio out)
for jax, TensorFlow or ONNX Runtime, or any model as one file for pwavenet.load_vocoder.

python -m launch.export --workdir=runs/espeak/student --output=exported/student.jax
python -m launch.export --format=saved_model --workdir=runs/espeak/student --output=exported/tf
python -m launch.export --format=onnx --frames=256 --workdir=... --output=exported/student.onnx
python -m launch.export --format=bundle --workdir=runs/espeak/student --output=student.pwavenet

Beside the artifact, `<output>.json` is its manifest (sample rate, hop, mel definition and
normalization, inputs and the noise's distribution); pwavenet/jobs/export.py says how to load
each format.
"""

from absl import flags

from . import common

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "workdir",
    None,
    "A student's workdir (python -m launch.distill); --format=bundle also takes a teacher's.",
    required=True,
)
flags.DEFINE_string(
    "output", None, "The artifact to write; the manifest goes beside it.", required=True
)
flags.DEFINE_enum(
    "format",
    "jax",
    ["jax", "saved_model", "onnx", "bundle"],
    "jax: jax.export artifact; saved_model: TensorFlow SavedModel directory; onnx: ONNX model "
    "of fixed shapes (--batch_size, --frames); bundle: one file for pwavenet.load_vocoder.",
)
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "jax, saved_model: platforms to lower for.")
flags.DEFINE_integer("batch_size", 1, "onnx: the model's fixed batch size.", lower_bound=1)
flags.DEFINE_integer("frames", 256, "onnx: the model's fixed number of mel frames.", lower_bound=2)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    from pwavenet.jobs import export

    manifest = export.export(
        FLAGS.workdir,
        FLAGS.output,
        format=FLAGS.format,
        step=FLAGS.step,
        platforms=tuple(FLAGS.platforms),
        batch_size=FLAGS.batch_size,
        frames=FLAGS.frames,
    )
    if FLAGS.format == "bundle":
        print(
            f"Wrote {FLAGS.output}: the {manifest['kind']} of {FLAGS.workdir} at step "
            f"{manifest['step']}; load it with pwavenet.load_vocoder({FLAGS.output!r})."
        )
        return
    shape = (
        f"batch {FLAGS.batch_size}, {FLAGS.frames} frames"
        if FLAGS.format == "onnx"
        else "any batch and length"
    )
    print(
        f"Wrote {FLAGS.output} ({manifest['format']}, {shape}) and {FLAGS.output}.json: "
        f"mel (batch, frames, {manifest['n_mels']}) and noise (batch, frames * "
        f"{manifest['hop_length']}) in, audio at {manifest['sample_rate']} Hz out."
    )


if __name__ == "__main__":
    common.run(main)
