"""Linear prediction from the log-mel (pwavenet.audio.lpc) and the WaveNet that adds it to its mean."""

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
from pwavenet.audio import lpc
from pwavenet.models import generation, wavenet
import vocoder_helpers


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


def test_levinson_keeps_the_filter_stable_where_float32_breaks_down():
    """A line spectrum (harmonics of 150 Hz, 2 Hz wide, -40 dB floor) drives float32
    Levinson at order 320 to a reflection coefficient >= 1. The predictor then keeps the last
    stable order: every root of A inside the unit circle (numpy, float64, to 1e-6) and an
    impulse response that does not grow (unguarded, the roots reach 1.0026 and the response
    grows 200-fold by 4096 taps). Wider lines never break down and are solved as before
    (the scipy agreement above)."""
    n, rate = 1024, 22050
    freqs = np.arange(n // 2 + 1) * rate / n
    rng = np.random.default_rng(0)
    power = sum(
        (1 + 0.5 * rng.random()) * np.exp(-0.5 * np.square((freqs - f0) / 2.0))
        for f0 in np.arange(150.0, 8000.0, 150.0)
    )
    r = np.fft.irfft(power + 1e-4 * power.mean(), n=n)[:321]
    a, error = jax.jit(lpc.levinson, static_argnums=1)(jnp.asarray(r, jnp.float32), 320)
    assert np.all(np.isfinite(np.asarray(a))) and float(error) > 0
    # The guard acted: the orders past the breakdown keep a_j = 0 exactly.
    assert np.asarray(a)[-1] == 0.0
    roots = np.abs(np.roots(np.concatenate([[1.0], -np.asarray(a, np.float64)])))
    assert roots.max() < 1.0 + 1e-6, roots.max()
    # All 4096 taps in one block: the same recursion as the default blocks of 32 (checked
    # against scipy below), without 128 separately compiled loops.
    h = np.abs(np.asarray(lpc.impulse_response(a, 4096, block=4096)))
    assert h[2048:].max() <= h[:2048].max()


def test_mel_to_linear_maps_a_flat_spectrum_back_to_itself():
    m = get_config("espeak").mel
    weights, _ = audio.htk_filterbank_and_window(
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


def _numpy_prediction(x, a, hop):
    """sum_j a[t // hop, j] x[t - 1 - j] (zeros before the start) in float64, for x (T,) and
    per-frame predictors a (frames, p)."""
    order = a.shape[-1]
    padded = np.concatenate([np.zeros(order), np.asarray(x, np.float64)])
    # Row t holds x[t - 1], x[t - 2], ..., x[t - order].
    past = np.lib.stride_tricks.sliding_window_view(padded, order)[: len(x), ::-1]
    per_sample = np.repeat(np.asarray(a, np.float64), hop, axis=0)[: len(x)]
    return np.einsum("tp,tp->t", past, per_sample)


def _residual_ratio_fn(config, mel_config):
    """x -> power of x - prediction over the power of x, away from the ends; the predictor
    compiled once for the config, the prediction with numpy."""
    predictor = jax.jit(lambda log_mel: lpc.lpc_from_log_mel(log_mel, config))

    def ratio(x):
        x = (0.3 * x / np.abs(x).max()).astype(np.float32)
        log_mel = audio.log_mel_spectrogram(x, mel_config)
        a = predictor(jnp.asarray(log_mel))
        predicted = _numpy_prediction(x, a, mel_config.hop_length)
        interior = slice(2048, len(x) - 2048)
        residual = x[interior] - predicted[interior]
        return float(np.mean(residual**2) / np.mean(x[interior] ** 2))

    return ratio


def test_predictors_from_the_mel_capture_the_envelope_and_the_pitch():
    """Noise with a formant envelope: a low order computed from its mel predicts nearly all
    of it. A periodic signal with a flat envelope (a random 6.7 ms waveform repeated, pitch
    150 Hz): a low order predicts nothing, an order above the period predicts a good part,
    from the harmonics the mel's low bands resolve. White noise: nothing to predict."""
    rng = np.random.default_rng(0)
    n = 43 * 256
    low, mel_config = _lpc_config(16, lag_window_hz=60.0)
    high, _ = _lpc_config(320)
    low, high = _residual_ratio_fn(low, mel_config), _residual_ratio_fn(high, mel_config)
    shaped = _formants(rng.standard_normal(n))
    assert low(shaped) < 0.01
    periodic = np.tile(rng.standard_normal(147), n // 147 + 1)[:n]
    assert low(periodic) > 0.95
    assert high(periodic) < 0.85
    white = rng.standard_normal(n)
    assert low(white) > 0.9
    assert high(white) > 0.8


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
    rng = jax.random.key(3)
    samples = generation.generate(model, params, rng, mel=mel, speaker=speaker)
    # Each sample is the family's draw, with its frame's noise (item b's frame f from
    # fold_in(fold_in(rng, b), f)), from the parameters teacher forcing gives it: the
    # prediction included.
    teacher_forced = jax.jit(model.apply)({"params": params}, samples, mel, speaker)
    batch, frames = mel.shape[:2]
    redrawn = vocoder_helpers.redrawn(model, teacher_forced, rng, frames, batch)
    np.testing.assert_allclose(samples, redrawn, atol=1e-4)
    assert np.std(np.asarray(samples)) > 0


def test_lpc_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="mulaw"):
        _model("mulaw")
    with pytest.raises(ValueError, match="lpc_mel.n_mels"):
        config = get_config("tiny").model.copy_and_resolve_references()
        config.update(COND, lpc_order=4)
        wavenet.WaveNet(config)


# --------------------------------------------------------------------- the student's filter


def _synthesis_config(order):
    config, mel_config = _lpc_config(order)
    config.lpc_mel["win_length"] = mel_config.win_length
    return config, mel_config


@pytest.mark.parametrize("order", [16, 320])
def test_impulse_response_is_scipys_all_pole_filter(order):
    """lpc.impulse_response (its taps run in blocks, here past the order) against
    scipy.signal.lfilter's impulse response of the same predictor, for the predictors of a
    formant-shaped noise's frames."""
    rng = np.random.default_rng(1)
    config, mel_config = _synthesis_config(order)
    x = _formants(rng.standard_normal(12 * 256))
    log_mel = audio.log_mel_spectrogram((0.3 * x / np.abs(x).max()).astype(np.float32), mel_config)
    a = jax.jit(lambda m: lpc.lpc_from_log_mel(m, config))(jnp.asarray(log_mel))
    a = np.asarray(a, np.float64)
    h = np.asarray(
        jax.jit(lpc.impulse_response, static_argnums=1)(jnp.asarray(a, jnp.float32), 600)
    )
    impulse = np.zeros(601)
    impulse[0] = 1.0
    for frame in (2, 7):
        expected = scipy.signal.lfilter([1.0], np.concatenate([[1.0], -a[frame]]), impulse)
        assert abs(expected[0] - 1.0) < 1e-12
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(h[frame], expected[1:], atol=2e-4 * scale)


@pytest.mark.parametrize("order,hop", [(3, 8), (8, 8), (13, 4), (5, 1)])
def test_all_pole_filter_is_the_recursion_and_carries_its_state(order, hop):
    """Frame-wise synthesis against x_t = u_t + sum_j a_j x_{t-1-j} written out with numpy
    loops, the predictor switching every hop, for orders below, equal to and above the hop;
    then the same signal made in two calls, the second continuing from the first's state."""
    rng = np.random.default_rng(order)
    batch, frames = 2, 6
    u = rng.standard_normal((batch, frames * hop))
    # Stable predictors: sum |a_j| < 1 keeps 1 / A free of poles on or outside the circle.
    a = rng.uniform(-1.0, 1.0, (batch, frames, order))
    a *= 0.9 / np.sum(np.abs(a), axis=-1, keepdims=True)
    past = rng.standard_normal((batch, order))
    x, state = lpc.all_pole_filter(
        jnp.asarray(u, jnp.float32),
        jnp.asarray(a, jnp.float32),
        hop,
        jnp.asarray(past, jnp.float32),
    )
    expected = np.concatenate([past, np.zeros_like(u)], axis=1)
    for t in range(frames * hop):
        history = expected[:, order + t - 1 :: -1][:, :order] if t + order else None
        expected[:, order + t] = u[:, t] + np.sum(a[:, t // hop] * history, axis=-1)
    np.testing.assert_allclose(x, expected[:, order:], atol=2e-5)
    np.testing.assert_allclose(state, expected[:, -order:], atol=2e-5)

    half = frames // 2 * hop
    first, mid = lpc.all_pole_filter(
        jnp.asarray(u[:, :half], jnp.float32),
        jnp.asarray(a[:, : frames // 2], jnp.float32),
        hop,
        jnp.asarray(past, jnp.float32),
    )
    second, _ = lpc.all_pole_filter(
        jnp.asarray(u[:, half:], jnp.float32),
        jnp.asarray(a[:, frames // 2 :], jnp.float32),
        hop,
        mid,
    )
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), x, atol=2e-5)


def test_all_pole_filter_inverts_the_teachers_prediction_on_speech_like_predictors():
    """With the order-320 predictors of a vowel-like mel (pitched, two formants: poles close to
    the unit circle), x = all_pole_filter(u) and then x - predict(x), the residual the teacher's
    mean leaves, gives back u: the student's last layer is the exact inverse of the teacher's
    linear prediction."""
    rng = np.random.default_rng(3)
    config, mel_config = _synthesis_config(320)
    frames, hop = 24, mel_config.hop_length
    periodic = np.tile(rng.standard_normal(147), 80)[: frames * hop + 4096]
    x = _formants(periodic + 0.1 * rng.standard_normal(periodic.shape))[4096:]
    log_mel = audio.log_mel_spectrogram((0.3 * x / np.abs(x).max()).astype(np.float32), mel_config)
    a, log_gain = jax.jit(lambda m: lpc.synthesis_filters(m, config))(jnp.asarray(log_mel)[None])
    u = rng.standard_normal((1, frames * hop)) * np.repeat(np.exp(np.asarray(log_gain)), hop, 1)
    u = jnp.asarray(u, jnp.float32)
    out, _ = jax.jit(lpc.all_pole_filter, static_argnums=2)(u, a, hop)
    residual = out - lpc.predict(out, jnp.repeat(a, hop, axis=1))
    scale = np.max(np.abs(np.asarray(u)))
    np.testing.assert_allclose(residual, u, atol=1e-4 * np.max(np.abs(np.asarray(out))))
    # The filter does something: its output is far from its input.
    assert np.max(np.abs(np.asarray(out))) > 3 * scale


def test_excitation_gain_is_the_level_of_the_residual_the_predictor_leaves():
    """White noise of two levels, and noise through two formants: the gain from the mel is
    the standard deviation of x - prediction (the residual the predictor computed from the
    same mel leaves on x, numpy). For white noise that is near the noise's own level. With the
    formants it is about 4x the innovation's (the -40 dB noise floor keeps the predictor from
    whitening the deep valleys), which the gain has to, and does, follow. Per frame the
    estimate is one noisy spectrum; the median over 80 frames is within 6% for white noise
    (measured 2%) and 15% with formants (measured 11%)."""
    rng = np.random.default_rng(2)
    config, mel_config = _synthesis_config(320)
    hop, n = mel_config.hop_length, 80 * mel_config.hop_length

    @jax.jit  # one compilation for the three signals (same length)
    def predictor_and_gain(log_mel):
        return lpc.lpc_from_log_mel(log_mel, config), lpc.synthesis_filters(log_mel, config)[1]

    for level, shaped, tolerance in ((0.01, False, 0.06), (0.1, False, 0.06), (0.02, True, 0.15)):
        x = level * rng.standard_normal(n + 4096)
        x = (_formants(x) if shaped else x)[4096:].astype(np.float32)  # past the start-up
        log_mel = audio.log_mel_spectrogram(x, mel_config)
        a, log_gain = predictor_and_gain(jnp.asarray(log_mel))
        residual = (x - _numpy_prediction(x, a, hop))[2048:-2048]
        ratio = np.median(np.exp(np.asarray(log_gain))) / np.std(residual)
        assert abs(ratio - 1.0) < tolerance, (level, shaped, ratio)


@pytest.mark.parametrize("n", [7, 8, 129, 130])
def test_fft_as_matmul_computes_jnp_ffts_real_transforms(n):
    """Inside lpc.fft_as_matmul the helpers' DFT matmuls give jnp.fft's rfft and irfft (odd
    and even sizes; a shorter input zero-padded, a longer one cut, as jnp.fft's n= does; the
    inverse of a spectrum and of real bin values, its first outputs only), within float32
    rounding of float64 numpy; outside it they are jnp.fft's, bit for bit, complex spectra."""
    rng = np.random.default_rng(n)
    bins = n // 2 + 1
    x = rng.standard_normal((2, 3, n)).astype(np.float32)
    short, long_ = x[..., : n // 2 + 2], np.concatenate([x, x[..., :3]], axis=-1)
    spectrum = np.fft.rfft(x.astype(np.float64), axis=-1)
    power = np.square(np.abs(spectrum)).astype(np.float32)
    packed = np.concatenate([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)
    helpers = (
        lambda x, s, l, p, q: lpc._rfft(x),
        lambda x, s, l, p, q: lpc._rfft(s, n),
        lambda x, s, l, p, q: lpc._rfft(l, n),
        lambda x, s, l, p, q: lpc._irfft(q, n, 5),
        lambda x, s, l, p, q: lpc._irfft(p, n),
        lambda x, s, l, p, q: lpc._spectrum_power(lpc._rfft(x)),
        lambda x, s, l, p, q: lpc._irfft(lpc._spectrum_product(lpc._rfft(x), lpc._rfft(s, n)), n),
    )
    args = (x, short, long_, power, packed)
    with lpc.fft_as_matmul():
        matmul = [np.asarray(jax.jit(h)(*args)) for h in helpers]
    fft = [np.asarray(jax.jit(h)(*(args[:4] + (spectrum.astype(np.complex64),)))) for h in helpers]

    def pack(s):
        return np.concatenate([s.real, s.imag], axis=-1)

    x64 = x.astype(np.float64)
    expected = [
        pack(spectrum),
        pack(np.fft.rfft(short.astype(np.float64), n, axis=-1)),
        pack(np.fft.rfft(long_.astype(np.float64), n, axis=-1)),
        np.fft.irfft(spectrum, n, axis=-1)[..., :5],
        np.fft.irfft(power.astype(np.float64), n, axis=-1),
        np.square(np.abs(spectrum)),
        np.fft.irfft(spectrum * np.fft.rfft(short.astype(np.float64), n, axis=-1), n, axis=-1),
    ]
    for got, want, default in zip(matmul, expected, fft):
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, atol=2e-6 * scale, rtol=0)
        if np.iscomplexobj(default):
            default = pack(default)
        np.testing.assert_allclose(got, default, atol=2e-6 * scale, rtol=0)
    assert fft[0].shape == (2, 3, bins) and np.iscomplexobj(fft[0])
    assert matmul[0].shape == (2, 3, 2 * bins) and x64.shape[-1] == n

    # Outside the context (and after it), the default path is jnp.fft's, bit for bit.
    np.testing.assert_array_equal(fft[0], np.asarray(jnp.fft.rfft(x, axis=-1)))
    np.testing.assert_array_equal(fft[4], np.asarray(jnp.fft.irfft(power, n=n, axis=-1)))
    primitives = str(jax.make_jaxpr(lambda v: lpc._irfft(lpc._rfft(v), n))(x))
    assert "fft" in primitives
    with lpc.fft_as_matmul():
        assert "fft" not in str(jax.make_jaxpr(lambda v: lpc._irfft(lpc._rfft(v), n))(x))


def test_the_synthesis_filter_with_dft_matmuls_is_the_ffts_on_speech_like_predictors():
    """The order-320 filters of a vowel-like mel (the product's size: poles near the unit
    circle, normal equations far from well conditioned), designed and run once with jnp.fft
    and once inside lpc.fft_as_matmul (what the ONNX export converts): same predictors, gains
    and audio up to float32 rounding. The predictors' normal equations have condition numbers
    up to ~6e5 here, so float32 rounding moves them: jnp.fft's predictors are 1.2e-3 (of the
    largest coefficient) from float64's, the matmuls' 1.6e-3, the two 1.7e-3 apart (measured);
    the audio 6e-4 apart."""
    rng = np.random.default_rng(5)
    config, mel_config = _synthesis_config(320)
    frames, hop = 8, mel_config.hop_length
    periodic = np.tile(rng.standard_normal(147), 80)[: frames * hop + 4096]
    x = _formants(periodic + 0.1 * rng.standard_normal(periodic.shape))[4096:]
    log_mel = audio.log_mel_spectrogram((0.3 * x / np.abs(x).max()).astype(np.float32), mel_config)
    u = jnp.asarray(rng.standard_normal((1, frames * hop)) * 1e-3, jnp.float32)

    def synthesize(log_mel, u):
        a, log_gain = lpc.synthesis_filters(log_mel, config)
        excitation = u * jnp.repeat(jnp.exp(log_gain), hop, 1)
        return a, log_gain, lpc.all_pole_filter(excitation, a, hop)[0], excitation

    default = [np.asarray(v) for v in jax.jit(synthesize)(jnp.asarray(log_mel)[None], u)]
    with lpc.fft_as_matmul():
        matmul = [
            np.asarray(v)
            for v in jax.jit(lambda m, e: synthesize(m, e))(jnp.asarray(log_mel)[None], u)
        ]
    for name, got, want in zip(("predictors", "log gains", "audio"), matmul, default):
        scale = np.max(np.abs(want))
        error = np.max(np.abs(got - want)) / scale
        assert error < 3e-3, (name, error)
    # The filter does something: its output is far from its input.
    assert np.max(np.abs(default[2])) > 3 * np.max(np.abs(default[3]))
