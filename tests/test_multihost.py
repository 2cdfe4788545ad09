"""Multi-host training on one machine: 2 processes x 2 CPU devices joined by
`jax.distributed.initialize` on loopback with gloo collectives, against 1 process x 4 devices.

The one-process runs read, batch by batch, what processes 0 and 1 read side by side
(tests/multihost_worker.py --emulate_processes=2), so both layouts train on the same global
batches. With the same batches and the same per-example randomness (keys are folded from the
global example index), the parameters must agree up to the order of the cross-device sums.

A third wave starts `launch.train_teacher` and `launch.distill` on two "hosts" with the entry
points' multi-host flags, as a user does, and compares them with the worker's two-process runs.

Every run of the module is started in three waves of concurrent processes, by a thread that
tests/conftest.py starts with the session's first test (tests/background.py), so that they go
on beside the other tests; the module's fixture waits for it.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
TIMEOUT = 420
STEPS = 4
# The layouts sum the same 4 per-device gradients in different orders (gloo across processes,
# XLA within one), so they agree to float32 rounding, not bit for bit: after 4 Adam steps of
# the tiny teacher the largest parameter difference seen is 6e-8. A real difference (one
# example, key or step off) moves parameters by the order of the learning rate, 1e-3.
ATOL = 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Run:
    """One job on one layout: a single process, or the processes of one 2-process cluster."""

    def __init__(self, tmp, name, *, num_processes, **flags):
        self.name, self.tmp = name, tmp
        self.workdir = str(tmp / name)
        port = _free_port()
        self.procs, self.logs = [], []
        for p in range(num_processes):
            args = {"workdir": self.workdir, "out": str(tmp / f"{name}{p}"), **flags}
            if num_processes == 1:
                args.update(local_devices=4, emulate_processes=2)
            else:
                args.update(num_processes=num_processes, process_id=p, port=port)
            cmd = [sys.executable, WORKER] + [
                f"--{k}" if v is True else f"--{k}={v}" for k, v in args.items()
            ]
            env = dict(os.environ)
            env.pop("XLA_FLAGS", None)  # the worker sets its own device count
            self.logs.append(str(tmp / f"{name}{p}.log"))
            with open(self.logs[-1], "w") as log:
                self.procs.append(
                    subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
                )

    def log(self, p=0) -> str:
        with open(self.logs[p]) as f:
            return f.read()

    def wait(self):
        deadline = time.time() + TIMEOUT
        for p, proc in enumerate(self.procs):
            try:
                proc.wait(max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                for q in self.procs:
                    q.kill()
                raise AssertionError(f"{self.name} process {p} timed out:\n{self.log(p)[-3000:]}")
        for p, proc in enumerate(self.procs):
            assert proc.returncode == 0, f"{self.name} process {p} failed:\n{self.log(p)[-4000:]}"

    def result(self, p=0, job="teacher"):
        return dict(np.load(str(self.tmp / f"{self.name}{p}.{job}.npz")))


class _LaunchedRun(_Run):
    """A job started as a user starts it on each of two hosts: `python -m <module>` with the
    entry points' multi-host flags (--coordinator_address, --num_processes, --process_id) and
    --cpu_devices=2, on the tiny config with `overrides`."""

    def __init__(self, tmp, name, module, config, **overrides):
        self.name, self.tmp = name, tmp
        self.workdir = str(tmp / name)
        port = _free_port()
        self.procs, self.logs = [], []
        for p in range(2):
            cmd = [sys.executable, "-m", module, f"--config={config}", f"--workdir={self.workdir}"]
            cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
            cmd += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
            cmd += [f"--process_id={p}", "--cpu_devices=2"]
            env = dict(os.environ)
            env.pop("XLA_FLAGS", None)  # --cpu_devices sets the device count
            self.logs.append(str(tmp / f"{name}{p}.log"))
            with open(self.logs[-1], "w") as log:
                self.procs.append(
                    subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
                )


def _params(result):
    return {k: v for k, v in result.items() if k.startswith("[")}


def _assert_params_close(a, b):
    pa, pb = _params(a), _params(b)
    assert pa and pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=0, atol=ATOL, err_msg=k)


def _assert_same_training(a, b):
    assert int(a["step"]) == int(b["step"])
    np.testing.assert_array_equal(a["losses"][:, 0], b["losses"][:, 0])
    np.testing.assert_allclose(a["losses"][:, 1], b["losses"][:, 1], rtol=1e-6)
    _assert_params_close(a, b)


def _resume_copy(src, dst):
    """`src` as it was after step 2: its last checkpoint and summaries removed."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tensorboard", str(STEPS)))
    return dst


