"""Fits a normalizing flow to 2-D data or an energy. See configs/flows.py for variants.

python -m launch.flows --config=configs/flows.py:moons --workdir=runs/flows_moons
"""

from absl import flags
from absl import logging

from . import common

FLAGS = flags.FLAGS
common.define_config_file(
    "config", "configs/flows.py", "Job config file[:variant].", kind="flows"
)
flags.DEFINE_string("workdir", None, "Where checkpoints, summaries and results go.", required=True)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    from pwavenet.flows import fitting  # after the process is prepared

    results = fitting.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    logging.info("Wrote %s/results.json and %s/flows.png", FLAGS.workdir, FLAGS.workdir)
    print(results)


if __name__ == "__main__":
    common.run(main)
