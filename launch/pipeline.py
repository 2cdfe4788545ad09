"""The whole vocoder pipeline on one corpus (by default the embedded espeak-ng corpus):
build the data set, train the WaveNet teacher, distill it into the Parallel WaveNet student,
evaluate both, and write a report.

  python -m launch.pipeline --workdir=runs/espeak

Writes <workdir>/teacher, <workdir>/student (checkpoints, TensorBoard, eval_<step>/ with wavs,
spectrograms and report.json) and <workdir>/report.md. Each stage resumes: rerunning continues
training from the latest checkpoints and re-evaluates. Any config field can be overridden,
e.g. --teacher_config.train.steps=500 --student_config.train.steps=300.
"""

import os

from absl import flags
from absl import logging

from . import common

FLAGS = flags.FLAGS
common.define_config_file(
    "teacher_config",
    "configs/teacher.py:espeak",
    "Teacher config file[:variant].",
    kind="teacher",
)
common.define_config_file(
    "student_config",
    "configs/student.py:espeak",
    "Student config file[:variant]; its teacher_workdir is set to <workdir>/teacher.",
    kind="student",
)
flags.DEFINE_string("workdir", "runs/espeak", "Root of the run: teacher/, student/, report.md.")
flags.DEFINE_list("speed_batch_sizes", ["1", "16"], "Batch sizes for teacher generation speed.")


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    from pwavenet import config_schema  # imports neither TensorFlow nor JAX

    # The student stage would find these only after the teacher has trained.
    mismatches = config_schema.pair_problems(
        FLAGS.teacher_config, FLAGS.student_config, "--teacher_config.", "--student_config."
    )
    if mismatches:
        common.fail(mismatches[0])
    common.prepare_process()
    from pwavenet.jobs import student as student_job
    from pwavenet.jobs import evaluate
    from pwavenet.evaluation import report
    from pwavenet.jobs import teacher as teacher_job
    from pwavenet import training

    # One pipeline per root: its stages lock teacher/ and student/ while they train, and this
    # lock keeps a second pipeline from evaluating or reporting beside the first.
    with training.workdir_lock(FLAGS.workdir):
        teacher_dir = os.path.join(FLAGS.workdir, "teacher")
        student_dir = os.path.join(FLAGS.workdir, "student")
        logging.info("Stage 1/4: training the teacher in %s", teacher_dir)
        teacher_job.train_and_evaluate(FLAGS.teacher_config, teacher_dir)
        logging.info("Stage 2/4: evaluating the teacher")
        teacher_report = evaluate.evaluate(
            teacher_dir, speed_batch_sizes=tuple(int(b) for b in FLAGS.speed_batch_sizes)
        )
        logging.info("Stage 3/4: distilling the student in %s", student_dir)
        student_config = FLAGS.student_config
        student_config.teacher_workdir = teacher_dir
        student_job.train_and_evaluate(student_config, student_dir)
        logging.info("Stage 4/4: evaluating the student against the teacher")
        student_report = evaluate.evaluate(student_dir)
        path = report.write_markdown(
            FLAGS.workdir, {"teacher": teacher_report, "student": student_report}
        )
        print(f"Report: {path}")


if __name__ == "__main__":
    common.run(main)
