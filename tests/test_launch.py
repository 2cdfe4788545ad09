"""The entry points' shared process set-up (launch/common.py), in fresh processes: the CPU
backend's device count is set before JAX starts a backend, so it cannot be changed here."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import sys
from absl import flags
from launch import common
flags.FLAGS(["probe", *sys.argv[1:]])
common.prepare_process()
import jax
print("devices", jax.local_device_count())
"""


def _devices(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")  # not the tests' 8 devices
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [((), 1), (("--cpu_devices=3",), 3), (("--cpu_devices=0",), len(os.sched_getaffinity(0)))],
)
def test_cpu_devices_sets_the_cpu_backends_device_count(args, expected):
    run = _devices(*args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"devices {expected}" in run.stdout


def test_a_negative_cpu_device_count_is_refused_with_the_fix():
    run = _devices("--cpu_devices=-2")
    assert run.returncode != 0
    assert "--cpu_devices=-2: use a count >= 1, or 0 for one per core" in run.stderr


def _has_avx512() -> bool:
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and "avx512f" in line.split() for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads /proc/cpuinfo")
@pytest.mark.parametrize("given", ["", "--xla_cpu_prefer_vector_width=256"])
def test_xla_compiles_for_512_bit_vectors_on_avx512_unless_told_otherwise(tmp_path, given):
    # XLA's own record of the options it compiled with, written next to each dumped module.
    dump = tmp_path / "dump"
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump} {given}".strip(), JAX_PLATFORMS="cpu")
    probe = PROBE + "print(jax.jit(lambda x: x * 2)(1.0))\n"
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (options,) = [p for p in dump.iterdir() if p.name.endswith("debug_options")]
    widths = [
        line.split(":")[1].strip()
        for line in options.read_text().splitlines()
        if line.startswith("xla_cpu_prefer_vector_width:")
    ]
    # XLA writes only the options that differ from its defaults, and 256 is the default: a
    # width given in XLA_FLAGS is kept, and without one AVX-512 gets 512.
    assert widths == ([] if given or not _has_avx512() else ["512"])
