"""One training job per workdir: a lock file, `<workdir>/training.lock`.

A training job holds the lock while it runs; a second job started on the same workdir (a
re-submitted cloud job, a second terminal) is refused with `WorkdirInUse`, which names the
holder (host, process id, start time) and the lock's path. The lock is released when the job
ends: normally, by an error, or preempted (SIGTERM). A job killed outright (SIGKILL, a lost
machine) leaves its lock behind; on the same host, a lock whose process is gone is stale and
the next job takes it over with a warning. A lock from another host cannot be checked from
here, so the refusal says to delete the file once that job is known to be gone.

The file is created complete and atomically (written under a private name, then hard-linked
to its name, which fails if it exists; created exclusively where there are no hard links), so
a reader never sees half a lock; taking over a stale lock happens under `flock` on the workdir,
so two jobs started together on one host cannot both take it over. In a multi-process run process 0 takes the lock for all and tells the other
processes whether it got it. Jobs that only read a workdir (evaluation, synthesis, export) take
no lock and run beside training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Iterator

import jax
import numpy as np
from absl import logging

__all__ = [
    "LOCK_NAME",
    "LockHolder",
    "WorkdirInUse",
    "workdir_lock",
]

LOCK_NAME = "training.lock"

# The workdirs this process holds the lock of (or, on processes other than 0, that process 0
# holds for it), with how many nested `workdir_lock` calls hold each.
_held: dict[str, int] = {}


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the job holding it."""

    host: str
    pid: int
    started: float  # Unix time
    command: str = ""

    def describe(self) -> str:
        when = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
        return f"host {self.host}, pid {self.pid}, started {when:%Y-%m-%d %H:%M:%S} UTC"


class WorkdirInUse(OSError):
    """Another training job holds the workdir's lock."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.EBUSY


def _lock_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), LOCK_NAME)


def _read(path: str) -> LockHolder | None:
    """The holder a lock file names; None if it cannot be read as one (it is then stale: this
    module only ever writes whole lock files)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return LockHolder(
            str(data["host"]), int(data["pid"]), float(data["started"]), data.get("command", "")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (Unix time), from Linux's /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _process_is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _holder_is_running(holder: LockHolder) -> bool | None:
    """Whether the holder's process still runs: True or False on this host, None (unknown) for
    another host's. A process id reused by a process started after the lock is not the
    holder; neither is this process itself (it would know it held the lock)."""
    if holder.host != socket.gethostname():
        return None
    if holder.pid == os.getpid() or holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if _process_is_zombie(holder.pid):
        return False
    started = _process_start_time(holder.pid)
    # /proc's start time is in clock ticks; a second of slack covers the rounding.
    return started is None or started <= holder.started + 1.0


def _write_new(path: str, holder: LockHolder) -> bool:
    """Creates the lock file holding `holder`, complete, unless one exists (False)."""
    content = json.dumps(dataclasses.asdict(holder))
    private = f"{path}.{holder.host}.{holder.pid}"
    with open(private, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        # A file system without hard links (some FUSE mounts): exclusive creation instead.
        try:
            with open(path, "x") as f:
                f.write(content)
            return True
        except FileExistsError:
            return False
    finally:
        os.unlink(private)


def _seconds_since_modified(path: str) -> float:
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return float("inf")


def _refusal(workdir: str, path: str, holder: LockHolder | None) -> WorkdirInUse:
    who = f"{holder.describe()}; lock {path}" if holder else f"lock {path}"
    if holder is not None and holder.host != socket.gethostname():
        fix = (
            "wait for it to finish or stop it; if it is no longer running (its machine was "
            f"lost), delete {path} and rerun"
        )
    else:
        fix = "wait for it to finish or stop it, or use another --workdir"
    return WorkdirInUse(f"{workdir} is in use by another training job ({who}): {fix}.")


def _acquire(workdir: str) -> LockHolder:
    """Takes the workdir's lock for this process, or raises WorkdirInUse."""
    path = _lock_path(workdir)
    mine = LockHolder(socket.gethostname(), os.getpid(), time.time(), " ".join(sys.argv))
    if _write_new(path, mine):
        return mine
    # Taking over a stale lock: one job at a time on this host (flock on the folder).
    folder = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # best effort where flock is unsupported (NFS)
            fcntl.flock(folder, fcntl.LOCK_EX)
        holder = _read(path)
        if holder is not None and _holder_is_running(holder) is not False:
            raise _refusal(workdir, path, holder)
        if holder is None and _seconds_since_modified(path) < 10:
            raise _refusal(workdir, path, None)  # being written (no hard links here)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if not _write_new(path, mine):
            raise _refusal(workdir, path, _read(path))
    finally:
        os.close(folder)  # releases the flock
    if holder is None:
        logging.warning("Took over the unreadable lock file %s of %s.", path, workdir)
    else:
        logging.warning(
            "Took over the lock %s left by a job that is no longer running (%s).",
            path,
            holder.describe(),
        )
    return mine


def _release(workdir: str, mine: LockHolder, created: bool) -> None:
    """Deletes the lock file if it is still this job's, and the workdir if the lock created it
    and the job left nothing in it (a job refused by its config checks)."""
    path = _lock_path(workdir)
    holder = _read(path)
    if holder is not None and (holder.host, holder.pid, holder.started) == (
        mine.host,
        mine.pid,
        mine.started,
    ):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if created:
        with contextlib.suppress(OSError):  # not empty: the job wrote into it
            os.rmdir(workdir)


def _agree_across_processes(ok: bool) -> bool:
    """Process 0's `ok`, on every process of a multi-process run."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def _sigterm_exits():
    """SIGTERM raises SystemExit while the lock is held, so that the lock is released, in a
    single-process job whose SIGTERM has no handler of its own (training's preemption notice
    installs its own while it trains; a multi-process run's belongs to JAX)."""
    install = (
        jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if not install:
        yield
        return

    def exit_on_sigterm(signum, frame):
        del frame
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Holds `workdir`'s training lock for the duration of the block (re-entrant within a
    process). Raises WorkdirInUse if another job holds it."""
    key = os.path.realpath(workdir)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    mine, refusal, created = None, None, False
    if jax.process_index() == 0:
        created = not os.path.isdir(workdir)
        os.makedirs(workdir, exist_ok=True)
        try:
            mine = _acquire(workdir)
        except WorkdirInUse as e:
            refusal = e
    if not _agree_across_processes(refusal is None):
        raise refusal or WorkdirInUse(
            f"{workdir} is in use by another training job; process 0 of this run names it."
        )
    _held[key] = 1
    try:
        with _sigterm_exits():
            yield
    finally:
        del _held[key]
        if mine is not None:
            _release(workdir, mine, created)
