"""Shared by tests/test_iaf.py and tests/test_distillation.py: a small student and random
weights."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def small_student_config(base="logistic", **overrides):
    """Two 3-layer flows, hop 8 (strides 4 x 2), 4 mels, 3 speakers."""
    config = ml_collections.ConfigDict(
        dict(
            base=base,
            flow_layers=(3, 3),
            layers_per_cycle=3,
            kernel_size=2,
            residual_channels=8,
            gate_channels=16,
            skip_channels=8,
            n_mels=4,
            upsample_strides=(4, 2),
            upsample_kernel_multiple=2,
            num_speakers=3,
            speaker_embedding_dim=4,
            init_log_scale=-2.0,
            flow_log_scale_min=-7.0,
            flow_log_scale_max=3.0,
            output_init_scale=0.3,
            dtype="float32",
            remat=False,
        )
    )
    config.update(overrides)
    return config


def lpc_overrides(order=6):
    """Model fields for the student's synthesis filter (pwavenet.audio.lpc) on the 4-band mel of
    small_student_config: an 8 kHz mel of 32-point frames."""
    return dict(
        lpc_order=order,
        lpc_lag_window_hz=0.0,
        lpc_noise_floor=1e-3,
        lpc_mel=ml_collections.ConfigDict(
            dict(sample_rate=8000, n_fft=32, win_length=32, n_mels=4, fmin=0.0, fmax=4000.0)
        ),
    )


def random_params(module, *args, seed=1):
    """Parameters filled with numpy Gaussians (std 1/sqrt(fan-in) for matrices, 0.3 for
    vectors), as in test_wavenet: no zero biases, so every path is live and the flows' shifts
    and scales vary strongly with their inputs. `eval_shape` compiles nothing."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)["params"]
    rng = np.random.default_rng(seed)

    def fill(leaf):
        std = 1.0 / math.sqrt(leaf.shape[-2]) if len(leaf.shape) >= 2 else 0.3
        return jnp.asarray(rng.normal(0.0, std, leaf.shape), jnp.float32)

    return jax.tree.map(fill, shapes)
