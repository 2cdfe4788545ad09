"""Runs the speed benchmarks and prints one table (see benchmarks/speed.py).

python -m launch.benchmark [--scenario=teacher_train --scenario=...] [--json=OUT.json]
"""

import dataclasses
import json

from absl import flags

from . import common

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "scenario", None, "Scenario(s) to run; default: all (on a CPU, all but paper)."
)
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
# On a CPU, one device per core: batched generation spreads its streams over them (the other
# scenarios run on one device, which uses every core's thread as before).
FLAGS.set_default("cpu_devices", 0)


def main(argv):
    del argv  # common.parse_flags refuses stray arguments
    common.prepare_process()
    import jax

    from benchmarks import speed as benchmark

    rows = benchmark.run(FLAGS.scenario)
    print(
        f"device: {jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()})"
    )
    print(benchmark.format_table(rows))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(
                [dict(dataclasses.asdict(r), matmul_ratio=r.matmul_ratio) for r in rows],
                f,
                indent=2,
            )


if __name__ == "__main__":
    common.run(main)
