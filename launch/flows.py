"""Fits a normalizing flow to 2-D data or an energy. See configs/flows.py for variants.

python -m launch.flows --config=configs/flows.py:moons --workdir=runs/flows_moons
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/flows.py", "Job config file[:variant].", lock_config=True
)
flags.DEFINE_string("workdir", None, "Where checkpoints, summaries and results go.", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.prepare_process()
    from pwavenet import fit_flows  # after the process is prepared

    results = fit_flows.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    logging.info("Wrote %s/results.json and %s/flows.png", FLAGS.workdir, FLAGS.workdir)
    print(results)


if __name__ == "__main__":
    app.run(main)
