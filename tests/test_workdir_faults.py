"""Faults a long run meets in its workdir: a second job on it, a lock left by a killed job,
readers beside training, damaged checkpoints, and saves that fail (no space, read-only).

The jobs here are the real ones on the tiny teacher (trained once for the module, copied by
each test that changes it); the command-line checks run `python -m launch.<job>` and read
what a user reads: the exit status and the one `error:` line.
"""

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from configs import teacher as teacher_config
from pwavenet import training
from pwavenet import vocoder as vocoder_lib
from pwavenet.jobs import teacher as teacher_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
    config = teacher_config.get_config("tiny")
    config.data.data_dir = data_dir
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    return espeak_small_data_dir


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """The tiny teacher trained for its 6 steps (checkpoints 3 and 6), and each checkpoint's
    EMA and raw params read before anything was damaged."""
    workdir = str(tmp_path_factory.mktemp("faults") / "run")
    teacher_job.train_and_evaluate(_config(data_dir), workdir)
    params = {
        (step, ema): training.restore_params(workdir, step, ema=ema)[0]
        for step in (3, 6)
        for ema in (True, False)
    }
    return workdir, params


def _copy(trained, tmp_path, name="run"):
    workdir = str(tmp_path / name)
    shutil.copytree(trained[0], workdir)
    return workdir


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _launch(module, *args, env=None, timeout=240):
    cmd = [sys.executable, "-m", module, *args]
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("XLA_FLAGS", None)  # one CPU device: quick to start
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=timeout
    )


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _files(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


# ----------------------------------------------------------------------- one job per workdir


def test_a_second_training_job_on_a_workdir_is_refused_naming_the_holder(data_dir, tmp_path):
    """While a job holds the workdir (this test process: a live pid on this host), a training
    job started there exits 2 with one line naming the holder's host, pid, start time and the
    lock's path, and writes nothing into the workdir."""
    workdir = str(tmp_path / "busy")
    with training.workdir_lock(workdir):
        lock = os.path.join(workdir, training.LOCK_NAME)
        holder = json.load(open(lock))
        before = sorted(os.listdir(workdir))
        result = _launch(
            "launch.train_teacher",
            "--config=configs/teacher.py:tiny",
            f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}",
        )
        assert sorted(os.listdir(workdir)) == before == [training.LOCK_NAME]
        assert json.load(open(lock)) == holder  # still ours
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder["started"]))
    assert f"{workdir} is in use by another training job" in line
    assert f"host {socket.gethostname()}, pid {os.getpid()}, started {started} UTC" in line
    assert f"lock {lock}" in line
    assert not os.path.exists(lock)  # released when the block ended


