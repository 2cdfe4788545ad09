"""Slow job tests whose work is separate training processes, started early in the session.

Their processes mostly wait on one another (start-up, compiles, barriers), so in a session run
in one process (`-n 0`) tests/conftest.py starts them with the session's first test, in a
thread, when the module's tests are selected: they run beside the in-process tests. Under
pytest-xdist (the default) the conftest collects these modules first instead, and the other
workers fill the cores meanwhile. The module's fixture (or test) waits for the thread and
checks what it left; without an early start, it starts the thread itself.
"""

import threading

import pytest

# Where tests/conftest.py keeps the early-started jobs: {module file name: Background}.
EARLY = pytest.StashKey()


class Background:
    """target(job, *args) in a thread. The target appends the processes it starts to
    job.procs, so that `kill` can end them; `result()` waits for the thread and returns what
    the target returned, or raises what it raised (an assertion about the runs, a timeout)."""

    def __init__(self, target, *args):
        self.procs = []
        self._result, self._error = None, None
        self._thread = threading.Thread(target=self._main, args=(target, args), daemon=True)
        self._thread.start()

    def _main(self, target, args):
        try:
            self._result = target(self, *args)
        except BaseException as e:  # noqa: BLE001  re-raised in the test's thread
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def kill(self):
        """Ends the processes still running (a session that stops before waiting for them)."""
        for proc in list(self.procs):
            if proc.poll() is None:
                proc.kill()


def started(request, module, target, *args):
    """The Background the session started early for `module` (a file name), or one started
    now with target(job, *args)."""
    job = request.config.stash.get(EARLY, {}).pop(module, None)
    if job is None:
        job = Background(target, *args)
    request.addfinalizer(job.kill)
    return job
