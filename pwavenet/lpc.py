"""Linear prediction from the log-mel, for the WaveNet teacher (LPCNet-style).

With `model.lpc_order = p > 0` the teacher's per-step mean (the Gaussian's or logistic's
mean, each MoL component's mean) is an order-p linear prediction of x_t from its past,
sum_j a_j x_{t-1-j}, plus what the network outputs: the network only has to model the
excitation, not the spectral envelope. The coefficients are not learned; they are a fixed
function of the mel frame the sample belongs to:

  1. the log-mel frame is mapped back to a linear magnitude spectrum (each mel band's mean
     magnitude spread over the FFT bins it covers; bins no band covers copy the nearest one),
  2. squared to a power spectrum, with a noise floor `noise_floor` times its mean (keeps the
     autocorrelation matrix well conditioned, so the synthesis filter is stable),
  3. its inverse FFT gives the autocorrelation r_0..r_p, optionally multiplied by a Gaussian
     lag window of `lag_window_hz` (0: none),
  4. Levinson-Durbin solves the normal equations for a.

An order above the pitch period (p = 320 covers pitch down to 69 Hz at 22.05 kHz) with no
lag window keeps the harmonic structure the low mel bands resolve: the predictor then carries
the pitch, which a small network trained for minutes does not learn on its own (on the
embedded corpus: periodicity of generated voiced frames 0.2-0.3 without, about 0.55 with,
0.74 for the reference).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

Array = jax.Array


@functools.lru_cache(maxsize=8)
def mel_to_linear_matrix(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1): mel-band magnitudes -> an approximate linear magnitude
    spectrum. A flat spectrum of magnitude m gives mel band b the value m * width_b (the sum
    of its filter weights); the map divides by the width and averages the bands covering each
    bin by their weights, so a flat spectrum maps back to itself."""
    from pwavenet import audio

    weights, _ = audio._mel_matrix_and_window(sample_rate, n_fft, n_fft, n_mels, fmin, fmax)
    weights = np.asarray(weights, np.float64)  # (bins, mels)
    width = np.maximum(weights.sum(axis=0), 1e-12)
    cover = weights.sum(axis=1)  # (bins,)
    inverse = (weights / width[None, :]).T / np.maximum(cover, 1e-12)[None, :]
    # Bins outside every band (0 Hz, above fmax) copy the nearest covered bin: a cliff to
    # zero there would spend the predictor's poles on a notch.
    covered = np.flatnonzero(cover > 1e-3 * cover.max())
    for b in np.flatnonzero(cover <= 1e-3 * cover.max()):
        inverse[:, b] = inverse[:, covered[np.argmin(np.abs(covered - b))]]
    return inverse.astype(np.float32)


def levinson(r: Array, order: int) -> tuple[Array, Array]:
    """Levinson-Durbin: autocorrelations r (..., >= order + 1) -> (a (..., order), error (...)).

    a solves the normal equations sum_j a_j r_|i-j| = r_{i+1}, i = 0..order-1, so that
    sum_j a_j x_{t-1-j} is the least-squares prediction of x_t; error is the prediction error
    power. One `fori_loop` over the order (an unrolled loop compiles for minutes at 320).
    """
    r = r.astype(jnp.float32)
    j = jnp.arange(order)

    def body(i, state):
        a, err = state
        below = j < i
        r_lag = jnp.take(r, jnp.clip(i - j, 0, order), axis=-1)  # r[i - j]
        acc = jnp.take(r, i + 1, axis=-1) - jnp.sum(jnp.where(below, a * r_lag, 0.0), axis=-1)
        k = acc / err
        reversed_a = jnp.take(a, jnp.clip(i - 1 - j, 0, order - 1), axis=-1)  # a[i - 1 - j]
        a = jnp.where(below, a - k[..., None] * reversed_a, a)
        a = jnp.where(j == i, k[..., None], a)
        return a, err * (1.0 - jnp.square(k))

    a0 = jnp.zeros(r.shape[:-1] + (order,), jnp.float32)
    return lax.fori_loop(0, order, body, (a0, r[..., 0]))


def lpc_from_log_mel(log_mel: Array, config: Any) -> Array:
    """Per-frame predictor coefficients (..., frames, order) from log-mel frames.

    Args:
      log_mel: (..., frames, n_mels) as `pwavenet.audio.log_mel_spectrogram` computes them.
      config: the model config's fields lpc_order, lpc_lag_window_hz, lpc_noise_floor and
        lpc_mel (sample_rate, n_fft, n_mels, fmin, fmax: the mel definition to invert).
    """
    m = config.lpc_mel
    order = config.lpc_order
    inverse = jnp.asarray(mel_to_linear_matrix(m.sample_rate, m.n_fft, m.n_mels, m.fmin, m.fmax))
    magnitude = jnp.exp(log_mel.astype(jnp.float32)) @ inverse
    power = jnp.square(magnitude)
    power = power + config.lpc_noise_floor * jnp.mean(power, axis=-1, keepdims=True)
    r = jnp.fft.irfft(power, n=m.n_fft, axis=-1)[..., : order + 1]
    if config.lpc_lag_window_hz:
        lag = jnp.arange(order + 1, dtype=jnp.float32)
        r = r * jnp.exp(
            -0.5 * jnp.square(2 * jnp.pi * config.lpc_lag_window_hz * lag / m.sample_rate)
        )
    return levinson(r, order)[0]


def predict(x: Array, coefficients: Array) -> Array:
    """The prediction sum_j a[b, t, j] x[b, t - 1 - j] (zeros before the start): (B, T).

    Args:
      x: (B, T) signal.
      coefficients: (B, T, p) the predictor used at each step.
    """
    order = coefficients.shape[-1]
    length = x.shape[1]
    padded = jnp.pad(x.astype(jnp.float32), ((0, 0), (order, 0)))
    past = jnp.stack(
        [padded[:, order - 1 - j : order - 1 - j + length] for j in range(order)], axis=-1
    )
    return jnp.einsum("btp,btp->bt", past, coefficients.astype(jnp.float32))
