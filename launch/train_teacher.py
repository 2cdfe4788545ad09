"""Trains the WaveNet teacher; resumes automatically from the workdir's latest checkpoint.

python -m launch.train_teacher --config=configs/teacher.py:espeak --workdir=runs/teacher
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/teacher.py:espeak", "Teacher config file[:variant].", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Checkpoints, config.json and TensorBoard summaries.", required=True
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.prepare_process()
    from pwavenet import teacher

    teacher.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