def test_a_lock_left_by_a_killed_job_is_taken_over_with_a_notice(tmp_path, caplog):
    """A process holding the lock is SIGKILLed: its lock file stays, naming a pid that is gone;
    the next job takes it over with one warning naming the old holder, and holds it itself."""
    workdir = str(tmp_path / "killed")
    holder_code = textwrap.dedent(
        f"""
        import time
        from pwavenet import training
        with training.workdir_lock({workdir!r}):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder_code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    lock = os.path.join(workdir, training.LOCK_NAME)
    left = json.load(open(lock))
    assert left["pid"] == proc.pid

    with caplog.at_level(logging.WARNING):
        with training.workdir_lock(workdir):
            assert json.load(open(lock))["pid"] == os.getpid()
    notices = [r.getMessage() for r in caplog.records if "Took over the lock" in r.getMessage()]
    assert len(notices) == 1, notices
    assert f"pid {proc.pid}" in notices[0] and lock in notices[0]
    assert not os.path.exists(lock)


def _write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, training.LOCK_NAME), "w") as f:
        json.dump(holder, f)


def test_a_reused_pid_does_not_hold_the_lock_and_another_hosts_lock_is_refused(tmp_path):
    """A lock naming a pid that now belongs to a process started after the lock is stale; a
    lock from another host cannot be checked, so it is refused with how to clear it."""
    workdir = str(tmp_path / "w")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(workdir, host=socket.gethostname(), pid=sleeper.pid, started=1e9)
        with training.workdir_lock(workdir):
            pass
        _write_lock(workdir, host=socket.gethostname(), pid=sleeper.pid, started=time.time())
        with pytest.raises(training.WorkdirInUse, match=f"pid {sleeper.pid}"):
            with training.workdir_lock(workdir):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_lock(workdir, host="elsewhere-host", pid=1, started=time.time())
    lock = os.path.join(workdir, training.LOCK_NAME)
    with pytest.raises(training.WorkdirInUse, match=f"host elsewhere-host.*delete {lock}"):
        with training.workdir_lock(workdir):
            pass
    assert json.load(open(lock))["host"] == "elsewhere-host"  # untouched


def test_readers_beside_a_training_job_see_the_last_complete_step(trained, tmp_path):
    """While a job trains (the lock is held) and orbax is writing step 9 (its temporary
    folder, half written), `restore_params` and `load_vocoder` read step 6, the last complete
    one, whole."""
    workdir = _copy(trained, tmp_path)
    checkpoints = os.path.join(workdir, "checkpoints")
    partial = os.path.join(checkpoints, "9.orbax-checkpoint-tmp-1796672000000")
    shutil.copytree(os.path.join(checkpoints, "6"), partial)
    os.remove(os.path.join(partial, "default", "_METADATA"))
    with training.workdir_lock(workdir):
        params, step = training.restore_params(workdir)
        vocoder = vocoder_lib.load_vocoder(workdir)
    assert step == 6
    _assert_same(params, trained[1][(6, True)])
    _assert_same(vocoder.variables["params"], trained[1][(6, True)])


# ------------------------------------------------------------------------ damaged checkpoints


def _damage(step_dir, how):
    """Truncates, deletes or garbles every file of a checkpoint's item folder."""
    rng = np.random.default_rng(0)
    for root, _, names in os.walk(os.path.join(step_dir, "default")):
        for name in names:
            path = os.path.join(root, name)
            data = open(path, "rb").read()
            if how == "delete":
                os.remove(path)
            elif how == "truncate":
                open(path, "wb").write(data[: len(data) // 2])
            else:
                garbled = bytearray(data)
                for i in rng.integers(0, len(data), max(1, len(data) // 8)):
                    garbled[i] ^= 0x5A
                open(path, "wb").write(bytes(garbled))


@pytest.mark.parametrize("how", ["truncate", "delete", "garble"])
def test_loading_skips_a_damaged_latest_checkpoint_and_names_it(trained, tmp_path, how, caplog):
    workdir = _copy(trained, tmp_path)
    latest = os.path.join(workdir, "checkpoints", "6")
    _damage(latest, how)
    with caplog.at_level(logging.WARNING):
        params, step = training.restore_params(workdir)
        vocoder = vocoder_lib.load_vocoder(workdir)
    assert step == 3
    _assert_same(params, trained[1][(3, True)])
    _assert_same(vocoder.variables["params"], trained[1][(3, True)])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"Checkpoint {latest} is damaged" in w for w in warnings), warnings

    # An explicit step is that step or an error naming it, never another step.
    with pytest.raises(training.DamagedCheckpoint, match=f"checkpoint of step 6 in .* damaged"):
        training.restore_params(workdir, 6)


@pytest.mark.parametrize("how", ["truncate", "delete", "garble"])
def test_loading_with_every_checkpoint_damaged_names_the_folder(trained, tmp_path, how):
    workdir = _copy(trained, tmp_path)
    checkpoints = os.path.join(workdir, "checkpoints")
    for step in ("3", "6"):
        _damage(os.path.join(checkpoints, step), how)
    with pytest.raises(training.DamagedCheckpoint) as error:
        vocoder_lib.load_vocoder(workdir)
    message = str(error.value)
    assert f"Every checkpoint in {os.path.abspath(checkpoints)} is damaged" in message
    assert "step 6: " in message and "step 3: " in message and "Move " in message


def test_evaluate_names_a_damaged_step_and_a_folder_with_none_intact(trained, tmp_path):
    """`launch.evaluate`: the issue's truncated checkpoint, asked for by --step, is named with
    its file; with every checkpoint truncated, one line names the folder and the fix."""
    workdir = _copy(trained, tmp_path)
    checkpoints = os.path.abspath(os.path.join(workdir, "checkpoints"))
    metadata = os.path.join(checkpoints, "6", "default", "_METADATA")
    with open(metadata, "rb") as f:
        data = f.read()
    with open(metadata, "wb") as f:
        f.write(data[:100])
    result = _launch("launch.evaluate", f"--workdir={workdir}", "--step=6")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert f"The checkpoint of step 6 in {checkpoints} is damaged: {metadata} is not valid JSON (JSONDecodeError: Expecting value: line 1 column 101 (char 100))" in line  # noqa: E501
    assert "available: [3, 6]" in line

    _damage(os.path.join(checkpoints, "3"), "truncate")
    result = _launch("launch.evaluate", f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line.startswith(f"error: Every checkpoint in {checkpoints} is damaged (step 6: ")
    assert f"Move {checkpoints} aside" in line


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_intact_checkpoint(data_dir, trained, tmp_path, caplog):
    """A damaged latest checkpoint (6) is named, moved to damaged_checkpoints/, and training
    resumes from step 3: it loses one checkpoint interval and then saves step 6 again, the
    same state bit for bit (a resumed run is exact)."""
    workdir = _copy(trained, tmp_path)
    _damage(os.path.join(workdir, "checkpoints", "6"), "truncate")
    damaged_files = _files(os.path.join(workdir, "checkpoints", "6"))
    with caplog.at_level(logging.INFO):
        teacher_job.train_and_evaluate(_config(data_dir), workdir)
    messages = [r.getMessage() for r in caplog.records]
    assert f"Resumed from {workdir} at step 3." in messages
    assert any("checkpoints/6 is damaged" in m for m in messages), messages
    assert _files(os.path.join(workdir, "damaged_checkpoints", "6")) == damaged_files
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    for ema in (True, False):
        _assert_same(training.restore_params(workdir, 6, ema=ema)[0], trained[1][(6, ema)])


def test_resume_with_every_checkpoint_damaged_stops_and_changes_nothing(
    data_dir, trained, tmp_path
):
    workdir = _copy(trained, tmp_path)
    checkpoints = os.path.join(workdir, "checkpoints")
    for step in ("3", "6"):
        _damage(os.path.join(checkpoints, step), "garble")
    before = _files(workdir)
    with pytest.raises(training.DamagedCheckpoint, match=f"Every checkpoint in {checkpoints}"):
        teacher_job.train_and_evaluate(_config(data_dir), workdir)
    assert _files(workdir) == before
    assert not os.path.exists(os.path.join(workdir, training.LOCK_NAME))


# --------------------------------------------------------------------------- failed saves


# Installed into a job's process (as sitecustomize, or by monkeypatching in this one): every
# write of a file into a checkpoint being saved fails with `error` from the disk.
FAULT = textwrap.dedent(
    """
    import errno, os
    from etils import epath

    _write_text = epath.Path.write_text

    def _fail(self, *args, **kwargs):
        if ".orbax-checkpoint-tmp" in str(self):
            number = int(os.environ["PWAVENET_TEST_SAVE_ERRNO"])
            raise OSError(number, os.strerror(number), str(self))
        return _write_text(self, *args, **kwargs)

    epath.Path.write_text = _fail
    """
)


@pytest.mark.slow
def test_a_save_that_finds_the_disk_full_stops_the_job_and_keeps_the_checkpoints(
    data_dir, trained, tmp_path
):
    """`launch.train_teacher` resuming from step 6, with every checkpoint write failing with
    ENOSPC (orbax reports it from its background save): exit 2, one line naming the folder
    and the reason; the saved checkpoints are unchanged, also with keep_checkpoints=2 (a
    successful save of step 7 would have deleted step 3)."""
    workdir = _copy(trained, tmp_path)
    checkpoints = os.path.abspath(os.path.join(workdir, "checkpoints"))
    fault_dir = tmp_path / "fault"
    fault_dir.mkdir()
    (fault_dir / "sitecustomize.py").write_text(FAULT)
    before = _files(checkpoints)
    result = _launch(
        "launch.train_teacher",
        "--config=configs/teacher.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        "--config.train.steps=12",
        "--config.train.checkpoint_every=1",
        "--config.train.keep_checkpoints=2",
        env={"PYTHONPATH": str(fault_dir), "PWAVENET_TEST_SAVE_ERRNO": str(errno.ENOSPC)},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line == (
        f"error: Could not save a checkpoint in {checkpoints}: No space left on device. The "
        "job stopped; step 6 is intact. Free space or make the folder writable, then rerun "
        "the same command to resume."
    )
    finished = {k: v for k, v in _files(checkpoints).items() if "orbax-checkpoint-tmp" not in k}
    assert finished == before
    _assert_same(training.restore_params(workdir)[0], trained[1][(6, True)])
    assert not os.path.exists(os.path.join(workdir, training.LOCK_NAME))


@pytest.mark.slow
def test_a_read_only_checkpoint_folder_stops_the_job_and_a_rerun_resumes(
    data_dir, trained, tmp_path, monkeypatch
):
    """A checkpoint folder the job cannot write: CheckpointSaveError naming the folder, the
    checkpoints unchanged; once writable again, the same run resumes from step 6. As root,
    chmod does not stop writes, so the write fails through the injected fault (EROFS)."""
    workdir = _copy(trained, tmp_path)
    checkpoints = os.path.abspath(os.path.join(workdir, "checkpoints"))
    before = _files(checkpoints)
    config = _config(
        data_dir, **{"train.steps": 8, "train.checkpoint_every": 1, "train.audio_every": 100}
    )
    as_root = os.geteuid() == 0
    from etils import epath

    write_text = epath.Path.write_text
    if as_root:
        monkeypatch.setenv("PWAVENET_TEST_SAVE_ERRNO", str(errno.EROFS))
        exec(FAULT, {})  # replaces epath.Path.write_text
    else:
        os.chmod(checkpoints, 0o555)
    try:
        with pytest.raises(training.CheckpointSaveError) as error:
            teacher_job.train_and_evaluate(config, workdir)
    finally:
        os.chmod(checkpoints, 0o755)
        epath.Path.write_text = write_text
    assert str(error.value).startswith(f"Could not save a checkpoint in {checkpoints}: ")
    if as_root:
        assert "Read-only file system" in str(error.value)
    finished = {k: v for k, v in _files(checkpoints).items() if "orbax-checkpoint-tmp" not in k}
    assert finished == before

    teacher_job.train_and_evaluate(config, workdir)
    assert training.restore_params(workdir)[1] == 8


def test_the_console_leaves_out_a_librarys_traceback_but_keeps_its_line():
    """orbax logs a traceback for each failed background save before the job names the failure
    in one line: on the console a library's error keeps its line and loses the traceback; the
    project's own errors keep theirs."""
    from launch import common

    formatter = common.ConsoleFormatter((os.path.join(ROOT, "pwavenet", ""),))
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        exc_info = sys.exc_info()

    def record(path):
        return logging.LogRecord("absl", logging.ERROR, path, 1, "save failed", None, exc_info)

    library = formatter.format(record("/venv/site-packages/orbax/checkpoint/x.py"))
    own = formatter.format(record(os.path.join(ROOT, "pwavenet", "training", "loop.py")))
    assert "save failed" in library and "Traceback" not in library
    assert "save failed" in own and "Traceback" in own and "No space left" in own
