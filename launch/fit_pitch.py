"""Fits the learned pitch predictor to a corpus and measures it against harvest.

python -m launch.fit_pitch --config=configs/pitch.py:espeak --workdir=runs/espeak/pitch
"""

from absl import flags
from absl import logging

from . import common

FLAGS = flags.FLAGS
common.define_config_file("config", "configs/pitch.py", "Job config file[:variant].", "pitch")
flags.DEFINE_string("workdir", None, "Where the labels, parameters and report go.", required=True)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    from pwavenet.jobs import pitch  # after the process is prepared

    pitch.fit_and_evaluate(FLAGS.config, FLAGS.workdir)
    logging.info("Wrote %s/report.md", FLAGS.workdir)


if __name__ == "__main__":
    common.run(main)
