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

The student (pwavenet.models.iaf) uses the same predictor the other way round:
`all_pole_filter` is x_t = u_t + sum_j a_j x_{t-1-j}, the exact inverse of `predict`, driven
by an excitation scaled by `excitation_log_gain`, the residual level the frame's spectrum
implies (on the embedded corpus the teacher's scale is about 0.8 of it, the real residual's
RMS about 0.77).

Every real FFT here goes through `_rfft`, `_irfft` and `_spectrum_product`: jnp.fft by
default; inside `fft_as_matmul()` (a trace-time choice, made by the ONNX export, whose
converter has neither FFTs nor complex numbers) the same transforms as matmuls with constant
float32 cos/sin DFT matrices, a spectrum then being real (..., 2 * bins): real parts, then
imaginary parts.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pwavenet import audio

Array = jax.Array

_FFT_AS_MATMUL = contextvars.ContextVar("pwavenet_lpc_fft_as_matmul", default=False)


@contextlib.contextmanager
def fft_as_matmul():
    """Within it, functions traced (or run) here compute their real FFTs as exact DFT matmuls
    (module docstring): for converters without FFTs (ONNX). Outside it, jnp.fft, unchanged.

    jax caches a jitted function's trace by the function and its arguments' shapes, not by
    this choice: trace a function inside that was not traced outside (and do not call inside
    what will run outside), or the cached program of the other kind is reused."""
    token = _FFT_AS_MATMUL.set(True)
    try:
        yield
    finally:
        _FFT_AS_MATMUL.reset(token)


