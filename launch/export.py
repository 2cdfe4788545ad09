"""Exports a student's synthesis (mel and noise in, audio out) for serving with jax alone.

python -m launch.export --workdir=runs/espeak/student --output=exported/student.jax

Writes the serialized `jax.export` artifact (polymorphic in batch and frames) and
`<output>.json`, its manifest (sample rate, hop, mel definition, inputs and noise); see
pwavenet/jobs/export.py for how to load and call it.
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "workdir", None, "A student's workdir (python -m launch.distill).", required=True
)
flags.DEFINE_string(
    "output", None, "The artifact to write; the manifest goes beside it.", required=True
)
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "Platforms to lower for.")


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    from pwavenet.jobs import export

    manifest = export.export_student(
        FLAGS.workdir, FLAGS.output, step=FLAGS.step, platforms=tuple(FLAGS.platforms)
    )
    print(
        f"Wrote {FLAGS.output} ({', '.join(manifest['platforms'])}) and {FLAGS.output}.json: "
        f"mel (batch, frames, {manifest['n_mels']}) and noise (batch, frames * "
        f"{manifest['hop_length']}) in, audio at {manifest['sample_rate']} Hz out."
    )


if __name__ == "__main__":
    common.run(main)
