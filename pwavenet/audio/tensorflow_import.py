"""TensorFlow as the package uses it: for data only, imported on first use (so `import pwavenet`
stays light) with accelerators hidden from it, so that JAX alone holds them."""

from __future__ import annotations

from typing import Any

__all__ = ["import_tensorflow", "is_tf_tensor"]


def import_tensorflow():
    """Imports TensorFlow (used only for data) with accelerators hidden from it."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised: too late, and already decided
        pass
    return tf


def is_tf_tensor(x: Any) -> bool:
    """True for TensorFlow tensors (eager or symbolic) without importing TensorFlow."""
    return type(x).__module__.startswith("tensorflow")
