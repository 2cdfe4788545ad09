"""Preemption: a real training process, the teacher's or the student's, gets SIGTERM or SIGKILL
mid-run.

SIGTERM must save the current step and exit cleanly (code 0); SIGKILL at any moment must leave
the latest complete checkpoint restorable, and a rerun resumes from it.
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
# Steps of the runs: SIGKILL by step 3 or 4, SIGTERM a step later and saved within two steps
# of it leave steps for the last rerun to train.
STEPS = 10
# Each job's entry point and tiny config; the student distills the teacher's reference run.
JOBS = {
    "teacher": ("launch.train_teacher", "configs/teacher.py:tiny"),
    "student": ("launch.distill", "configs/student.py:tiny"),
}


def _start_process(kind, workdir, data_dir, log_path, **overrides):
    flags = {
        "train.decay_steps": STEPS,  # the same schedule in the runs that set another train.steps
        "train.steps": 100_000,
        "train.log_every": 1,
        "train.eval_every": 100_000,
        "train.audio_every": 100_000,
        "train.checkpoint_every": 100_000,
        "data.data_dir": data_dir,
    }
    flags.update(overrides)
    module, config = JOBS[kind]
    cmd = [
        sys.executable,
        "-m",
        module,
        f"--config={config}",
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
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout} s:\n{open(log_path).read()[-3000:]}")


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    return espeak_small_data_dir


def _restore_all(workdir):
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
        step = mngr.latest_step()
        return step, mngr.restore(step, args=ocp.args.StandardRestore())


def _series(start, kind, tmp_path, data_dir, *, sigkill, **extra):
    """The uninterrupted run of `kind`, then the interrupted one and its reruns, with the
    checks on the way. Returns both workdirs."""
    steps = STEPS
    overrides = {"train.steps": steps, "train.checkpoint_every": 1, **extra}
    reference = str(tmp_path / f"{kind}_reference")
    proc, log = start(kind, reference, data_dir, tmp_path / f"{kind}_reference.txt", **overrides)
    assert proc.wait(timeout=300) == 0, open(tmp_path / f"{kind}_reference.txt").read()[-3000:]
    log.close()

    workdir = str(tmp_path / f"{kind}_interrupted")
    killed_at = 0
    if sigkill:
        # 1. SIGKILL at a random step, possibly in the middle of an asynchronous save.
        rng = np.random.default_rng(0)
        proc, log = start(kind, workdir, data_dir, tmp_path / f"{kind}1.txt", **overrides)
        _wait_for_step(proc, tmp_path / f"{kind}1.txt", int(rng.integers(2, 4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
        with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
            killed_at, saved = mngr.latest_step(), mngr.all_steps()
        assert killed_at is not None and killed_at < steps
        # Only finalized steps count: an interrupted save stays a temporary directory.
        assert all(os.path.isdir(os.path.join(workdir, "checkpoints", str(s))) for s in saved)

    # 2. A run with no last step of its own (train.steps far away), so that SIGTERM lands
    # while it trains: it saves the step it is at and exits with code 0. The process is
    # paused while the signal is sent, so the step it saves is known to within the step in
    # flight.
    log_path = tmp_path / f"{kind}2.txt"
    proc, log = start(kind, workdir, data_dir, log_path, **{**overrides, "train.steps": 100_000})
    _wait_for_step(proc, log_path, killed_at + 1)
    proc.send_signal(signal.SIGSTOP)
    signalled_after = _wait_for_step(proc, log_path, killed_at + 1)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    code = proc.wait(timeout=60)
    output = open(log_path).read()
    log.close()
    assert code == 0, output[-3000:]
    if sigkill:
        assert f"Resumed from {workdir} at step {killed_at}" in output
    saved = re.search(r"Preempted: saved step (\d+)", output)
    assert saved, output[-3000:]
    termed_at = int(saved.group(1))
    # A step after the last one logged before the signal (the next, or the one after it if
    # that was already under way), and the one the checkpoint holds.
    assert signalled_after < termed_at <= signalled_after + 2, output[-3000:]
    assert termed_at < steps
    assert _restore_all(workdir)[0] == termed_at

    # 3. Rerun to the end.
    proc, log = start(kind, workdir, data_dir, tmp_path / f"{kind}3.txt", **overrides)
    assert proc.wait(timeout=300) == 0, open(tmp_path / f"{kind}3.txt").read()[-3000:]
    log.close()
    return reference, workdir


def _runs(job, tmp_path, data_dir):
    """The teacher's series (SIGKILL, then SIGTERM), then the student's (SIGTERM), distilling
    the teacher's reference run; in a background.Background. Returns {kind: workdirs}."""

    def start(*args, **flags):
        proc, log = _start_process(*args, **flags)
        job.procs.append(proc)
        return proc, log

    teacher = _series(start, "teacher", tmp_path, data_dir, sigkill=True)
    student = _series(
        start, "student", tmp_path, data_dir, sigkill=False, teacher_workdir=teacher[0]
    )
    return {"teacher": teacher, "student": student}


def start_early(tmp_path_factory, data_dir):
    return background.Background(_runs, tmp_path_factory.mktemp("preemption"), data_dir)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, data_dir):
    """(The runs are started early in the session: tests/background.py.)"""
    tmp_path = tmp_path_factory.mktemp("preemption")
    return background.started(request, "test_preemption.py", _runs, tmp_path, data_dir).result()


def _assert_same_end(reference, workdir):
    step_a, state_a = _restore_all(reference)
    step_b, state_b = _restore_all(workdir)
    assert step_a == step_b == STEPS
    for key in ("params", "ema_params", "opt_state", "rng"):
        jax.tree.map(np.testing.assert_array_equal, state_b[key], state_a[key])


@pytest.mark.slow
def test_killed_and_resumed_teacher_runs_end_exactly_where_an_uninterrupted_run_does(runs):
    """SIGKILL and SIGTERM at steps while the teacher trains, each followed by a rerun of the
    same command, give bit-for-bit the state of a run that was never interrupted: the
    checkpoint holds the whole train state, and the data stream restarts at the restored
    step's batch."""
    _assert_same_end(*runs["teacher"])


@pytest.mark.slow
def test_a_distillation_stopped_by_sigterm_ends_exactly_where_an_uninterrupted_one_does(runs):
    """The same for `launch.distill`: SIGTERM while the student trains saves the step, and the
    rerun ends bit for bit where an uninterrupted distillation does."""
    _assert_same_end(*runs["student"])
