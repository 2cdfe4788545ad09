"""Preemption: SIGTERM becomes a step at which every process saves and exits cleanly."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
from absl import logging

__all__ = [
    "Preempted",
    "PreemptionNotice",
]


PyTree = Any
Batch = dict[str, np.ndarray]


class Preempted(SystemExit):
    """Raised by `fit` after SIGTERM once the current step's checkpoint is saved; exit code 0,
    so a job manager sees a clean exit and the rerun resumes from that step."""

    def __init__(self, step: int, workdir: str):
        super().__init__(0)
        self.step = step
        self.workdir = workdir


class PreemptionNotice:
    """Turns SIGTERM (what cloud VMs send before preempting) into a step at which to stop.

    Single process: a Python SIGTERM handler sets a flag the loop polls. Several processes:
    they must stop at the same step to save collectively, so the handler is JAX's own (the
    preemption notifier `jax.distributed.initialize` installs; a Python handler would replace
    it) and the loop asks the coordination service
    (`multihost_utils.reached_preemption_sync_point`), which turns one host's SIGTERM into a
    step agreed by all.
    """

    def __init__(self):
        self.received = False
        self._previous = None
        self._multiprocess = jax.process_count() > 1
        self._warned = False

    def __enter__(self):
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True
        logging.warning("SIGTERM received: saving a checkpoint after this step, then exiting.")

    def reached(self, step: int) -> bool:
        if not self._multiprocess:
            return self.received
        from jax.experimental import multihost_utils

        try:
            reached = bool(multihost_utils.reached_preemption_sync_point(step))
        except Exception as e:  # noqa: BLE001  no preemption service in this cluster
            if not self._warned:
                self._warned = True
                logging.warning("No preemption notice in this multi-process run: %s", e)
            return False
        if reached:
            logging.warning("Preemption notice: all processes save step %d, then exit.", step)
        return reached
