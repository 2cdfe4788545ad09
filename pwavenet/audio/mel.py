"""Log-mel features: the one definition (training, evaluation and synthesis call it), and the
presets that match other projects' mels.

Log-mel features (the one definition; training, evaluation and synthesis call it)
--------------------------------------------------------------------------------
:func:`log_mel_spectrogram` runs TensorFlow's signal ops, so it works both inside
``tf.data`` (on tf tensors it returns tf tensors) and eagerly on numpy or jax arrays (it
returns numpy). It is the one function of this module that is not jax and not jit-able.

    frames   T // hop; frame i describes samples [i hop, (i + 1) hop) ("hop block" i)
    padding  reflect, (n_fft - hop) // 2 on the left and n_fft - hop - that on the right,
             so frame i (n_fft samples of padded audio starting at i hop) is centred on the
             middle of hop block i; up to T % hop trailing samples serve as context only
    window   periodic Hann of win_length, centred in the n_fft frame (zeros around it)
    value    log(max(|STFT| @ W, log_floor)), W = tf.signal.linear_to_mel_weight_matrix(
             n_mels, n_fft // 2 + 1, sample_rate, fmin, fmax) (HTK mel scale, no area
             normalisation): magnitudes, not powers; natural log (`mel.log_base` may
             choose another base, as the presets' file readers do: pwavenet.audio.mel_files)

So a crop of audio [j hop, (j + c) hop) goes with mel frames [j, j + c) of the same
utterance, and the conditioning upsampler maps frame i to the hop samples of block i.
Reflect padding needs T > n_fft - hop - (n_fft - hop) // 2 samples.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

__all__ = [
    "MEL_PRESETS",
    "PRESET_HOPS",
    "log_mel_spectrogram",
    "mel_preset",
    "mel_log_base",
    "mel_settings",
    "mel_filterbank",
    "mel_magnitude",
    "mel_padding",
    "upsample_strides",
    "slaney_filterbank",
    "htk_filterbank_and_window",
]

from pwavenet.audio.tensorflow_import import import_tensorflow, is_tf_tensor


def _mel_fields(mel_config: Any) -> tuple[int, int, int, int, int, float, float, float]:
    """Validated (sample_rate, n_fft, win_length, hop, n_mels, fmin, fmax, log_floor)."""
    sr, n_fft, win, hop, n_mels = (
        int(mel_config.sample_rate),
        int(mel_config.n_fft),
        int(mel_config.win_length),
        int(mel_config.hop_length),
        int(mel_config.n_mels),
    )
    fmin, fmax, floor = float(mel_config.fmin), float(mel_config.fmax), float(mel_config.log_floor)
    if not 0 < hop <= n_fft:
        raise ValueError(f"mel.hop_length={hop} must be in (0, mel.n_fft={n_fft}].")
    if not 0 < win <= n_fft:
        raise ValueError(f"mel.win_length={win} must be in (0, mel.n_fft={n_fft}].")
    if not 0.0 <= fmin < fmax <= sr / 2:
        raise ValueError(
            f"Need 0 <= mel.fmin={fmin} < mel.fmax={fmax} <= mel.sample_rate / 2 = {sr / 2}."
        )
    if n_mels < 1 or floor <= 0:
        raise ValueError(f"Need mel.n_mels={n_mels} >= 1 and mel.log_floor={floor} > 0.")
    return sr, n_fft, win, hop, n_mels, fmin, fmax, floor


# ------------------------------------------------------------------ mel presets

# The mel definitions of `mel.preset` (a config without the field uses "pwavenet"):
#   pwavenet  this project's: TensorFlow's HTK-scale filters without area normalisation,
#             |STFT|, frame i centred on hop block i, natural log of max(mel, log_floor)
#   hifigan   HiFi-GAN's and Tacotron 2's (meldataset.mel_spectrogram): librosa's Slaney
#             filters with Slaney area normalisation, sqrt(|STFT|^2 + 1e-9), reflect padding of
#             (n_fft - hop) / 2 on each side without centring, natural log of max(mel, 1e-5)
#   espnet    ESPnet's and Parallel WaveGAN's (logmelfilterbank): librosa's Slaney filters,
#             |STFT| centred (reflect padding of n_fft // 2), log10 of max(mel, 1e-10)
# All three give T // hop frames for T samples (the centred STFT's last frame is dropped), so
# mel frames and hop blocks pair one to one in the data pipeline and the vocoder.
MEL_PRESETS = ("pwavenet", "hifigan", "espnet")
_SLANEY_PRESETS = ("hifigan", "espnet")
_HIFIGAN_MAGNITUDE_EPS = 1e-9  # meldataset.py: sqrt(spec.pow(2).sum(-1) + 1e-9)

# Hop (samples) per sample rate: 12.5 ms, or 256 and 512 samples at 22.05 and 44.1 kHz (the
# LJSpeech recipes' 11.6 ms). The window is 4 hops and the FFT the next power of two.
PRESET_HOPS = {16000: 200, 22050: 256, 24000: 300, 44100: 512, 48000: 600}


def mel_preset(mel_config: Any) -> str:
    """The config's `mel.preset` ("pwavenet" when the field is absent), checked."""
    get = getattr(mel_config, "get", None)
    preset = (get("preset", None) if get else None) or "pwavenet"
    if preset not in MEL_PRESETS:
        raise ValueError(f"mel.preset={preset!r}; expected one of {MEL_PRESETS}.")
    return preset


