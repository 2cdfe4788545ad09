"""Distills a trained WaveNet teacher into a Parallel WaveNet student; resumes automatically
from the workdir's latest checkpoint.

python -m launch.distill --config=configs/student.py:espeak --workdir=runs/student \
    --config.teacher_workdir=runs/teacher
"""

from absl import flags

from . import common

FLAGS = flags.FLAGS
common.define_config_file(
    "config", "configs/student.py:espeak", "Student config file[:variant].", kind="student"
)
flags.DEFINE_string(
    "workdir", None, "Checkpoints, config.json and TensorBoard summaries.", required=True
)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.require_dir(
        "--config.teacher_workdir",
        FLAGS.config.teacher_workdir,
        "pass the workdir of a trained teacher (python -m launch.train_teacher --workdir=DIR).",
    )
    common.prepare_process()
    from pwavenet.jobs import student as student_job

    student_job.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    common.run(main)
