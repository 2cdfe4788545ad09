"""Distills a trained WaveNet teacher into a Parallel WaveNet student; resumes automatically
from the workdir's latest checkpoint.

python -m launch.distill --config=configs/student.py:espeak --workdir=runs/student \
    --config.teacher_workdir=runs/teacher
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/student.py:espeak", "Student config file[:variant].", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Checkpoints, config.json and TensorBoard summaries.", required=True
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.prepare_process()
    from pwavenet import distill

    distill.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
