"""Trains the WaveNet teacher; resumes automatically from the workdir's latest checkpoint.

python -m launch.train_teacher --config=configs/teacher.py:espeak --workdir=runs/teacher
"""

from absl import flags

from . import common

FLAGS = flags.FLAGS
common.define_config_file(
    "config", "configs/teacher.py:espeak", "Teacher config file[:variant].", kind="teacher"
)
flags.DEFINE_string(
    "workdir", None, "Checkpoints, config.json and TensorBoard summaries.", required=True
)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    from pwavenet.jobs import teacher as teacher_job

    teacher_job.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    common.run(main)
