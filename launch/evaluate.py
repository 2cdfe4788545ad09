"""Evaluates a training workdir's checkpoint: NLL, generated audio, spectrograms, speed.

python -m launch.evaluate --workdir=runs/teacher [--step=N] [--num_utterances=4]
"""

import json

from absl import app
from absl import flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training job's workdir.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.DEFINE_string("output_dir", None, "Default: <workdir>/eval_<step>.")
flags.DEFINE_integer("num_utterances", None, "Validation utterances to generate.")
flags.DEFINE_float("max_seconds", None, "Length cap of each generated utterance.")
flags.DEFINE_list("speed_batch_sizes", ["1"], "Batch sizes for the generation-speed rows.")
flags.DEFINE_float("speed_seconds", 0.5, "Seconds of audio per generation-speed row.")
flags.DEFINE_string("split", None, "Split the quality table scores; default: the config's eval split.")
flags.DEFINE_integer(
    "quality_utterances", None, "Utterances the quality table scores (0: the whole split)."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.prepare_process()
    from pwavenet import evaluate

    report = evaluate.evaluate(
        FLAGS.workdir,
        step=FLAGS.step,
        output_dir=FLAGS.output_dir,
        num_utterances=FLAGS.num_utterances,
        max_seconds=FLAGS.max_seconds,
        speed_batch_sizes=tuple(int(b) for b in FLAGS.speed_batch_sizes),
        speed_seconds=FLAGS.speed_seconds,
        split=FLAGS.split,
        quality_utterances=FLAGS.quality_utterances,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
