"""pwavenet.audio.excitation and model.excitation='pulses' in the student.

The estimator against signals of known pitch passed through the project's mel (not against
its own templates); the pulse train's power, period and band limit from its samples; and the
student with pulses still an IAF: the pulses change x by exactly the synthesis filter's
response to them (the filter is linear), leave the scales and so the log-determinant as they
were (checked by an autodiff Jacobian's slogdet), and the sequential inverse subtracts them.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import teacher as teacher_configs
from pwavenet import audio
from pwavenet.audio import excitation, lpc
from pwavenet.models import iaf

from student_helpers import lpc_overrides, random_params, small_student_config

SR = 22050
HOP = 8  # the small student's upsample_strides (4, 2)


@functools.lru_cache(maxsize=1)
def _mel_config():
    return teacher_configs.get_config("espeak").mel


def _vowel(f0_hz, seconds=1.0, seed=0):
    """A harmonic signal with a vowel-like envelope (two formants, 1/k tilt) at f0_hz, with
    slightly random harmonic phases, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for k in range(1, int(8000 / f0_hz) + 1):
        f = k * f0_hz
        envelope = (
            1 / k + 2 * np.exp(-(((f - 700) / 150) ** 2)) + np.exp(-(((f - 1200) / 200) ** 2))
        )
        x += envelope * np.cos(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.mark.parametrize("f0_hz", [95.0, 130.0, 210.0, 280.0])
def test_estimated_pitch_of_harmonic_signals_through_the_mel(f0_hz):
    """F0 within 25 cents (median over frames) and voiced in nearly every inner frame."""
    mel = audio.log_mel_spectrogram(_vowel(f0_hz), _mel_config())
    f0, voiced = map(np.asarray, excitation.estimate_pitch(jnp.asarray(mel), _mel_config()))
    inner = slice(4, -4)
    cents = 1200 * np.log2(f0[inner] / f0_hz)
    assert np.median(np.abs(cents)) < 25, (np.median(f0[inner]), f0_hz)
    assert np.mean(np.abs(cents) < 50) > 0.9
    assert np.mean(voiced[inner] > 0.5) > 0.9, voiced


def test_a_fricative_after_a_vowel_is_unvoiced():
    """A vowel, then high-passed noise (above 3 kHz, a fricative's spectrum) 14 dB below it:
    the vowel's frames voiced, the noise's unvoiced. (Broad-band white noise at speech level
    is not: the classifier leans on the low bands' level and tilt, which such noise shares
    with vowels; the module docstring says so.)"""
    from scipy import signal

    rng = np.random.default_rng(0)
    b, a = signal.butter(4, 3000 / (SR / 2), "high")
    noise = signal.lfilter(b, a, rng.normal(0, 1, SR))
    noise = (0.1 * noise / np.max(np.abs(noise))).astype(np.float32)
    mel = audio.log_mel_spectrogram(np.concatenate([_vowel(130.0), noise]), _mel_config())
    _, voiced = excitation.estimate_pitch(jnp.asarray(mel), _mel_config())
    voiced = np.asarray(voiced) > 0.5
    half = len(voiced) // 2
    assert np.mean(voiced[4 : half - 4]) > 0.9
    assert np.mean(voiced[half + 4 : -4]) < 0.1


def test_pulse_train_power_period_and_band_limit():
    frames, hop, f0_hz = 40, 256, 150.0
    f0 = jnp.full((frames,), f0_hz)
    p = np.asarray(excitation.pulse_train(f0, jnp.ones((frames,)), hop, SR), np.float64)
    assert p.shape == (frames * hop,)
    np.testing.assert_allclose(np.mean(p**2), 1.0, rtol=0.02)
    # Period: the autocorrelation's highest peak past lag 20 is at sr / f0 (147 samples).
    r = np.correlate(p[:4096], p[:4096], "full")[4095:]
    assert abs(np.argmax(r[20:400]) + 20 - SR / f0_hz) <= 1
    # Band-limited: over 60 whole periods (sr / f0 = 147 samples) the DFT has energy only in
    # bins 60 k, equal for every harmonic below Nyquist (k = 1..73), and none between.
    periods = 60
    spectrum = np.abs(np.fft.rfft(p[: periods * 147])) / (periods * 147 / 2)
    harmonics = spectrum[periods::periods][:73]
    np.testing.assert_allclose(harmonics, harmonics[0], rtol=1e-3)
    assert spectrum[periods * 73 + 1 :].max() < 1e-3 * harmonics[0]
    between = np.delete(spectrum[: periods * 73], np.arange(0, periods * 73, periods))
    assert between.max() < 1e-3 * harmonics[0]
    # Unvoiced frames give silence.
    q = excitation.pulse_train(f0, jnp.zeros((frames,)), hop, SR)
    assert np.all(np.asarray(q) == 0.0)


# ------------------------------------------------------------------ the student


@pytest.fixture(autouse=True)
def _steady_pitch(monkeypatch, request):
    """For the small student (4 mel bands at 8 kHz, which the estimator cannot read): a
    steady 440 Hz whose voicing rises from 0 to 1 over the frames, so the pulses are large
    somewhere and the voicing-gated noise level varies. The estimator itself is tested above
    on the project's mel."""
    if "student" not in request.node.name and "pulses_" not in request.node.name:
        return

    def steady(mel, config):
        voicing = jnp.broadcast_to(jnp.linspace(0.0, 1.0, mel.shape[-2]), mel.shape[:-1])
        return jnp.full(mel.shape[:-1], 440.0), voicing

    monkeypatch.setattr(excitation, "estimate_pitch", steady)


def _students():
    noise = iaf.IAFStudent(small_student_config("logistic", **lpc_overrides()))
    pulses = iaf.IAFStudent(
        small_student_config(
            "logistic",
            excitation="pulses",
            pulse_gain=0.7,
            voiced_noise_gain=0.2,
            **lpc_overrides(),
        )
    )
    args = (jnp.zeros((1, HOP)), jnp.zeros((1, 1, 4)), jnp.zeros((1,), jnp.int32))
    params = random_params(pulses, *args)
    params["pulse_log_gain"] = jnp.asarray(math.log(0.7), jnp.float32)
    params["voiced_noise_log_gain"] = jnp.asarray(math.log(0.2), jnp.float32)
    excitation_params = ("pulse_log_gain", "voiced_noise_log_gain")
    params_noise = {k: v for k, v in params.items() if k not in excitation_params}
    return noise, params_noise, pulses, params


def _inputs(batch=2, frames=3):
    rng = np.random.default_rng(0)
    # A mel with a harmonic-looking ripple, so the estimator voices some frames.
    mel = jnp.asarray(rng.normal(size=(batch, frames, 4)) + 3.0, jnp.float32)
    speaker = jnp.asarray(np.arange(batch) % 3, jnp.int32)
    z = jax.random.logistic(jax.random.key(3), (batch, frames * HOP))
    return z, mel, speaker


def test_pulses_student_adds_the_pulses_and_gates_the_noise():
    """Against the noise student with the same flows: its excitation e (recovered from its
    audio by the teacher-side predictor), scaled by 0.2 ** voicing, plus 0.7 times the pulses,
    through the same synthesis filter; the log-scale gains voicing * log 0.2."""
    noise, params_noise, pulses, params = _students()
    z, mel, speaker = _inputs()
    x0, _, log_s0 = noise.apply({"params": params_noise}, z, mel, speaker)
    x1, mu1, log_s1 = pulses.apply({"params": params}, z, mel, speaker)
    source = pulses.apply({"params": params}, mel, method=iaf.IAFStudent.source_filter)
    a, log_gain, f0, voicing = source
    p, _ = excitation.pulses(f0, voicing, pulses.config.lpc_mel.sample_rate)
    assert float(jnp.max(jnp.abs(p))) > 0.1  # the pulses are there
    assert float(jnp.min(voicing)) == 0.0 and float(jnp.max(voicing)) == 1.0
    np.testing.assert_allclose(
        np.asarray(log_s1), np.asarray(log_s0 + voicing * math.log(0.2)), atol=1e-5
    )
    gain = jnp.exp(jnp.repeat(log_gain, HOP, axis=1))
    e = (x0 - lpc.predict(x0, jnp.repeat(a, HOP, axis=1))) / gain
    expected, _ = lpc.all_pole_filter((e * 0.2**voicing + 0.7 * p) * gain, a, HOP)
    np.testing.assert_allclose(np.asarray(x1), np.asarray(expected), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        np.asarray(x1), np.asarray(z * jnp.exp(log_s1) + mu1), atol=1e-5, rtol=1e-5
    )


def test_pulses_student_inverse_and_log_det():
    """inverse(forward(z)) = z; log_prob = sum(log base(z') - log_s); and the autodiff
    Jacobian dx/dz is lower triangular with slogdet = sum(log_s_tot)."""
    _, _, model, params = _students()
    z, mel, speaker = _inputs(batch=1)
    x, _, log_s = model.apply({"params": params}, z, mel, speaker)
    z_back, log_s_back = iaf.inverse(model, {"params": params}, x, mel, speaker)
    np.testing.assert_allclose(np.asarray(z_back), np.asarray(z), atol=5e-4)
    np.testing.assert_allclose(np.asarray(log_s_back), np.asarray(log_s), atol=1e-5)
    log_p = iaf.log_prob(model, {"params": params}, x, mel, speaker)
    expected = jnp.sum(model.base_log_prob(z_back) - log_s_back, axis=-1)
    np.testing.assert_allclose(np.asarray(log_p), np.asarray(expected), rtol=1e-6)

    jac = jax.jacfwd(lambda v: model.apply({"params": params}, v, mel, speaker)[0])(z)
    dx = np.asarray(jac, np.float64)[0, :, 0, :]
    assert np.all(np.abs(np.triu(dx, k=1)) <= 1e-5 * np.max(np.abs(dx)))
    sign, logdet = np.linalg.slogdet(dx)
    assert sign == 1.0
    np.testing.assert_allclose(logdet, float(jnp.sum(log_s)), rtol=1e-5, atol=1e-4)


def test_pulses_need_the_filter():
    with pytest.raises(ValueError, match="lpc_order"):
        iaf.IAFStudent(small_student_config("logistic", excitation="pulses"))
    with pytest.raises(ValueError, match="excitation"):
        iaf.IAFStudent(small_student_config("logistic", excitation="buzz", **lpc_overrides()))