def _all_waves(job, tmp, data_dir):
    """Every run of the module, in a background.Background: {name: _Run}."""
    common = dict(data_dir=data_dir)
    r = {}

    def start(name, **flags):
        r[name] = _Run(tmp, name, **flags, **common)
        job.procs.extend(r[name].procs)

    # Wave 1: the teacher, then a student distilled from it, on both layouts. Both evaluate
    # the teacher; the two-process run also writes the student's audio summaries (synthesis
    # runs on every process, process 0 writes).
    start("two", num_processes=2, student_steps=2, eval=True, audio=True)
    start("one", num_processes=1, student_steps=2, eval=True)
    r["two"].wait(), r["one"].wait()
    # Wave 2: each layout resumes the other layout's step-2 checkpoint. The two-process one
    # runs on until SIGTERM reaches its process 1 (a preempted host), after step 5.
    _resume_copy(r["two"].workdir, tmp / "one_from_two")
    _resume_copy(r["one"].workdir, tmp / "two_from_one")
    start("one_from_two", num_processes=1)
    start("two_from_one", num_processes=2, steps=100_000, keep_checkpoints=100)
    term = r["two_from_one"]
    deadline = time.time() + TIMEOUT
    while "step 5/" not in term.log(1):
        assert time.time() < deadline and term.procs[1].poll() is None, term.log(1)[-3000:]
        time.sleep(0.2)
    term.procs[1].send_signal(signal.SIGTERM)
    term.wait(), r["one_from_two"].wait()
    # Wave 3 (alone: more processes on two cores time out gloo's connections): the entry
    # points with the multi-host flags, the teacher as the worker's runs train it and the
    # student distilled from wave 1's two-process teacher.
    schedule = {"train.log_every": 1, "data.data_dir": data_dir}
    for name, module, config, steps, extra in (
        ("flags_teacher", "launch.train_teacher", "configs/teacher.py:tiny", STEPS, {}),
        (
            "flags_student",
            "launch.distill",
            "configs/student.py:tiny",
            2,
            {"teacher_workdir": r["two"].workdir},
        ),
    ):
        steps = {"train.steps": steps, "train.decay_steps": steps}
        r[name] = _LaunchedRun(tmp, name, module, config, **schedule, **steps, **extra)
        job.procs.extend(r[name].procs)
    r["flags_teacher"].wait(), r["flags_student"].wait()
    return r


def start_early(tmp_path_factory, data_dir):
    return background.Background(_all_waves, tmp_path_factory.mktemp("multihost"), data_dir)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, espeak_small_data_dir):
    tmp = tmp_path_factory.mktemp("multihost")
    return background.started(
        request, "test_multihost.py", _all_waves, tmp, espeak_small_data_dir
    ).result()


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_four_devices(runs):
    two0, two1, one = (runs["two"].result(0), runs["two"].result(1), runs["one"].result())
    assert len(two0["losses"]) == STEPS
    # Both processes hold the same replicated state, bit for bit.
    for k in _params(two0):
        np.testing.assert_array_equal(two0[k], two1[k], err_msg=k)
    _assert_same_training(two0, one)
    # Evaluation shards the validation split over processes; the pmean'd metrics agree.
    assert two0["eval_metrics"].shape == one["eval_metrics"].shape == (1, 3)
    np.testing.assert_allclose(two0["eval_metrics"], one["eval_metrics"], rtol=1e-6)
    # Training moved the parameters by far more than the tolerance between layouts.
    from pwavenet import training

    step2, _ = training.restore_params(runs["two"].workdir, step=2, ema=False)
    moved = [np.abs(np.asarray(v) - two0[k]).max() for k, v in _flat(step2).items()]
    assert max(moved) > 100 * ATOL