@functools.lru_cache(maxsize=32)
def _dft_matrices(n: int, outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """(forward (n, 2 * bins), inverse (2 * bins, outputs)) float32 for real FFTs of n points,
    bins = n // 2 + 1: x @ forward is rfft(x, n) as [real, imag]; s @ inverse is
    irfft(s, n)[:outputs] (the imaginary parts of bin 0 and, for even n, bin n / 2 ignored,
    as numpy's irfft does). Angles from k * t mod n in integers, then float64."""
    bins = n // 2 + 1
    k = np.arange(bins)
    t = np.arange(n)
    angle = 2 * np.pi * (np.outer(t, k) % n) / n  # (n, bins)
    forward = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)
    # irfft: x_t = (1/n) [X_0 + 2 sum_inner (Re X_k cos - Im X_k sin) + X_{n/2} (-1)^t].
    weight = np.full(bins, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    sin_weight = weight.copy()
    sin_weight[0] = 0.0
    if n % 2 == 0:
        sin_weight[-1] = 0.0
    inverse = np.concatenate(
        [(weight[:, None] * np.cos(angle.T)), -(sin_weight[:, None] * np.sin(angle.T))], axis=0
    )[:, :outputs] / n
    return forward.astype(np.float32), inverse.astype(np.float32)


def _dft_matmul(x: Array, matrix: np.ndarray) -> Array:
    """x @ matrix (float32) summed in blocks of about sqrt(k) of the k terms, then over the
    blocks: a runtime that sums a matmul's terms one after another (onnxruntime's Einsum)
    would otherwise lose ~k ulps on the all-positive power spectra `analyze` transforms,
    which Levinson's recursion amplifies by the normal equations' condition number."""
    k = matrix.shape[0]
    width = max(1, int(np.ceil(np.sqrt(k))))
    blocks = -(-k // width)
    matrix = np.pad(matrix, ((0, blocks * width - k), (0, 0))).reshape(blocks, width, -1)
    x = jnp.pad(x.astype(jnp.float32), [(0, 0)] * (x.ndim - 1) + [(0, blocks * width - k)])
    x = x.reshape(x.shape[:-1] + (blocks, width))
    partial = jnp.einsum(
        "...bw,bwo->...bo", x, jnp.asarray(matrix), precision=lax.Precision.HIGHEST
    )
    return jnp.sum(partial, axis=-2)


def _rfft(x: Array, n: int | None = None) -> Array:
    """rfft(x, n) on the last axis: complex (..., bins), or inside `fft_as_matmul` real
    (..., 2 * bins) [real parts, imaginary parts]."""
    if not _FFT_AS_MATMUL.get():
        return jnp.fft.rfft(x, n=n, axis=-1)
    n = x.shape[-1] if n is None else n
    forward, _ = _dft_matrices(n, n)
    x = x[..., :n]
    # Zero padding to n adds nothing: only the rows of the samples given (a predictor's p + 1).
    return _dft_matmul(x, forward[: x.shape[-1]])


def _irfft(spectrum: Array, n: int, outputs: int | None = None) -> Array:
    """irfft(spectrum, n)[..., :outputs] on the last axis, of an `_rfft` spectrum or of real
    (..., bins) values (a spectrum with zero imaginary parts)."""
    if not _FFT_AS_MATMUL.get():
        return jnp.fft.irfft(spectrum, n=n, axis=-1)[..., :outputs]
    outputs = n if outputs is None else outputs
    _, inverse = _dft_matrices(n, outputs)
    bins = n // 2 + 1
    if spectrum.shape[-1] == bins:
        inverse = inverse[:bins]  # real values: the real parts' rows only
    elif spectrum.shape[-1] != 2 * bins:
        raise ValueError(f"a spectrum of {spectrum.shape[-1]} values is not one of n={n} points")
    return _dft_matmul(spectrum, inverse)


def _spectrum_product(a: Array, b: Array) -> Array:
    """The bin-wise product of two `_rfft` spectra (a convolution's spectrum)."""
    if not _FFT_AS_MATMUL.get():
        return a * b
    a_re, a_im = jnp.split(a, 2, axis=-1)
    b_re, b_im = jnp.split(b, 2, axis=-1)
    return jnp.concatenate([a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re], axis=-1)


def _spectrum_power(spectrum: Array) -> Array:
    """|X_k|^2 (..., bins) of an `_rfft` spectrum."""
    if not _FFT_AS_MATMUL.get():
        return jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    real, imag = jnp.split(spectrum, 2, axis=-1)
    return jnp.square(real) + jnp.square(imag)


@functools.lru_cache(maxsize=8)
def mel_to_linear_matrix(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1): mel-band magnitudes -> an approximate linear magnitude
    spectrum. A flat spectrum of magnitude m gives mel band b the value m * width_b (the sum
    of its filter weights); the map divides by the width and averages the bands covering each
    bin by their weights, so a flat spectrum maps back to itself."""

    weights, _ = audio.htk_filterbank_and_window(sample_rate, n_fft, n_fft, n_mels, fmin, fmax)
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


def levinson(r: Array, order: int, block: int = 32) -> tuple[Array, Array]:
    """Levinson-Durbin: autocorrelations r (..., >= order + 1) -> (a (..., order), error (...)).

    a solves the normal equations sum_j a_j r_|i-j| = r_{i+1}, i = 0..order-1, so that
    sum_j a_j x_{t-1-j} is the least-squares prediction of x_t; error is the prediction error
    power. One `fori_loop` step per order (an unrolled loop compiles for minutes at 320), every
    operation across all frames at once, with the lag axis leading so that the reversed
    sequences a step needs are contiguous slices of zero-padded reversals. Orders run in
    blocks of `block`, each working on arrays only as long as its last order (a_j = 0 for
    j >= i), and the new coefficient enters through a one-hot row rather than a select: both
    cut the work per order (docs/benchmarks.md has the measurements).

    In exact arithmetic every reflection coefficient k has |k| < 1 for a positive definite r,
    and then 1 / A is stable. In float32 a spectrum with very sharp peaks (on the embedded
    corpus about one frame in 2,500 at order 320 with the -40 dB floor) can reach |k| >= 1 at
    some order, after which the predictor is garbage and its synthesis filter explodes. Such a
    frame keeps the predictor of the last order before the breakdown.
    """
    batch_shape = r.shape[:-1]
    r = r[..., : order + 1].astype(jnp.float32).reshape(-1, order + 1).T  # (lags, frames)
    frames = r.shape[1]
    a = jnp.zeros((0, frames), jnp.float32)
    err, stable = r[0], jnp.ones(frames, bool)
    for start in range(0, order, block):
        size = min(order, start + block)  # orders start .. size - 1 need a_0 .. a_{size-1}
        a = jnp.pad(a, ((0, size - a.shape[0]), (0, 0)))
        zeros = jnp.zeros((size, frames), jnp.float32)
        # r_reversed[size - i + j] = r[i - j] for j <= i, and 0 for j > i.
        r_reversed = jnp.concatenate([jnp.flip(r[: size + 1], axis=0), zeros], axis=0)
        one_hot = jnp.eye(size, dtype=jnp.float32)

        def body(i, state, size=size, zeros=zeros, r_reversed=r_reversed, one_hot=one_hot):
            a, err, stable = state  # a_j = 0 for j >= i
            r_lag = lax.dynamic_slice_in_dim(r_reversed, size - i, size, axis=0)
            acc = lax.dynamic_index_in_dim(r, i + 1, axis=0, keepdims=False)
            k = (acc - jnp.sum(a * r_lag, axis=0)) / err
            stable = stable & (jnp.abs(k) < 1.0)
            k = jnp.where(stable, k, 0.0)
            # a_new_j = a_j - k a_{i-1-j} for j < i, and k at j = i.
            a_reversed = jnp.concatenate([jnp.flip(a, axis=0), zeros], axis=0)
            shifted = lax.dynamic_slice_in_dim(a_reversed, size - i, size, axis=0)
            e_i = lax.dynamic_index_in_dim(one_hot, i, axis=0, keepdims=False)[:, None]
            return a - k * (shifted - e_i), err * (1.0 - jnp.square(k)), stable

        a, err, stable = lax.fori_loop(start, size, body, (a, err, stable), unroll=4)
    return a.T.reshape(batch_shape + (order,)), err.reshape(batch_shape)


def lpc_from_log_mel(log_mel: Array, config: Any) -> Array:
    """Per-frame predictor coefficients (..., frames, order) from log-mel frames.

    Args:
      log_mel: (..., frames, n_mels) as `pwavenet.audio.log_mel_spectrogram` computes them.
      config: the model config's fields lpc_order, lpc_lag_window_hz, lpc_noise_floor and
        lpc_mel (sample_rate, n_fft, n_mels, fmin, fmax: the mel definition to invert).
    """
    return analyze(log_mel, config)[0]


def power_spectrum(log_mel: Array, config: Any) -> Array:
    """The power spectrum (..., frames, n_fft // 2 + 1) the mel frames stand for (steps 1-2
    of the module docstring, without the noise floor)."""
    m = config.lpc_mel
    inverse = jnp.asarray(mel_to_linear_matrix(m.sample_rate, m.n_fft, m.n_mels, m.fmin, m.fmax))
    return jnp.square(jnp.exp(log_mel.astype(jnp.float32)) @ inverse)


def analyze(log_mel: Array, config: Any) -> tuple[Array, Array]:
    """(coefficients (..., frames, order), power spectrum (..., frames, bins)) of log-mel
    frames: `lpc_from_log_mel`'s predictor and `power_spectrum`."""
    m = config.lpc_mel
    order = config.lpc_order
    spectrum = power_spectrum(log_mel, config)
    power = spectrum + config.lpc_noise_floor * jnp.mean(spectrum, axis=-1, keepdims=True)
    r = _irfft(power, m.n_fft, order + 1)
    if config.lpc_lag_window_hz:
        lag = jnp.arange(order + 1, dtype=jnp.float32)
        r = r * jnp.exp(
            -0.5 * jnp.square(2 * jnp.pi * config.lpc_lag_window_hz * lag / m.sample_rate)
        )
    return levinson(r, order)[0], spectrum


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


# ----------------------------------------------------------------------------- synthesis


def impulse_response(coefficients: Array, taps: int, block: int = 32) -> Array:
    """h_1..h_taps (..., taps) of the synthesis filter 1 / A(z), A(z) = 1 - sum_j a_j z^-(j+1)
    (h_0 = 1 is left out): the recursion h_n = sum_j a_j h_{n-1-j}, one `fori_loop` step per
    tap (exact, unlike an inverse FFT of 1 / A, whose time aliasing depends on how fast the
    response decays); time leads, as in `levinson`. Taps run in blocks of `block`, each
    reading only the coefficients its taps can reach (h_{n-1-j} = 0 for j >= n) instead of all
    of them at every tap."""
    batch_shape, order = coefficients.shape[:-1], coefficients.shape[-1]
    a_reversed = jnp.flip(coefficients.astype(jnp.float32).reshape(-1, order).T, axis=0)
    # buffer[order + n] = h_n, zeros before h_0: h_{n-1}, ..., h_{n-order} is a slice.
    buffer = jnp.zeros((order + taps + 1, a_reversed.shape[1]), jnp.float32)
    buffer = buffer.at[order].set(1.0)
    for start in range(1, taps + 1, block):
        stop = min(taps + 1, start + block)
        size = min(order, stop - 1)  # taps n < stop read a_j for j < n only

        def body(n, buffer, size=size, a_part=a_reversed[order - size :]):
            past = lax.dynamic_slice_in_dim(buffer, n + order - size, size, axis=0)
            value = jnp.sum(a_part * past, axis=0, keepdims=True)
            return lax.dynamic_update_slice_in_dim(buffer, value, order + n, axis=0)

        buffer = lax.fori_loop(start, stop, body, buffer, unroll=4)
    h = buffer[order + 1 :]
    return h.T.reshape(batch_shape + (taps,))


def excitation_log_gain(coefficients: Array, power: Array, config: Any) -> Array:
    """log g per frame: g^2 the per-sample power of the residual x_t - prediction_t that the
    predictor leaves on a signal with the frame's power spectrum (no noise floor),

      g^2 = (4 / pi) mean over the FFT circle of P(w) |A(w)|^2 / sum(window^2).

    P is the spectrum of one windowed frame, so a white signal of variance s^2 has mean P =
    s^2 sum(window^2); and the mel averages magnitudes, which for noise underestimates the
    power by (E|X|)^2 / E|X|^2 = pi / 4 (Rayleigh magnitudes). (Levinson's error power would
    include the noise floor, which dominates it for spectra with deep valleys.)
    """

    m = config.lpc_mel
    _, window = audio.htk_filterbank_and_window(
        m.sample_rate, m.n_fft, m.get("win_length", m.n_fft), m.n_mels, m.fmin, m.fmax
    )
    energy = float(np.sum(np.square(window.astype(np.float64))))
    a = jnp.concatenate(
        [jnp.ones(coefficients.shape[:-1] + (1,), jnp.float32), -coefficients.astype(jnp.float32)],
        axis=-1,
    )
    response = _rfft(a, m.n_fft)
    bins = m.n_fft // 2 + 1
    # Each inner bin stands for itself and its mirror image on the circle.
    weight = np.full(bins, 2.0)
    weight[0] = 1.0
    if m.n_fft % 2 == 0:
        weight[-1] = 1.0
    residual = (
        jnp.sum(weight * power * _spectrum_power(response), axis=-1)
        / m.n_fft
    )
    return 0.5 * jnp.log(jnp.maximum(residual, 1e-30) * (4.0 / np.pi) / energy)


class SynthesisPlan(NamedTuple):
    """What `all_pole_filter` needs from the predictors alone (not from the excitation), so that it
    can be computed ahead or beside the excitation: per frame, the spectra of the impulse
    response's taps 1 .. hop - 1 and of the predictor, each (B, frames, bins)."""

    h_spectrum: Array
    a_spectrum: Array


def synthesis_plan(coefficients: Array, hop: int) -> SynthesisPlan:
    """The `SynthesisPlan` of predictors (B, frames, p) for frames of `hop` samples."""
    order = coefficients.shape[-1]
    a = coefficients.astype(jnp.float32)
    size = 2 * hop  # linear convolution of hop samples with hop taps, no wrap-around
    h = jnp.pad(impulse_response(a, hop - 1), ((0, 0), (0, 0), (1, size - hop)))
    span = order + hop  # the state and the frame; prediction outputs at [order, span) do not wrap
    return SynthesisPlan(
        h_spectrum=_rfft(h),  # taps 1 .. hop - 1 (h_0 is added separately)
        a_spectrum=_rfft(jnp.pad(a, ((0, 0), (0, 0), (1, span - order - 1)))),
    )


def all_pole_filter(
    u: Array,
    coefficients: Array,
    hop: int,
    past: Array | None = None,
    plan: SynthesisPlan | None = None,
) -> tuple[Array, Array]:
    """All-pole synthesis, the exact inverse of `predict`: x_t = u_t + sum_j a_j x_{t-1-j}
    with a = coefficients[b, t // hop], so that x - predict(x) = u.

    Args:
      u: (B, frames * hop) the excitation.
      coefficients: (B, frames, p) each frame's predictor.
      past: (B, p) x_{-p}, ..., x_{-1} before the start (zeros if None): the state a chunk
        continues from.
      plan: `synthesis_plan(coefficients, hop)` if already computed.

    Returns:
      (x (B, frames * hop), its last p samples: the state the next chunk continues from).

    Frame f's output is the frame's impulse response h (h_0 = 1) convolved with u plus the
    part of the prediction that reads samples before the frame, v_n = sum_{j >= n} a_j
    x_{n-1-j}: x_f = h * (u_f + v_f), exact because h is only needed up to hop - 1 taps.
    h * u_f runs for all frames at once; v_f needs frame f - 1's output, so the frames run
    in one `lax.scan` (T / hop steps, each a few FFTs of about p + hop points). Within a
    frame the FFTs spread float32 rounding (~1e-7 relative) of every sample over the frame.
    """
    batch, frames, order = coefficients.shape
    if plan is None:
        plan = synthesis_plan(coefficients, hop)
    u = u.astype(jnp.float32).reshape(batch, frames, hop)
    size, span = 2 * hop, order + hop
    zero_state = u + _irfft(_spectrum_product(_rfft(u, size), plan.h_spectrum), size, hop)

    def frame_step(state, inputs):
        zero_state_f, a_f, h_f = inputs
        v = _irfft(_spectrum_product(_rfft(jnp.pad(state, ((0, 0), (0, hop))), span), a_f), span)
        v = v[:, order:]
        x_f = zero_state_f + v + _irfft(_spectrum_product(_rfft(v, size), h_f), size, hop)
        state = jnp.concatenate([state, x_f], axis=-1)[:, -order:]
        return state, x_f

    if past is None:
        past = jnp.zeros((batch, order), jnp.float32)
    inputs = tuple(jnp.swapaxes(v, 0, 1) for v in (zero_state, plan.a_spectrum, plan.h_spectrum))
    # Unrolling needs a known frame count; a length-polymorphic export (pwavenet.jobs.export)
    # has none.
    unroll = 2 if isinstance(frames, int) else 1
    past, x = lax.scan(frame_step, past.astype(jnp.float32), inputs, unroll=unroll)
    return jnp.swapaxes(x, 0, 1).reshape(batch, frames * hop), past


def synthesis_filters(log_mel: Array, config: Any) -> tuple[Array, Array]:
    """(coefficients (..., frames, p), log_gain (..., frames)): each frame's predictor (as the
    teacher computes it) and excitation level (`excitation_log_gain`), for the student's last
    layer x = all_pole_filter(g * e)."""
    a, power = analyze(log_mel, config)
    return a, excitation_log_gain(a, power, config)
