"""Vocodes a file or a folder: mel spectrograms (.npy) or wav files' mels -> wav files.

python -m launch.synthesize --workdir=runs/espeak/student --input=speech.wav --output=out.wav
python -m launch.synthesize --workdir=runs/espeak/student --input=mels/ --output=wavs/
python -m launch.synthesize --workdir=runs/espeak/student --input=mel.npy --output=out.wav \
    --model=teacher
python -m launch.synthesize --workdir=runs/pwg_student --input=tts_mels/ --output=wavs/ \
    --input_stats=dump/train/stats.h5 --mel_layout=bands_first

A folder keeps its relative names (a/b.npy -> wavs/a/b.wav). Wavs at another rate or with
several channels are resampled and downmixed, with one notice. Shows a progress bar, then one
summary line: files, seconds of audio, synthesis seconds and the real-time factor (synthesis
time / audio duration, compilation excluded).

An output that cannot be written (a read-only folder, a parent that is a file) is refused in
one line before the model loads. A bad input file (NaN samples, an unreadable wav, an .npy of
the wrong shape or dtype) is named with what is wrong with it; in a folder, each bad file gets
one `skipped: <file>: <why>` line, the others are written, and the job ends with
`error: N of M input files could not be vocoded ...` and exit status 2.
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
flags.DEFINE_integer("speaker", 0, "Speaker id for multi-speaker models.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Noise seed.", lower_bound=0)
flags.DEFINE_integer(
    "chunk_frames",
    None,
    "Mel frames per synthesized piece (bounds memory); default: auto.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "step",
    None,
    "Checkpoint step of the --workdir's own model; default: the latest. --model=teacher on a "
    "student's workdir uses its teacher's latest step and refuses --step: to choose the "
    "teacher's step, pass the teacher's workdir.",
    lower_bound=0,
)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_enum(
    "mel_layout",
    None,
    ["frames_first", "bands_first"],
    "Axis order of .npy mels: (frames, n_mels) (the default) or (n_mels, frames) (HiFi-GAN's).",
)
flags.DEFINE_string(
    "input_stats",
    None,
    "The .npy mels are mean-variance normalized with these statistics (Parallel WaveGAN's "
    "stats.h5, ESPnet2's feats_stats.npz, an .npz of mean and scale, or a (2, n_mels) .npy): "
    "they are de-normalized first.",
)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    # Imports JAX but starts no backend: the input and output are checked before the process
    # is set up and the model loads, so a mistake there ends in one line at once.
    from pwavenet.jobs import synthesize

    synthesize.plan(FLAGS.input, FLAGS.output)
    synthesize.check_writable(FLAGS.output)
    common.prepare_process()
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
        mel_layout=FLAGS.mel_layout,
        input_stats=FLAGS.input_stats,
    )
    print(synthesize.summary_line(result))
    failures = synthesize.failure_line(result, FLAGS.output)
    if failures:
        common.fail(failures)


if __name__ == "__main__":
    common.run(main)
