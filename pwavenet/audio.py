"""Audio transforms: the one place where waveform values are companded and quantized.

Every other part of the package (data pipeline, teacher and student heads, losses,
synthesis) calls into this module instead of re-deriving a formula, so that the
encoder used to build training targets and the decoder used to turn model output
back into audio can never drift apart. Feature extraction for conditioning (mel
spectrograms) belongs in this module for the same reason.

Conventions
-----------
* Waveforms are floats in [-1, 1]. Functions accept jax or numpy arrays of any shape
  and return jax arrays of the same shape; all of them are jit-able.
* Integer outputs are ``int32``. ``mu`` and ``num_bins`` are static (python ints).
* Values that must be exact (bin centres at +-1, decoded end classes) are pinned
  explicitly and everything else is clipped to [-1, 1]: a compiler may fuse
  ``k * w - 1`` into an FMA, or divide by multiplying with a rounded reciprocal,
  either of which can land one ulp beyond +-1.

Mu-law (ITU-T G.711 style companding, continuous form)
------------------------------------------------------
    compress:  f(x) = sign(x) * ln(1 + mu |x|) / ln(1 + mu),        f: [-1, 1] -> [-1, 1]
    expand:    g(y) = sign(y) * ((1 + mu)^|y| - 1) / mu = f^{-1}(y)
    encode:    c(x) = round((f(clip(x, -1, 1)) + 1) / 2 * mu)  in {0, ..., mu}
    decode:    d(c) = g(2 c / mu - 1)

``round`` is round-half-to-even (``jnp.round``). The only exact tie that matters in
practice is x = 0: (0 + 1) / 2 * 255 = 127.5, which rounds to class 128, so
``mulaw_encode(0.0) == 128``, ``mulaw_encode(-1.0) == 0`` and ``mulaw_encode(1.0) == 255``.
Classes 0 and mu cover half as much of the compressed axis as the others (the grid
of class centres includes both end points).

Uniform quantization (``num_bins`` levels, 65536 for 16-bit audio)
-----------------------------------------------------------------
Bin k in {0, ..., num_bins - 1} has centre ``-1 + 2 k / (num_bins - 1)``; the bin
width is ``2 / (num_bins - 1)``, so the centres include -1 and 1 exactly and the
two edge bins stick out half a bin past [-1, 1].

16-bit PCM storage
------------------
Data sets store int16 samples ``s``; the model sees ``x = (2 s + 1) / 65535``, the centre of
16-bit bin ``k = s + 32768`` above, so ``quantize_16bit(pcm16_to_float(s)) == s + 32768``
exactly and every training sample sits on a bin centre of the 16-bit likelihoods. The price
is a DC offset of half a level (1.5e-5, -96 dBFS): digital silence maps to 1/65535, not 0,
which shows in its log-mel in the lowest band only (about -5.6 instead of the floor's -11.5
with the default features; real recordings' noise floor hides it).
:func:`float_to_pcm16` is the inverse (round to the nearest centre).

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
             normalisation): magnitudes, not powers; natural log

So a crop of audio [j hop, (j + c) hop) goes with mel frames [j, j + c) of the same
utterance, and the conditioning upsampler maps frame i to the hop samples of block i.
Reflect padding needs T > n_fft - hop - (n_fft - hop) // 2 samples.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike
import numpy as np

__all__ = [
    "MULAW_MU",
    "NUM_16BIT_BINS",
    "bin_center",
    "bin_index",
    "bin_width",
    "dequantize_16bit",
    "float_to_pcm16",
    "import_tensorflow",
    "MEL_PRESETS",
    "log_mel_spectrogram",
    "mel_preset",
    "mel_settings",
    "mel_filterbank",
    "mel_magnitude",
    "mel_padding",
    "mulaw_compress",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_expand",
    "pcm16_to_float",
    "quantize",
    "quantize_16bit",
]

MULAW_MU: int = 255
NUM_16BIT_BINS: int = 65536


def _as_float(x: ArrayLike) -> Array:
    """Returns ``x`` as a jax array with an inexact dtype (the default float for ints)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


