"""Vocodes a file or a folder: mel spectrograms (.npy) or wav files' mels -> wav files.

python -m launch.synthesize --workdir=runs/espeak/student --input=speech.wav --output=out.wav
python -m launch.synthesize --workdir=runs/espeak/student --input=mels/ --output=wavs/
python -m launch.synthesize --workdir=runs/espeak/student --input=mel.npy --output=out.wav \
    --model=teacher

A folder keeps its relative names (a/b.npy -> wavs/a/b.wav). Wavs at another rate or with
several channels are resampled and downmixed, with one notice. Shows a progress bar, then one
summary line: files, seconds of audio, synthesis seconds and the real-time factor (synthesis
time / audio duration, compilation excluded).
"""

from absl import flags

from . import common

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "workdir",
    None,
    "A student's (or a teacher's) workdir, or a bundle (launch.export --format=bundle).",
    required=True,
)
flags.DEFINE_string(
    "input", None, "A .wav or .npy log-mel file, or a folder of them.", required=True
)
flags.DEFINE_string("output", None, "The .wav file, or the folder, to write.", required=True)
flags.DEFINE_enum("model", None, ["student", "teacher"], "Which model; default: the workdir's own.")
flags.DEFINE_integer("speaker", 0, "Speaker id for multi-speaker models.")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_integer(
    "chunk_frames", None, "Mel frames per synthesized piece (bounds memory); default: auto."
)
flags.DEFINE_integer(
    "step",
    None,
    "Checkpoint step of the --workdir's own model; default: the latest. --model=teacher on a "
    "student's workdir uses its teacher's latest step and refuses --step: to choose the "
    "teacher's step, pass the teacher's workdir.",
)
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    from pwavenet.jobs import synthesize

    result = synthesize.vocode_files(
        FLAGS.workdir,
        FLAGS.input,
        FLAGS.output,
        model=FLAGS.model,
        speaker=FLAGS.speaker,
        seed=FLAGS.seed,
        chunk_frames=FLAGS.chunk_frames,
        step=FLAGS.step,
        progress=FLAGS.progress,
    )
    print(synthesize.summary_line(result))


if __name__ == "__main__":
    common.run(main)
