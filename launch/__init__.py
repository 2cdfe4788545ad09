"""The jobs' absl entry points: `python -m launch.<job>` in a checkout, and, installed as
`pwavenet.cli`, the `pwavenet <job>` command (`main`), with the same flags and errors.

    pwavenet train_teacher --config=teacher:tiny --workdir=runs/teacher
    pwavenet distill --config=student:tiny --workdir=runs/student --config.teacher_workdir=...

`--config` takes a config file, or the name of a shipped one (teacher, student, pitch, flows), each
with its `:variant`. Importing this package loads no job (each defines its own flags).
"""

import runpy
import sys

# The jobs the command runs (launch.benchmark needs the checkout's benchmarks/ folder).
JOBS = (
    "train_teacher",
    "distill",
    "evaluate",
    "synthesize",
    "export",
    "pipeline",
    "fit_pitch",
    "flows",
)

_USAGE = (
    "usage: pwavenet <job> [--flags]; jobs: "
    + ", ".join(JOBS)
    + ". `pwavenet <job> --helpshort` lists a job's flags."
)


def main() -> None:
    """`pwavenet <job> [--flags]`: runs the job's entry point as `python -m launch.<job>`
    would (a hyphen may replace the underscore: train-teacher)."""
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(_USAGE)
        sys.exit(0 if args else 2)
    job = args[0].replace("-", "_")
    if job not in JOBS:
        print(f"error: unknown job {args[0]!r}; {_USAGE.removeprefix('usage: ')}", file=sys.stderr)
        sys.exit(2)
    # As `python -m`: the job's module runs as __main__, its flags its key flags (--helpshort).
    sys.argv = [job, *args[1:]]
    runpy.run_module(f"{__name__}.{job}", run_name="__main__", alter_sys=True)
