"""Synthesizes audio from a mel spectrogram (.npy) or from a wav file's mel.

python -m launch.synthesize --workdir=runs/espeak/student --input=speech.wav --output=out.wav
python -m launch.synthesize --workdir=runs/espeak/student --input=mel.npy --output=out.wav \
    --model=teacher

Prints the samples/s and real-time factor (synthesis time / audio duration) of the run.
"""

from absl import app
from absl import flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A student's (or a teacher's) workdir.", required=True)
flags.DEFINE_string(
    "input", None, "A mono .wav at the model's rate, or a .npy log-mel.", required=True
)
flags.DEFINE_string("output", None, "The .wav file to write.", required=True)
flags.DEFINE_enum("model", "student", ["student", "teacher"], "Which model synthesizes.")
flags.DEFINE_integer("speaker", 0, "Speaker id for multi-speaker models.")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_float("chunk_seconds", 10.0, "Student: seconds of audio per chunk (bounds memory).")
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.prepare_process()
    from pwavenet import synthesize

    result = synthesize.synthesize(
        FLAGS.workdir,
        FLAGS.input,
        FLAGS.output,
        model=FLAGS.model,
        speaker=FLAGS.speaker,
        seed=FLAGS.seed,
        chunk_seconds=FLAGS.chunk_seconds,
        step=FLAGS.step,
    )
    print(
        f"Wrote {FLAGS.output}: {result['samples']} samples by the {result['model']} in "
        f"{result['seconds']:.3f} s, {result['samples_per_second']:,.0f} samples/s, real-time "
        f"factor {result['real_time_factor']:.4f}."
    )


if __name__ == "__main__":
    app.run(main)
