"""Evaluates a training workdir's checkpoint: NLL, generated audio, spectrograms, speed.

python -m launch.evaluate --workdir=runs/teacher [--step=N] [--num_utterances=4]
python -m launch.evaluate --workdir=runs/student --speed_batch_sizes=1,16 --speed_seconds=2
"""

import json

from absl import flags

from . import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training job's workdir.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.", lower_bound=0)
flags.DEFINE_string("output_dir", None, "Default: <workdir>/eval_<step>.")
flags.DEFINE_integer(
    "num_utterances", None, "Validation utterances to generate.", lower_bound=1
)
flags.DEFINE_float("max_seconds", None, "Length cap of each generated utterance.")
flags.DEFINE_list(
    "speed_batch_sizes",
    None,
    "Batch sizes of the generation-speed rows: the teacher's cached generation (default: 1); "
    "on a student's workdir, the student's synthesis and its teacher's generation at each "
    "(report.json's generation_speed; default: none, only the speed on the listening set).",
)
flags.register_validator(
    "speed_batch_sizes",
    lambda sizes: sizes is None or all(b.isdigit() and int(b) > 0 for b in sizes),
    "use positive integers, e.g. --speed_batch_sizes=1,16.",
)
flags.DEFINE_float(
    "speed_seconds", 0.5, "Seconds of audio per utterance in each generation-speed row."
)
flags.DEFINE_string(
    "split", None, "Split the quality table scores; default: the config's eval split."
)
flags.DEFINE_integer(
    "quality_utterances",
    None,
    "Utterances the quality table scores (0: the whole split).",
    lower_bound=0,
)
for _name in ("max_seconds", "speed_seconds"):
    flags.register_validator(
        _name,
        lambda seconds: seconds is None or (0 < seconds < float("inf")),
        "use a number of seconds > 0.",
    )


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.require_dir(
        "--workdir",
        FLAGS.workdir,
        "pass the workdir of a trained teacher (python -m launch.train_teacher) or student "
        "(python -m launch.distill).",
    )
    common.prepare_process()
    from pwavenet.jobs import evaluate

    sizes = FLAGS.speed_batch_sizes
    report = evaluate.evaluate(
        FLAGS.workdir,
        step=FLAGS.step,
        output_dir=FLAGS.output_dir,
        num_utterances=FLAGS.num_utterances,
        max_seconds=FLAGS.max_seconds,
        speed_batch_sizes=None if sizes is None else tuple(int(b) for b in sizes),
        speed_seconds=FLAGS.speed_seconds,
        split=FLAGS.split,
        quality_utterances=FLAGS.quality_utterances,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    common.run(main)