def _flat(tree):
    import jax

    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.slow
def test_the_entry_points_multihost_flags_train_like_the_library_runs(runs):
    """`python -m launch.train_teacher` and `python -m launch.distill` started on two
    "hosts" with --coordinator_address, --num_processes, --process_id and --cpu_devices=2
    join one cluster and reach the parameters of the worker's two-process runs, which train
    like one process with four devices (the tests above); both processes exit 0 (the fixture's
    wait)."""
    from pwavenet import training

    for name, job, steps in (("flags_teacher", "teacher", STEPS), ("flags_student", "student", 2)):
        run = runs[name]
        for p in (0, 1):
            assert f"JAX process {p} of 2" in run.log(p), run.log(p)[-3000:]
        params, step = training.restore_params(run.workdir, ema=False)
        assert step == steps
        flat = {k: np.asarray(v) for k, v in _flat(params).items()}
        _assert_params_close(flat, runs["two"].result(0, job))


@pytest.mark.slow
def test_student_distills_the_same_on_two_processes(runs):
    """The student's loss draws noise per example: example i of the global batch gets the
    same key whichever process and device holds it."""
    two0, two1 = runs["two"].result(0, "student"), runs["two"].result(1, "student")
    one = runs["one"].result(0, "student")
    for k in _params(two0):
        np.testing.assert_array_equal(two0[k], two1[k], err_msg=k)
    _assert_same_training(two0, one)
    assert any("flows" in k for k in _params(two0)), list(_params(two0))[:5]


@pytest.mark.slow
def test_only_process_zero_writes_summaries_and_config(runs):
    from tensorboard.backend.event_processing import event_accumulator

    for workdir in (runs["two"].workdir, runs["two"].workdir + "_student"):
        events = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
        assert len(events) == 1, events
        # Event files are named ...tfevents.<time>.<host>.<pid>.<n>.v2.
        assert events[0].split(".")[-3] == str(runs["two"].procs[0].pid)
        assert os.path.exists(os.path.join(workdir, "config.json"))
    acc = event_accumulator.EventAccumulator(events[0], size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert "train/loss" in tags and "train/kl" in tags
    assert any(t.startswith("student") for t in tags), tags  # audio summaries ran


@pytest.mark.slow
def test_checkpoints_restore_across_process_layouts(runs):
    """A step-2 checkpoint written by 2 processes resumes on 1, and the reverse, to the same
    step-4 parameters and losses as the uninterrupted runs."""
    from pwavenet import training

    two = runs["two"].result(0)
    one_from_two = runs["one_from_two"].result()
    np.testing.assert_array_equal(one_from_two["losses"][:, 0], [3, 4])
    np.testing.assert_allclose(one_from_two["losses"][:, 1], two["losses"][2:, 1], rtol=1e-6)
    _assert_params_close(one_from_two, two)
    for p in (0, 1):
        two_from_one = runs["two_from_one"].result(p)
        np.testing.assert_array_equal(two_from_one["losses"][:2, 0], [3, 4])
        np.testing.assert_allclose(two_from_one["losses"][:2, 1], two["losses"][2:, 1], rtol=1e-6)
    step4, _ = training.restore_params(runs["two_from_one"].workdir, step=STEPS, ema=False)
    _assert_params_close({k: np.asarray(v) for k, v in _flat(step4).items()}, runs["one"].result())


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_one_saved_step(runs):
    """SIGTERM reaches one host of a preemptible cluster: every process stops at one agreed
    step, they save it together, and all exit 0 (checked by the fixture's wait)."""
    run = runs["two_from_one"]
    saved = []
    for p in (0, 1):
        lines = [x for x in run.log(p).splitlines() if "Preempted: saved step" in x]
        assert len(lines) == 1, run.log(p)[-3000:]
        saved.append(int(lines[0].split("saved step ")[1].split()[0]))
        assert int(run.result(p)["step"]) == saved[p]
    assert saved[0] == saved[1] >= 5
    steps = sorted(int(d) for d in os.listdir(os.path.join(run.workdir, "checkpoints")))
    assert steps[-1] == saved[0]
