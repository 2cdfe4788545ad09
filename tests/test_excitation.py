"""pwavenet.excitation: the estimator against signals of known pitch passed through the
project's mel (not against its own templates); the pulse train's power, period and band
limit from its samples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import teacher as teacher_configs
from pwavenet import audio, excitation

SR = 22050


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
        envelope = 1 / k + 2 * np.exp(-(((f - 700) / 150) ** 2)) + np.exp(-(((f - 1200) / 200) ** 2))
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
    harmonics = spectrum[periods :: periods][:73]
    np.testing.assert_allclose(harmonics, harmonics[0], rtol=1e-3)
    assert spectrum[periods * 73 + 1 :].max() < 1e-3 * harmonics[0]
    between = np.delete(spectrum[: periods * 73], np.arange(0, periods * 73, periods))
    assert between.max() < 1e-3 * harmonics[0]
    # Unvoiced frames give silence.
    q = excitation.pulse_train(f0, jnp.zeros((frames,)), hop, SR)
    assert np.all(np.asarray(q) == 0.0)
