"""Preemption: a real training process gets SIGTERM or SIGKILL mid-run.

SIGTERM must save the current step and exit cleanly (code 0) within seconds; SIGKILL at any
moment must leave the latest complete checkpoint restorable, and a rerun resumes from it.
"""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import background


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_process(workdir, data_dir, log_path, **overrides):
    flags = {
        "train.steps": 100_000,
        "train.log_every": 1,
        "train.eval_every": 100_000,
        "train.audio_every": 100_000,
        "train.checkpoint_every": 100_000,
        "data.data_dir": data_dir,
    }
    flags.update(overrides)
    cmd = [
        sys.executable,
        "-m",
        "launch.train_teacher",
        "--config=configs/teacher.py:tiny",
        f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in flags.items()],
    ]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device: batch 8 splits over it
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env), log


def _wait_for_step(proc, log_path, step, timeout=240):
    deadline = time.time() + timeout
    pattern = re.compile(r"step (\d+)/")
    while time.time() < deadline:
        with open(log_path) as f:
            steps = [int(m) for m in pattern.findall(f.read())]
        if steps and max(steps) >= step:
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{open(log_path).read()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout} s:\n{open(log_path).read()[-3000:]}")


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    return espeak_small_data_dir


def _restore_all(workdir):
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
        step = mngr.latest_step()
        return step, mngr.restore(step, args=ocp.args.StandardRestore())


STEPS = 6


def _runs(job, tmp_path, data_dir):
    """The uninterrupted run, then the interrupted one and its reruns, with the checks on the
    way; in a background.Background. Returns both workdirs."""

    def _start(*args, **flags):
        proc, log = _start_process(*args, **flags)
        job.procs.append(proc)
        return proc, log

    steps = STEPS
    overrides = {"train.steps": steps, "train.checkpoint_every": 1}
    reference = str(tmp_path / "reference")
    proc, log = _start(reference, data_dir, tmp_path / "reference.txt", **overrides)
    assert proc.wait(timeout=300) == 0, open(tmp_path / "reference.txt").read()[-3000:]
    log.close()

    rng = np.random.default_rng(0)
    workdir = str(tmp_path / "interrupted")
    # 1. SIGKILL at a random step, possibly in the middle of an asynchronous save.
    proc, log = _start(workdir, data_dir, tmp_path / "run1.txt", **overrides)
    _wait_for_step(proc, tmp_path / "run1.txt", int(rng.integers(2, 4)))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    log.close()
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
        killed_at, saved = mngr.latest_step(), mngr.all_steps()
    assert killed_at is not None and killed_at < steps
    # Only finalized steps count: an interrupted save stays a temporary directory.
    assert all(os.path.isdir(os.path.join(workdir, "checkpoints", str(s))) for s in saved)

    # 2. Rerun; SIGTERM at a later random step: it saves that step and exits with code 0.
    proc, log = _start(workdir, data_dir, tmp_path / "run2.txt", **overrides)
    _wait_for_step(proc, tmp_path / "run2.txt", killed_at + int(rng.integers(1, 3)))
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    output = open(tmp_path / "run2.txt").read()
    log.close()
    assert code == 0, output[-3000:]
    assert time.time() - t0 < 30
    assert f"Resumed from {workdir} at step {killed_at}" in output
    if "Preempted: saved step" in output:  # (unless the signal came after the last step)
        termed_at = int(re.search(r"Preempted: saved step (\d+)", output).group(1))
        assert _restore_all(workdir)[0] == termed_at

    # 3. Rerun to the end.
    proc, log = _start(workdir, data_dir, tmp_path / "run3.txt", **overrides)
    assert proc.wait(timeout=300) == 0, open(tmp_path / "run3.txt").read()[-3000:]
    log.close()

    return reference, workdir


def start_early(tmp_path_factory, data_dir):
    return background.Background(_runs, tmp_path_factory.mktemp("preemption"), data_dir)


@pytest.mark.slow
def test_killed_and_resumed_runs_end_exactly_where_an_uninterrupted_run_does(
    request, tmp_path, data_dir
):
    """SIGKILL and SIGTERM at random steps (fixed seed), each followed by a rerun of the same
    command, give bit-for-bit the state of a run that was never interrupted: the checkpoint
    holds the whole train state, and the data stream restarts at the restored step's batch.
    (The runs are started early in the session: tests/background.py.)"""
    job = background.started(request, "test_preemption.py", _runs, tmp_path, data_dir)
    reference, workdir = job.result()
    steps = STEPS
    step_a, state_a = _restore_all(reference)
    step_b, state_b = _restore_all(workdir)
    assert step_a == step_b == steps
    for key in ("params", "ema_params", "opt_state", "rng"):
        jax.tree.map(np.testing.assert_array_equal, state_b[key], state_a[key])
