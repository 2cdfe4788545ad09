"""Linear prediction from the log-mel (pwavenet.lpc) and the WaveNet that adds it to its mean."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
import scipy.signal

from configs.teacher import get_config
from pwavenet import audio
from pwavenet import lpc
from pwavenet import wavenet


def _autocorrelation(x, lags):
    return np.array([np.dot(x[: len(x) - k], x[k:]) for k in range(lags + 1)]) / len(x)


@pytest.mark.parametrize("order", [1, 5, 40])
def test_levinson_solves_the_normal_equations_like_scipy(order):
    rng = np.random.default_rng(order)
    # A coloured signal (white noise through a random 2-pole resonator), so r is not trivial.
    e = rng.standard_normal(4000)
    x = np.zeros_like(e)
    for t in range(2, len(e)):
        x[t] = e[t] + 1.6 * x[t - 1] - 0.8 * x[t - 2]
    r = _autocorrelation(x, order)
    a, error = lpc.levinson(jnp.asarray(r, jnp.float32), order)
    expected = scipy.linalg.solve_toeplitz(r[:order], r[1 : order + 1])
    np.testing.assert_allclose(a, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(error, r[0] - expected @ r[1 : order + 1], rtol=2e-3)
    # Batched: each row solved on its own.
    batch = jnp.asarray(np.stack([r, r * 2.0]), jnp.float32)
    a2, _ = lpc.levinson(batch, order)
    np.testing.assert_allclose(a2[0], a2[1], rtol=1e-5, atol=1e-6)


def test_mel_to_linear_maps_a_flat_spectrum_back_to_itself():
    m = get_config("espeak").mel
    weights, _ = audio._mel_matrix_and_window(
        m.sample_rate, m.n_fft, m.n_fft, m.n_mels, m.fmin, m.fmax
    )
    flat = 0.37 * np.ones(m.n_fft // 2 + 1)
    mel = flat @ np.asarray(weights, np.float64)
    inverse = lpc.mel_to_linear_matrix(m.sample_rate, m.n_fft, m.n_mels, m.fmin, m.fmax)
    np.testing.assert_allclose(mel @ inverse, flat, rtol=1e-4)


def _lpc_config(order, lag_window_hz=0.0):
    m = get_config("espeak").mel
    c = ml_collections.ConfigDict()
    c.lpc_order, c.lpc_lag_window_hz, c.lpc_noise_floor = order, lag_window_hz, 1e-4
    c.lpc_mel = {k: m[k] for k in ("sample_rate", "n_fft", "n_mels", "fmin", "fmax")}
    return c, m


def _formants(x, rate=22050):
    """x through two resonators (700 and 1200 Hz): a vowel-like spectral envelope."""
    for freq, bandwidth in ((700.0, 100.0), (1200.0, 150.0)):
        radius = math.exp(-math.pi * bandwidth / rate)
        x = scipy.signal.lfilter(
            [1.0], [1.0, -2 * radius * math.cos(2 * math.pi * freq / rate), radius**2], x
        )
    return x


def _residual_ratio(x, config, mel_config):
    """Power of x - prediction over the power of x, away from the ends."""
    x = (0.3 * x / np.abs(x).max()).astype(np.float32)
    log_mel = audio.log_mel_spectrogram(x, mel_config)
    a = lpc.lpc_from_log_mel(jnp.asarray(log_mel)[None], config)
    per_sample = jnp.repeat(a, mel_config.hop_length, axis=1)[:, : len(x)]
    prediction = np.asarray(lpc.predict(jnp.asarray(x)[None], per_sample))[0]
    interior = slice(2048, len(x) - 2048)
    residual = x[interior] - prediction[interior]
    return float(np.mean(residual**2) / np.mean(x[interior] ** 2))


def test_predictors_from_the_mel_capture_the_envelope_and_the_pitch():
    """Noise with a formant envelope: a low order computed from its mel predicts nearly all
    of it. A periodic signal with a flat envelope (a random 6.7 ms waveform repeated, pitch
    150 Hz): a low order predicts nothing, an order above the period predicts a good part,
    from the harmonics the mel's low bands resolve. White noise: nothing to predict."""
    rng = np.random.default_rng(0)
    n = 43 * 256
    low, mel_config = _lpc_config(16, lag_window_hz=60.0)
    high, _ = _lpc_config(320)
    shaped = _formants(rng.standard_normal(n))
    assert _residual_ratio(shaped, low, mel_config) < 0.01
    periodic = np.tile(rng.standard_normal(147), n // 147 + 1)[:n]
    assert _residual_ratio(periodic, low, mel_config) > 0.95
    assert _residual_ratio(periodic, high, mel_config) < 0.85
    white = rng.standard_normal(n)
    assert _residual_ratio(white, low, mel_config) > 0.9
    assert _residual_ratio(white, high, mel_config) > 0.8


# --------------------------------------------------------------------- in the WaveNet

COND = dict(n_mels=3, upsample_strides=(2, 2), num_speakers=3, speaker_embedding_dim=2)


def _model(output="gaussian", order=6, **overrides):
    config = get_config("tiny").model.copy_and_resolve_references()
    config.update(COND, output=output, log_scale_min=-7.0, lpc_order=order, **overrides)
    config.lpc_mel.n_mels = config.n_mels
    return wavenet.WaveNet(config)


def _inputs(model, batch=2, frames=6, seed=0):
    rng = np.random.default_rng(seed)
    length = frames * model.hop_length
    x = jnp.asarray(rng.uniform(-0.5, 0.5, (batch, length)), jnp.float32)
    mel = jnp.asarray(rng.normal(-2.0, 1.0, (batch, frames, model.config.n_mels)), jnp.float32)
    speaker = jnp.asarray(rng.integers(0, 3, batch), jnp.int32)
    return x, mel, speaker


@pytest.mark.parametrize("output", ["gaussian", "mol"])
def test_the_prediction_is_added_to_every_mean_and_nothing_else(output):
    model, plain = _model(output), _model(output, order=0)
    x, mel, speaker = _inputs(model)
    params = jax.jit(plain.init)(jax.random.key(0), x, mel, speaker)["params"]
    with_lpc = model.apply({"params": params}, x, mel, speaker)
    without = plain.apply({"params": params}, x, mel, speaker)
    a = np.repeat(np.asarray(model.apply({}, mel, method=model.lpc)), model.hop_length, axis=1)
    # The prediction recomputed with numpy: sum_j a_j x_{t-1-j}, zeros before the start.
    xs = np.asarray(x, np.float64)
    expected = np.zeros_like(xs)
    for t in range(xs.shape[1]):
        for j in range(a.shape[-1]):
            if t - 1 - j >= 0:
                expected[:, t] += a[:, t, j] * xs[:, t - 1 - j]
    diff = np.asarray(with_lpc - without)
    means = slice(0, 1) if output == "gaussian" else slice(3, 6)  # tiny MoL: 3 components
    np.testing.assert_allclose(
        diff[..., means], expected[..., None].repeat(diff[..., means].shape[-1], -1), atol=1e-5
    )
    rest = np.delete(diff, np.arange(diff.shape[-1])[means], axis=-1)
    assert np.all(rest == 0.0)


def test_receptive_field_grows_to_the_order_and_stays_causal():
    model = _model(order=40)  # the tiny network alone sees 15 samples
    assert model.receptive_field == 40
    x, mel, speaker = _inputs(model, batch=1, frames=16)
    params = jax.jit(model.init)(jax.random.key(0), x, mel, speaker)["params"]
    last = lambda x: model.apply({"params": params}, x, mel, speaker)[0, -1, 0]
    grad = np.asarray(jax.jit(jax.grad(last))(x))[0]
    length = x.shape[1]
    support = np.flatnonzero(grad != 0.0)
    np.testing.assert_array_equal(support, np.arange(length - 1 - 40, length - 1))


@pytest.mark.parametrize("output", ["gaussian", "mol"])
def test_cached_generation_with_lpc_reproduces_teacher_forcing(output):
    model = _model(output)
    x, mel, speaker = _inputs(model)
    params = jax.jit(model.init)(jax.random.key(0), x, mel, speaker)["params"]
    samples, step_params = wavenet.sample_with_params(
        model, params, jax.random.key(3), mel=mel, speaker=speaker
    )
    teacher_forced = jax.jit(model.apply)({"params": params}, samples, mel, speaker)
    np.testing.assert_allclose(step_params, teacher_forced, rtol=1e-4, atol=1e-4)


def test_lpc_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="mulaw"):
        _model("mulaw")
    with pytest.raises(ValueError, match="lpc_mel.n_mels"):
        config = get_config("tiny").model.copy_and_resolve_references()
        config.update(COND, lpc_order=4)
        wavenet.WaveNet(config)
