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

from pwavenet import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(workdir, data_dir, log_path, **overrides):
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
    pattern = re.compile(rf"step (\d+)/")
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
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    proc, log = _start(workdir, data_dir, tmp_path / "log.txt")
    seen = _wait_for_step(proc, tmp_path / "log.txt", 5)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    elapsed = time.time() - t0
    log.close()
    output = open(tmp_path / "log.txt").read()
    assert code == 0, output[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f} s to stop"
    assert "Preempted: saved step" in output
    # No periodic checkpoint was due (checkpoint_every=100000): the saved step is where the
    # signal arrived, at or after the last step the log showed.
    params, step = train.restore_params(workdir, ema=False)
    assert step >= seen
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


@pytest.mark.slow
def test_sigkill_leaves_the_latest_complete_checkpoint_and_a_rerun_resumes(tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    proc, log = _start(workdir, data_dir, tmp_path / "log.txt", **{"train.checkpoint_every": 1})
    _wait_for_step(proc, tmp_path / "log.txt", 6)
    proc.send_signal(signal.SIGKILL)  # possibly in the middle of an asynchronous save
    proc.wait(timeout=30)
    log.close()
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
        latest = mngr.latest_step()
        steps = mngr.all_steps()
    assert latest is not None and latest >= 3
    # Only finalized steps count: an interrupted save stays a temporary directory.
    assert all(os.path.isdir(os.path.join(workdir, "checkpoints", str(s))) for s in steps)
    params, step = train.restore_params(workdir)
    assert step == latest
    rerun, log = _start(workdir, data_dir, tmp_path / "log2.txt", **{"train.steps": latest + 2})
    assert rerun.wait(timeout=240) == 0, open(tmp_path / "log2.txt").read()[-3000:]
    log.close()
    output = open(tmp_path / "log2.txt").read()
    assert f"Resumed from {workdir} at step {latest}" in output
    assert train.restore_params(workdir)[1] == latest + 2
