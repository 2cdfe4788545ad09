"""Tests for the log-mel features, pwavenet.audio.mel's `log_mel_spectrogram` and filterbank.

The references are numpy/scipy transcriptions of the definition (np.fft.rfft on manually framed
and windowed audio, an HTK mel filterbank written out here).
"""

import jax
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from configs import teacher
from pwavenet import audio


def _mel_config(**overrides):
    c = teacher.get_config("tiny").mel
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


MEL_CONFIGS = {
    "tiny": _mel_config(),  # n_fft 256 = win, hop 64, 16 mels
    "espeak": teacher.get_config("espeak").mel,  # 1024, 1024, 256, 80 mels
    "short_window": _mel_config(n_fft=512, win_length=300, hop_length=100, n_mels=24),
}


# ------------------------------------------------------------------- numpy reference


def _htk_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


def numpy_mel_filterbank(c):
    """(n_fft // 2 + 1, n_mels) triangles on the HTK mel scale; the DC bin gets no weight."""
    freqs = np.linspace(0.0, c.sample_rate / 2, c.n_fft // 2 + 1)
    edges = np.linspace(_htk_mel(c.fmin), _htk_mel(c.fmax), c.n_mels + 2)
    m = _htk_mel(freqs)[:, None]
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(
        0.0, np.minimum((m - lower) / (center - lower), (upper - m) / (upper - center))
    )
    weights[0] = 0.0
    return weights


def numpy_log_mel(x, c):
    """float64 reference of audio.log_mel_spectrogram for one 1-D waveform."""
    x = np.asarray(x, np.float64)
    left = (c.n_fft - c.hop_length) // 2
    padded = np.pad(x, (left, c.n_fft - c.hop_length - left), mode="reflect")
    frames = len(x) // c.hop_length
    starts = c.hop_length * np.arange(frames)
    segments = padded[starts[:, None] + np.arange(c.n_fft)[None, :]]
    window = np.zeros(c.n_fft)
    offset = (c.n_fft - c.win_length) // 2
    window[offset : offset + c.win_length] = scipy.signal.get_window("hann", c.win_length)
    magnitude = np.abs(np.fft.rfft(segments * window, n=c.n_fft, axis=-1))
    return np.log(np.maximum(magnitude @ numpy_mel_filterbank(c), c.log_floor))


# --------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_mel_filterbank_is_htk_triangles(name):
    c = MEL_CONFIGS[name]
    tf_matrix = tf.signal.linear_to_mel_weight_matrix(
        c.n_mels, c.n_fft // 2 + 1, c.sample_rate, c.fmin, c.fmax
    ).numpy()
    np.testing.assert_allclose(tf_matrix, numpy_mel_filterbank(c), atol=2e-5)


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_log_mel_matches_numpy_reference(name):
    c = MEL_CONFIGS[name]
    rng = np.random.RandomState(0)
    # Noise plus a tone: no frame anywhere near the log floor.
    length = 40 * c.hop_length + c.hop_length // 3  # also a T that is not a multiple of hop
    t = np.arange(length) / c.sample_rate
    x = (0.3 * rng.uniform(-1, 1, (2, length)) + 0.4 * np.sin(2 * np.pi * 523 * t)).astype(
        np.float32
    )
    got = audio.log_mel_spectrogram(x, c)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == (2, length // c.hop_length, c.n_mels)
    for i in range(2):
        np.testing.assert_allclose(got[i], numpy_log_mel(x[i], c), atol=2e-3, rtol=0)


def test_log_mel_floor_and_jax_input():
    c = MEL_CONFIGS["tiny"]
    silence = audio.log_mel_spectrogram(np.zeros(640, np.float32), c)
    np.testing.assert_allclose(silence, np.log(c.log_floor), rtol=1e-6)
    x = np.random.RandomState(1).uniform(-1, 1, 640).astype(np.float32)
    np.testing.assert_array_equal(
        audio.log_mel_spectrogram(jax.numpy.asarray(x), c), audio.log_mel_spectrogram(x, c)
    )


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_frame_count_is_samples_over_hop_eagerly_and_in_tf_data(name):
    c = MEL_CONFIGS[name]
    hop = c.hop_length
    lengths = [8 * hop, 8 * hop + 1, 9 * hop - 1, 33 * hop]
    for n in lengths:
        assert audio.log_mel_spectrogram(np.zeros(n, np.float32), c).shape == (n // hop, c.n_mels)
    rng = np.random.RandomState(2)
    signals = [rng.uniform(-1, 1, n).astype(np.float32) for n in lengths]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(signals), output_signature=tf.TensorSpec([None], tf.float32)
    )
    ds = ds.map(lambda x: audio.log_mel_spectrogram(x, c))  # traced: tf in, tf out
    for x, mel in zip(signals, ds.as_numpy_iterator()):
        np.testing.assert_allclose(mel, audio.log_mel_spectrogram(x, c), atol=1e-5)


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_a_burst_in_hop_block_i_lights_up_frame_i(name):
    c = MEL_CONFIGS[name]
    hop, frames = c.hop_length, 16
    rng = np.random.RandomState(3)
    for block in (0, 1, 5, 9, frames - 2, frames - 1):
        x = np.zeros(frames * hop, np.float32)
        x[block * hop : (block + 1) * hop] = rng.uniform(-1, 1, hop)
        energy = np.exp(audio.log_mel_spectrogram(x, c)).sum(axis=-1)
        assert np.argmax(energy) == block, (block, np.round(energy, 2))


def test_log_mel_errors():
    c = MEL_CONFIGS["espeak"]
    with pytest.raises(ValueError, match="more than 384 samples"):
        audio.log_mel_spectrogram(np.zeros(300, np.float32), c)
    with pytest.raises(ValueError, match="fmax"):
        audio.log_mel_spectrogram(np.zeros(4096, np.float32), _mel_config(fmax=20000.0))
    with pytest.raises(ValueError, match="win_length"):
        audio.log_mel_spectrogram(np.zeros(4096, np.float32), _mel_config(win_length=512))
