"""TensorBoard summaries, written by process 0 only."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

__all__ = [
    "Writer",
]


PyTree = Any
Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- summaries


class Writer:
    """TensorBoard summaries from process 0; other processes write nothing."""

    def __init__(self, workdir: str):
        self._writer = None
        if jax.process_index() == 0:
            from flax.metrics import tensorboard  # imports TensorFlow

            self._writer = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self._writer:
            for name, value in values.items():
                self._writer.scalar(prefix + name, float(value), step)

    def audio(self, step: int, name: str, audio: np.ndarray, sample_rate: int) -> None:
        if self._writer:
            self._writer.audio(
                name,
                np.asarray(audio, np.float32)[..., None],
                step,
                sample_rate=sample_rate,
                max_outputs=audio.shape[0],
            )

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self._writer:
            self._writer.image(name, image, step)

    def flush(self) -> None:
        if self._writer:
            self._writer.flush()
