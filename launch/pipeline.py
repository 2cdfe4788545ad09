"""The whole vocoder pipeline on one corpus (by default the embedded espeak-ng corpus):
build the data set, train the WaveNet teacher, evaluate it, and write a report.

  python -m launch.pipeline --workdir=runs/espeak

Each stage resumes: rerunning continues training from the latest checkpoint and re-evaluates.
Any teacher config field can be overridden, e.g. --teacher_config.train.steps=500.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "teacher_config",
    "configs/teacher.py:espeak",
    "Teacher config file[:variant].",
    lock_config=True,
)
flags.DEFINE_string("workdir", "runs/espeak", "Root of the run: teacher/ and report.md.")
flags.DEFINE_list("speed_batch_sizes", ["1", "16"], "Batch sizes for generation speed.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.prepare_process()
    from pwavenet import evaluate
    from pwavenet import report
    from pwavenet import teacher

    teacher_dir = os.path.join(FLAGS.workdir, "teacher")
    logging.info("Stage 1/2: training the teacher in %s", teacher_dir)
    teacher.train_and_evaluate(FLAGS.teacher_config, teacher_dir)
    logging.info("Stage 2/2: evaluating the teacher")
    teacher_report = evaluate.evaluate(
        teacher_dir, speed_batch_sizes=tuple(int(b) for b in FLAGS.speed_batch_sizes)
    )
    path = report.write_markdown(FLAGS.workdir, {"teacher": teacher_report})
    print(f"Report: {path}")


if __name__ == "__main__":
    app.run(main)