# --------------------------------------------------------------------------- mu-law


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_compress(x: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Continuous mu-law compression ``sign(x) ln(1 + mu|x|) / ln(1 + mu)``.

    Args:
      x: waveform, any shape, values in [-1, 1] (not clipped here, so that
        ``mulaw_expand`` stays its exact inverse on all reals).
      mu: companding parameter.

    Returns:
      Array of the same shape; inputs in [-1, 1] map into [-1, 1] (up to rounding).
    """
    x = _as_float(x)
    # log1p keeps full relative precision for the many samples near zero.
    return jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / math.log1p(mu)


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_expand(y: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Inverse of :func:`mulaw_compress`: ``sign(y) ((1 + mu)^|y| - 1) / mu``.

    Args:
      y: compressed values, any shape, in [-1, 1].
      mu: companding parameter.

    Returns:
      Array of the same shape; inputs in [-1, 1] map into [-1, 1] (up to rounding).
    """
    y = _as_float(y)
    # (1 + mu)^|y| - 1 == expm1(|y| ln(1 + mu)); expm1 avoids cancellation near 0.
    return jnp.sign(y) * jnp.expm1(jnp.abs(y) * math.log1p(mu)) / mu


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_encode(x: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Mu-law class of each sample: ``round((f(clip(x)) + 1) / 2 * mu)``.

    Args:
      x: waveform, any shape; values outside [-1, 1] are clipped first.
      mu: companding parameter; there are ``mu + 1`` classes.

    Returns:
      int32 array of the same shape with values in {0, ..., mu}; monotone
      non-decreasing in ``x``. Ties round half to even; for odd ``mu``, x = 0
      sits exactly on the tie ``mu / 2`` and for mu = 255 it goes to class 128.
    """
    y = mulaw_compress(jnp.clip(_as_float(x), -1.0, 1.0), mu)
    classes = jnp.round((y + 1.0) * (0.5 * mu))
    return jnp.clip(classes, 0, mu).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_decode(classes: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Waveform value of each mu-law class: ``g(2 c / mu - 1)``.

    Args:
      classes: integer classes in {0, ..., mu}, any shape.
      mu: companding parameter.

    Returns:
      Float array of the same shape with values in [-1, 1]; classes 0 and mu give
      exactly -1 and 1.
    """
    classes = jnp.asarray(classes)
    y = _as_float(2 * classes - mu) / mu
    x = jnp.clip(mulaw_expand(y, mu), -1.0, 1.0)
    x = jnp.where(classes >= mu, 1.0, x)
    return jnp.where(classes <= 0, -1.0, x)


# ------------------------------------------------------------ uniform quantization


def bin_width(num_bins: int = NUM_16BIT_BINS) -> float:
    """Width ``2 / (num_bins - 1)`` of one uniform bin (python float)."""
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return 2.0 / (num_bins - 1)


@functools.partial(jax.jit, static_argnames="num_bins")
def bin_index(x: ArrayLike, num_bins: int = NUM_16BIT_BINS) -> Array:
    """Index of the nearest bin centre: ``round((clip(x) + 1) / 2 * (num_bins - 1))``.

    Args:
      x: waveform, any shape; clipped to [-1, 1] first.
      num_bins: number of uniform levels.

    Returns:
      int32 array of the same shape with values in {0, ..., num_bins - 1}.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    x = jnp.clip(_as_float(x), -1.0, 1.0)
    index = jnp.round((x + 1.0) * (0.5 * (num_bins - 1)))
    return jnp.clip(index, 0, num_bins - 1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="num_bins")
def bin_center(index: ArrayLike, num_bins: int = NUM_16BIT_BINS) -> Array:
    """Centre ``-1 + 2 k / (num_bins - 1)`` of bin ``k`` (float, same shape as ``index``).

    Computed as ``(2 k - (num_bins - 1)) / (num_bins - 1)`` (symmetric about 0),
    clipped to [-1, 1], with bins 0 and ``num_bins - 1`` pinned to exactly -1 and 1.
    """
    bin_width(num_bins)  # validates num_bins
    index = jnp.asarray(index)
    numerator = _as_float(2 * index - (num_bins - 1))
    center = jnp.clip(numerator / (num_bins - 1), -1.0, 1.0)
    center = jnp.where(index >= num_bins - 1, 1.0, center)
    return jnp.where(index <= 0, -1.0, center)


@functools.partial(jax.jit, static_argnames="num_bins")
def quantize(x: ArrayLike, num_bins: int = NUM_16BIT_BINS) -> Array:
    """Rounds ``x`` (clipped to [-1, 1]) to its nearest bin centre; same shape, float."""
    return bin_center(bin_index(x, num_bins), num_bins)


@jax.jit
def quantize_16bit(x: ArrayLike) -> Array:
    """16-bit level ``k`` in {0, ..., 65535} of each sample (int32, same shape)."""
    return bin_index(x, NUM_16BIT_BINS)


@jax.jit
def dequantize_16bit(levels: ArrayLike) -> Array:
    """Waveform value ``-1 + 2 k / 65535`` of each 16-bit level (float, same shape)."""
    return bin_center(levels, NUM_16BIT_BINS)


# ------------------------------------------------------------------- 16-bit PCM


def pcm16_to_float(samples: Any) -> Any:
    """int16 samples ``s`` -> float32 ``(2 s + 1) / 65535`` in [-1, 1] (16-bit bin centres).

    Accepts numpy (returns numpy) or tf tensors (returns a tf tensor, usable in tf.data).
    """
    if _is_tf_tensor(samples):
        tf = import_tensorflow()
        return (tf.cast(samples, tf.float32) * 2.0 + 1.0) / 65535.0
    return ((np.asarray(samples, np.float64) * 2.0 + 1.0) / 65535.0).astype(np.float32)


def float_to_pcm16(x: Any) -> np.ndarray:
    """Waveform in [-1, 1] (clipped) -> int16 (numpy): the nearest 16-bit bin centre.

    The inverse of :func:`pcm16_to_float`; the level is ``quantize_16bit(x) - 32768`` up to
    ties, which this rounds in float64 and quantize_16bit in float32.
    """
    x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    return np.clip(np.round(x * 32767.5 - 0.5), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------- log-mel


def import_tensorflow():
    """Imports TensorFlow (used only for data) with accelerators hidden from it."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised: too late, and already decided
        pass
    return tf


def _is_tf_tensor(x: Any) -> bool:
    """True for TensorFlow tensors (eager or symbolic) without importing TensorFlow."""
    return type(x).__module__.startswith("tensorflow")


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
def _mel_matrix_and_window(
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
    return _mel_matrix_and_window(sr, n_fft, win, n_mels, fmin, fmax)[0].copy()


def mel_magnitude(log_mel: Any, mel_config: Any) -> np.ndarray:
    """The mel-band magnitudes that `log_mel_spectrogram` took the log of (floored values stay
    at the floor): exp, or 10 ** for the log10 preset."""
    log_mel = np.asarray(log_mel, np.float64)
    if mel_preset(mel_config) == "espnet":
        return np.power(10.0, log_mel)
    return np.exp(log_mel)


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
    as_numpy = not _is_tf_tensor(audio)
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
    matrix, window = _mel_matrix_and_window(sr, n_fft, win, n_mels, fmin, fmax)
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
    if preset == "espnet":
        log_mel = log_mel / math.log(10.0)
    return log_mel.numpy() if as_numpy else log_mel