def mel_log_base(mel_config: Any) -> float:
    """The base of the config's logarithm: `mel.log_base` when set (> 0), else the preset's
    (10 for "espnet", e for the others). A field, not only the preset, because Parallel
    WaveGAN's and ESPnet's configs choose it (`log_base`; null there means natural log)."""
    get = getattr(mel_config, "get", None)
    base = float((get("log_base", 0.0) if get else 0.0) or 0.0)
    if base == 0.0:
        return 10.0 if mel_preset(mel_config) == "espnet" else math.e
    if base <= 0.0 or base == 1.0:
        raise ValueError(f"mel.log_base={base}; use a base > 0 other than 1 (0: the preset's).")
    return base


def mel_settings(preset: str = "pwavenet", sample_rate: int = 22050) -> dict[str, Any]:
    """A config `mel` section for a preset and sample rate, with the recipes' values at 22.05
    kHz (80 bands; HiFi-GAN V1: 1024-point FFT and window, hop 256, 0 to 8 kHz; Parallel
    WaveGAN's LJSpeech: the same FFT and hop, 80 Hz to 7.6 kHz) and at the other rates of
    PRESET_HOPS a hop of 12.5 ms (256 and 512 samples at 22.05 and 44.1 kHz), a window of four
    hops and the next power-of-two FFT, the same band edges up to 24 kHz and up to the Nyquist
    frequency above. `upsample_strides(hop)` gives the models' matching strides."""
    if preset not in MEL_PRESETS:
        raise ValueError(f"preset={preset!r}; expected one of {MEL_PRESETS}.")
    if sample_rate not in PRESET_HOPS:
        raise ValueError(
            f"sample_rate={sample_rate}: presets cover {sorted(PRESET_HOPS)} Hz; resample the "
            "audio to one of them, or write the mel section's fields out."
        )
    hop = PRESET_HOPS[sample_rate]
    win = 4 * hop
    n_fft = 1 << (win - 1).bit_length()
    high = sample_rate > 24000
    fmin, fmax = (80.0, 7600.0) if preset == "espnet" else (0.0, 8000.0)
    return {
        "preset": preset,
        "sample_rate": sample_rate,
        "n_fft": n_fft,
        "win_length": win,
        "hop_length": hop,
        "n_mels": 80,
        "fmin": fmin,
        "fmax": sample_rate / 2 if high else fmax,
        "log_floor": 1e-10 if preset == "espnet" else 1e-5,
    }


def upsample_strides(hop: int) -> tuple[int, int]:
    """Two upsampling strides (a, b), a <= b, a * b = hop, as close to sqrt(hop) as possible:
    200 -> (10, 20), 256 -> (16, 16), 300 -> (15, 20), 512 -> (16, 32), 600 -> (24, 25)."""
    a = max(d for d in range(1, math.isqrt(hop) + 1) if hop % d == 0)
    return a, hop // a


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (the Auditory Toolbox's, librosa's default): linear at 3 mels per
    200 Hz below 1 kHz, logarithmic (27 mels per factor 6.4) above."""
    hz = np.asarray(hz, np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log_part, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    log_part = 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)
    return np.where(mel >= 15.0, log_part, mel * 200.0 / 3.0)


@functools.lru_cache(maxsize=16)
def slaney_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32 triangles on Slaney's mel scale, each scaled by
    2 / (its upper - lower edge in Hz) (Slaney's area normalisation): librosa.filters.mel's
    default, which HiFi-GAN, Tacotron 2 and ESPnet use."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _slaney_mel_to_hz(
        np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return np.ascontiguousarray(weights.T, np.float32)


def mel_padding(mel_config: Any) -> tuple[int, int]:
    """(left, right) reflect padding of the preset: frame i (n_fft padded samples from i hop)
    is centred on hop block i ("pwavenet", "hifigan") or on sample i hop ("espnet"); the right
    padding is what the last of T // hop frames needs."""
    _, n_fft, _, hop, *_ = _mel_fields(mel_config)
    left = n_fft // 2 if mel_preset(mel_config) == "espnet" else (n_fft - hop) // 2
    return left, max(0, n_fft - hop - left)


