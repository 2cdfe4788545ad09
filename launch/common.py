"""Process set-up shared by every job's entry point."""

import os

from absl import flags
from absl import logging

flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() with the cluster's auto-detected "
    "settings (Cloud TPU pod slices, SLURM, ...).",
)
flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for an explicit multi-process launch."
)
flags.DEFINE_integer("num_processes", None, "Number of processes (explicit launches).")
flags.DEFINE_integer("process_id", None, "This process's index (explicit launches).")
flags.DEFINE_integer(
    "cpu_devices",
    None,
    "Devices the CPU backend exposes (0: one per core this process may use; unset: JAX's "
    "default, one). Jobs spread their work over the local devices as on an accelerator "
    "host: data-parallel training and batched generation. The benchmark's default is 0.",
)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _has_avx512() -> bool:
    """Whether this (Linux) machine's CPU runs AVX-512 (the avx512f flag of /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


# XLA:CPU vectorizes its fused loops for 256-bit registers unless told otherwise; on the
# 2-core AVX-512 machines in BUILD.md, 512-bit code made training 1.15x to 1.20x as fast
# (AMD EPYC) and the student's synthesis 1.24x, and no scenario slower.
VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width=512"


def prefer_wide_vectors() -> None:
    """Adds VECTOR_WIDTH_FLAG to XLA_FLAGS on an AVX-512 CPU, unless XLA_FLAGS already sets a
    vector width (XLA_FLAGS=--xla_cpu_prefer_vector_width=256 keeps XLA's default). XLA
    reads XLA_FLAGS when JAX starts its first backend, so this runs before that."""
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" in current or not _has_avx512():
        return
    os.environ["XLA_FLAGS"] = f"{current} {VECTOR_WIDTH_FLAG}".strip()


def prepare_process() -> None:
    """Joins a multi-host run if asked, keeps TensorFlow (data and summaries only) off
    accelerators, lets XLA:CPU use 512-bit vectors where the CPU has them, and logs this
    process's place and devices. Runs before anything starts a JAX backend."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefer_wide_vectors()
    try:
        import tensorflow as tf
    except ImportError:
        pass  # jobs that read no data (the benchmark) run without TensorFlow
    else:
        tf.config.set_visible_devices([], "GPU")
    import jax

    f = flags.FLAGS
    if f.cpu_devices is not None:
        if f.cpu_devices < 0:
            raise ValueError(
                f"--cpu_devices={f.cpu_devices}: use a count >= 1, or 0 for one per core."
            )
        # Before any backend starts; it changes only the CPU backend.
        jax.config.update("jax_num_cpu_devices", f.cpu_devices or _usable_cores())
    if f.coordinator_address:
        jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    elif f.multihost:
        jax.distributed.initialize()
    logging.info(
        "JAX process %d of %d; local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
