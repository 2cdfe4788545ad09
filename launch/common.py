"""Process set-up shared by every job's entry point."""

import os

from absl import logging


def prepare_process() -> None:
  """Keeps TensorFlow (used only for data and summaries) off accelerators; logs the devices."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  import jax

  logging.info("JAX process %d of %d; local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
