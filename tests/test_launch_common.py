"""The entry points' shared process set-up (launch/common.py), in fresh processes: the CPU
backend's device count is set before JAX starts a backend, so it cannot be changed here."""

import os
import subprocess
import sys

import pytest

from launch import common

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


# ------------------------------------------------------------------ XLA:CPU vector width

AVX512_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
AVX2_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def test_avx512_is_read_from_the_cpuinfo_flags_line(tmp_path):
    (tmp_path / "avx512").write_text(AVX512_CPUINFO)
    (tmp_path / "avx2").write_text(AVX2_CPUINFO)
    # "avx512f" elsewhere than the flags line (a model name) does not count.
    (tmp_path / "named").write_text("model name\t: avx512f\n" + AVX2_CPUINFO)
    assert common.has_avx512(str(tmp_path / "avx512"))
    assert not common.has_avx512(str(tmp_path / "avx2"))
    assert not common.has_avx512(str(tmp_path / "named"))
    assert not common.has_avx512(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("xla_flags", "avx512", "expected"),
    [
        ("", True, "--xla_cpu_prefer_vector_width=512"),
        ("--xla_dump_to=d", True, "--xla_dump_to=d --xla_cpu_prefer_vector_width=512"),
        ("", False, ""),
        ("--xla_dump_to=d", False, "--xla_dump_to=d"),
        ("--xla_cpu_prefer_vector_width=256", True, "--xla_cpu_prefer_vector_width=256"),
    ],
)
def test_xla_flags_ask_for_512_bit_vectors_only_on_avx512_unless_set(xla_flags, avx512, expected):
    assert common.xla_flags_for_cpu(xla_flags, avx512) == expected


VECTOR_PROBE = """
import sys
from launch import common
common.prefer_wide_vectors(sys.argv[1])
import jax
print(jax.jit(lambda x: x * 2)(1.0))
"""


@pytest.mark.parametrize(
    ("cpuinfo", "given", "expected"),
    [
        (AVX512_CPUINFO, "", ["512"]),
        (AVX512_CPUINFO, "--xla_cpu_prefer_vector_width=256", []),
        (AVX2_CPUINFO, "", []),
    ],
)
def test_xla_compiles_with_the_vector_width_chosen_for_the_cpu(tmp_path, cpuinfo, given, expected):
    """The choice reaches XLA: its own record of the options it compiled with, written next to
    each dumped module, on a CPU described by a made-up /proc/cpuinfo (either kind, whatever
    this machine is)."""
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    dump = tmp_path / "dump"
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump} {given}".strip(), JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, "-c", VECTOR_PROBE, str(tmp_path / "cpuinfo")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (options,) = [p for p in dump.iterdir() if p.name.endswith("debug_options")]
    widths = [
        line.split(":")[1].strip()
        for line in options.read_text().splitlines()
        if line.startswith("xla_cpu_prefer_vector_width:")
    ]
    # XLA writes only the options that differ from its defaults, and 256 is the default.
    assert widths == expected


# ------------------------------------------------------------------ command-line errors

# Reports which heavy modules the entry point imported, on stdout, however it exits: TensorFlow,
# JAX, and modules of the library other than its config schema (which imports neither).
ENTRY = """
import runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
LIGHT = ("pwavenet", "pwavenet.config_schema")
try:
    runpy.run_module(module, run_name="__main__")
finally:
    print("imported", sorted(
        m for m in sys.modules
        if m in ("tensorflow", "jax") or (m.startswith("pwavenet") and m not in LIGHT)
    ))
"""