@functools.lru_cache(maxsize=16)
def htk_filterbank_and_window(
    sr: int, n_fft: int, win: int, n_mels: int, fmin: float, fmax: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n_fft // 2 + 1, n_mels) filterbank and the centred, zero-padded Hann window."""
    tf = import_tensorflow()
    with tf.init_scope():  # eager even when first called while tf.data traces a map
        matrix = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=n_mels,
            num_spectrogram_bins=n_fft // 2 + 1,
            sample_rate=sr,
            lower_edge_hertz=fmin,
            upper_edge_hertz=fmax,
            dtype=tf.float32,
        ).numpy()
        hann = tf.signal.hann_window(win, periodic=True, dtype=tf.float32).numpy()
    window = np.zeros(n_fft, np.float32)
    start = (n_fft - win) // 2
    window[start : start + win] = hann
    return matrix, window


def mel_filterbank(mel_config: Any) -> np.ndarray:
    """The filterbank W of `log_mel_spectrogram` for the config's preset:
    (n_fft // 2 + 1, n_mels) float32."""
    sr, n_fft, win, _, n_mels, fmin, fmax, _ = _mel_fields(mel_config)
    if mel_preset(mel_config) in _SLANEY_PRESETS:
        return slaney_filterbank(sr, n_fft, n_mels, fmin, fmax).copy()
    return htk_filterbank_and_window(sr, n_fft, win, n_mels, fmin, fmax)[0].copy()


def mel_magnitude(log_mel: Any, mel_config: Any) -> np.ndarray:
    """The mel-band magnitudes that `log_mel_spectrogram` took the log of (floored values stay
    at the floor): base ** log_mel, with `mel_log_base`'s base."""
    log_mel = np.asarray(log_mel, np.float64)
    return np.power(mel_log_base(mel_config), log_mel)


def log_mel_spectrogram(audio: Any, mel_config: Any) -> Any:
    """Log-mel features of waveforms: (..., T) in [-1, 1] -> (..., T // hop, n_mels) float32.

    See the module docstring for the exact definition and the frame/sample alignment.

    Args:
      audio: float waveform(s), last axis time; numpy, jax or tf (eager or inside tf.data).
      mel_config: the config's ``mel`` section (sample_rate, n_fft, win_length, hop_length,
        n_mels, fmin, fmax, log_floor, and optionally preset: see MEL_PRESETS).

    Returns:
      A tf tensor for tf input, a numpy array otherwise.
    """
    sr, n_fft, win, hop, n_mels, fmin, fmax, floor = _mel_fields(mel_config)
    preset = mel_preset(mel_config)
    left, right = mel_padding(mel_config)
    tf = import_tensorflow()
    as_numpy = not is_tf_tensor(audio)
    if as_numpy:
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 0:
            raise ValueError("log_mel_spectrogram needs audio with a time axis, got a scalar.")
        if audio.shape[-1] <= right:
            raise ValueError(
                f"log_mel_spectrogram needs more than {right} samples for its "
                f"reflect padding; got {audio.shape[-1]}."
            )
    x = tf.cast(tf.convert_to_tensor(audio), tf.float32)
    rank = x.shape.rank
    if rank is None or rank == 0:
        raise ValueError("log_mel_spectrogram needs audio of known rank >= 1.")
    matrix, window = htk_filterbank_and_window(sr, n_fft, win, n_mels, fmin, fmax)
    if preset in _SLANEY_PRESETS:
        matrix = slaney_filterbank(sr, n_fft, n_mels, fmin, fmax)
    frames = tf.shape(x)[-1] // hop
    x = tf.pad(x, [[0, 0]] * (rank - 1) + [[left, right]], mode="REFLECT")
    stft = tf.signal.stft(
        x,
        frame_length=n_fft,
        frame_step=hop,
        fft_length=n_fft,
        window_fn=lambda length, dtype: tf.constant(window, dtype),
        pad_end=False,
    )
    stft = stft[..., :frames, :]  # T // hop frames (a hop above n_fft / 2 leaves more)
    if preset == "hifigan":
        power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
        magnitude = tf.sqrt(power + _HIFIGAN_MAGNITUDE_EPS)
    else:
        magnitude = tf.abs(stft)
    mel = tf.tensordot(magnitude, tf.constant(matrix), axes=1)
    log_mel = tf.math.log(tf.maximum(mel, floor))
    base = mel_log_base(mel_config)
    if base != math.e:
        log_mel = log_mel / math.log(base)
    return log_mel.numpy() if as_numpy else log_mel