def _entry_point(module, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", ENTRY, module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("launch.train_teacher", [], "flag --workdir=None: Flag --workdir must have a value"),
        ("launch.train_teacher", ["--workdir=w", "extra"], "unexpected arguments ['extra']"),
        ("launch.train_teacher", ["--workdir=w", "--bogus"], "Unknown command line flag 'bogus'"),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/nope.py"],
            "--config=configs/nope.py: no such config file 'configs/nope.py'",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/teacher.py:bogus"],
            "--config=configs/teacher.py:bogus: Unknown variant 'bogus' of configs/teacher.py; "
            "use one of tiny",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config.train.stepz=3"],
            "--config.train.stepz: the config has no field 'stepz'; did you mean 'steps'?",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config.train.steps=abc"],
            "flag --config.train.steps=abc: invalid literal for int()",
        ),
        (
            "launch.flows",
            ["--workdir=w", "--cpu_devices=-2"],
            "flag --cpu_devices=-2: use a count >= 1, or 0 for one per core",
        ),
        (
            "launch.flows",
            ["--workdir=w", "--config=configs/flows.py:U9"],
            "Unknown variant 'U9' of configs/flows.py; use one of moons",
        ),
        (
            "launch.distill",
            ["--workdir=w", "--config=configs/student.py:tiny"],
            "--config.teacher_workdir is empty; pass the workdir of a trained teacher",
        ),
        (
            "launch.distill",
            ["--workdir=w", "--config=configs/student.py:tiny", "--config.teacher_workdir=nope"],
            "--config.teacher_workdir=nope: no such directory; pass the workdir of a trained",
        ),
        (
            "launch.evaluate",
            ["--workdir=nope"],
            "--workdir=nope: no such directory; pass the workdir of a trained teacher",
        ),
        (
            "launch.evaluate",
            ["--workdir=w", "--speed_batch_sizes=1,0"],
            "flag --speed_batch_sizes=['1', '0']: use positive integers",
        ),
        (
            "launch.pipeline",
            ["--student_config.distill.klx=1"],
            "--student_config.distill.klx: the config has no field 'klx'; did you mean 'kl'?",
        ),
        (
            "launch.evaluate",
            ["--workdir=w", "--max_seconds=-1"],
            "flag --max_seconds=-1.0: use a number of seconds > 0",
        ),
        (
            "launch.synthesize",
            ["--workdir=w", "--input=i", "--output=o", "--chunk_frames=0"],
            "flag --chunk_frames=0: 0 is not a positive integer",
        ),
        # Config values outside their range (pwavenet.config_schema).
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/teacher.py:tiny", "--config.train.steps=-5"],
            "error: --config.train.steps=-5: expected an integer >= 1 (training steps).",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/teacher.py:tiny", "--config.train.learning_rate=-1"],
            "error: --config.train.learning_rate=-1.0: expected a finite number > 0.0.",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/teacher.py:tiny", "--config.mel.sample_rate=0"],
            "error: --config.mel.sample_rate=0: expected an integer >= 1 (Hz).",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/teacher.py:tiny", "--config.mel.hop_length=32"],
            "error: --config.model.upsample_strides=(8, 8): their product is 64; expected "
            "mel.hop_length = 32.",
        ),
        (
            "launch.train_teacher",
            ["--workdir=w", "--config=configs/student.py:tiny"],
            "error: --config: a student config (configs/student.py), but this job takes a "
            "teacher config; pass --config=configs/teacher.py[:variant].",
        ),
        (
            "launch.distill",
            ["--workdir=w", "--config=configs/student.py:tiny", "--config.distill.num_draws=0"],
            "error: --config.distill.num_draws=0: expected an integer >= 1.",
        ),
        (
            "launch.flows",
            ["--workdir=w", "--config=configs/flows.py:tiny", "--config.train.ema_decay=1.0"],
            "error: --config.train.ema_decay=1.0: expected a finite number in [0.0, 1.0).",
        ),
        (
            "launch.pipeline",
            ["--teacher_config.mel.fmax=12000"],
            "error: --teacher_config.mel.fmax=12000.0: expected <= mel.sample_rate / 2 = "
            "11025.0 (Nyquist).",
        ),
        (
            "launch.pipeline",
            ["--student_config.mel.fmax=7000"],
            "error: --student_config.mel.fmax=7000.0: expected the teacher's "
            "--teacher_config.mel.fmax=8000.0 (the student is distilled on its mels).",
        ),
        (
            "launch.pipeline",
            ["--student_config.data.crop_samples=1000"],
            "error: --student_config.data.crop_samples=1000: expected a multiple of "
            "mel.hop_length = 256 (e.g. 1024).",
        ),
    ],
)
def test_a_command_line_error_is_one_line_and_exit_status_2_before_heavy_imports(
    module, args, expected
):
    run = _entry_point(module, *args)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.splitlines() == [run.stderr.rstrip("\n")]  # one line
    assert run.stderr.startswith("error: ") and expected in run.stderr
    assert "Traceback" not in run.stderr
    # Refused before TensorFlow, JAX or the library (its config schema aside) were imported.
    assert run.stdout.strip() == "imported []"


def test_a_library_error_about_the_jobs_input_ends_in_one_error_line(tmp_path):
    """A ValueError the library raises for the job's inputs (here the flows job's layer list,
    valid name by name but with a sigmoid before other layers, which the library refuses) ends
    the process with its message as the last stderr line and status 2, no traceback; `-v 1`
    shows the traceback."""
    args = ["launch.flows", f"--workdir={tmp_path}", "--config=configs/flows.py:tiny"]
    run = _entry_point(*args, "--config.flow.layers=sigmoid,affine")
    assert run.returncode == 2, run.stderr[-3000:]
    last = run.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: ") and "put sigmoid last" in last, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    verbose = _entry_point(*args, "--config.flow.layers=sigmoid,affine", "-v", "1")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
