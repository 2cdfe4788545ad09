"""A pitch-pulse excitation from the log-mel alone: F0 and voicing per frame, and a pulse train.

The student's synthesis filter (pwavenet.audio.lpc) gives the envelope and some of the
harmonics, but nothing in a noise-driven student carries the pitch. This module estimates it
from the mel (the only input a vocoder gets), in JAX, frame-parallel and deterministic, and
turns it into a band-limited pulse train that the student adds to its excitation
(model.excitation = 'pulses', pwavenet.models.iaf): a function of the conditioning only, so it
joins the flows' shift M_t and leaves the log-determinant unchanged.

F0 (`estimate_pitch`): harmonic templates matched in the mel domain. For each candidate F0 on
a log grid (60 to 500 Hz, 10 cents apart), the magnitude spectrum of a Hann-windowed harmonic
comb (every harmonic up to fmax) is projected through the mel filterbank and logged; template
and frame are both high-passed across bands (each minus a Gaussian average over about one
band on either side, which removes the envelope), cut to the lowest `PITCH_BANDS` bands (where
HTK bands are narrow enough to resolve harmonics: band 40 is near 1.7 kHz), mean-removed and
normalized; their dot product is a correlation in [-1, 1]. The frame's F0 is the best
candidate (parabolic refinement on the log grid) after a penalty of LAMBDA * (octaves away
from a local prior)^2; the prior is the Gaussian-weighted (sigma PRIOR_FRAMES frames, cut at
3 sigma) mean log F0 of the confident voiced frames (correlation above 0.6), which removes most
of the octave jumps. The mel cannot tell some octave errors apart: on the embedded corpus,
speaker 5's odd harmonics lie about 20 dB below its even ones and the template often prefers
twice the F0 that WORLD's harvest reports.

Voicing: logistic regression on, at frames t, t +- 1, t +- 2: the best correlation, the level
of bands below 30 and of all bands (each relative to the utterance's loudest frame), and the
level of bands below 30 against those above (clipped to +-6). The weights `VOICING_WEIGHTS`
were fitted (Newton's method, L2 1e-3) to harvest's voicing of the first 40 training
utterances of the embedded espeak-ng corpus in the project's default mel definition
(22.05 kHz, 1024-point FFT, 80 HTK bands to 8 kHz); other mel definitions need a refit.
It leans on the low bands' level and tilt: a fricative (noise above a few kHz, quieter
than the vowels) is unvoiced, but stationary broad-band white noise at speech level is
called voiced (tests/test_excitation.py).

Measured on the validation split (40 utterances) against harvest on the reference audio:
V/UV error 7.7 %, F0 RMSE 262 cents over frames both call voiced, of which 4.9 % are off by
more than half an octave (median error 13.5 cents). docs/quality.md has the tables.

Pulses (`pulse_train`): log F0 and the voicing probability are interpolated linearly between
frame centres ((i + 1/2) hop) to every sample (`contour`); the phase is the running sum of
F0 / sr (a cumsum, so parallel; `pulses` starts it where a previous piece ended); each sample is the sum of the K = floor(sr / (2 F0)) harmonics'
cosines, in closed form (the Dirichlet kernel), divided by sqrt(K / 2) for unit power, times
the voicing probability.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pwavenet.audio import mel as mel_lib

Array = jax.Array

__all__ = [
    "contour",
    "estimate_pitch",
    "excitation_from_mel",
    "pulse_train",
    "pulses",
    "upsample_frames",
]

F0_RANGE_HZ = (60.0, 500.0)
F0_STEP_CENTS = 10.0
PITCH_BANDS = 40
HIGHPASS_BANDS = 1.0  # sigma of the Gaussian average the high-pass removes, in bands
LOW_BANDS = 30  # "low" bands of the voicing features
LAMBDA = 0.3  # penalty per squared octave away from the local prior
PRIOR_FRAMES = 40.0  # sigma of the prior's Gaussian window, in frames
CONFIDENT = 0.6  # correlation above which a voiced frame informs the prior
CONTEXT = 2  # frames on either side the voicing classifier sees
# [features at t, t - 1, t + 1, t - 2, t + 2 (each: correlation, low level, level, tilt), bias]
VOICING_WEIGHTS = (
    3.8161, -0.9915, 1.4209, 0.5867, 2.2390, 1.6070, -1.5829, -0.8842, 1.7070, -0.2337,
    0.4603, 0.0979, 1.4919, 0.7119, -0.7525, -0.5311, 2.2081, 0.0836, -0.3364, -0.0849,
    -3.3136,
)  # fmt: skip


def _mel_fields(mel_config: Any) -> tuple:
    m = mel_config
    return (
        int(m.sample_rate),
        int(m.n_fft),
        int(m.get("win_length", m.n_fft)),
        int(m.n_mels),
        float(m.fmin),
        float(m.fmax),
    )


def candidates() -> np.ndarray:
    """The candidate F0s (Hz), log-spaced F0_STEP_CENTS apart."""
    lo, hi = F0_RANGE_HZ
    step = F0_STEP_CENTS / 1200.0 * math.log(2.0)
    return np.exp(np.arange(math.log(lo), math.log(hi), step))


def highpass_matrix(n: int, width: float) -> np.ndarray:
    """(n, n): y = x minus its Gaussian average over bands (sigma `width`, edge-normalized)."""
    i = np.arange(n)
    g = np.exp(-0.5 * np.square((i[:, None] - i[None, :]) / width))
    g /= g.sum(axis=1, keepdims=True)
    return np.eye(n) - g


@functools.lru_cache(maxsize=4)
def pitch_templates(
    sample_rate: int, n_fft: int, win_length: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """(candidates, PITCH_BANDS): each candidate F0's high-passed, normalized log-mel
    harmonic template (the module docstring)."""
    weights, window = mel_lib.htk_filterbank_and_window(
        sample_rate, n_fft, win_length, n_mels, fmin, fmax
    )
    oversample = 64
    lobe = np.abs(np.fft.rfft(window.astype(np.float64), n=n_fft * oversample))
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    out = []
    for f0 in candidates():
        harmonics = np.arange(1, int(fmax / f0) + 1) * f0
        offset = np.abs(freqs[None, :] - harmonics[:, None]) / sample_rate * n_fft * oversample
        magnitude = np.where(
            offset < 8 * oversample, np.interp(offset, np.arange(len(lobe)), lobe), 0.0
        ).sum(axis=0)
        out.append(magnitude @ weights.astype(np.float64))
    mel = np.stack(out)
    log_mel = np.log(mel + 1e-3 * mel.max(axis=1, keepdims=True))
    t = (log_mel @ highpass_matrix(n_mels, HIGHPASS_BANDS).T)[:, :PITCH_BANDS]
    t -= t.mean(axis=1, keepdims=True)
    # (A mel too coarse to resolve any harmonic gives flat templates: zeros, not NaNs.)
    return (t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _shift(x: Array, s: int) -> Array:
    """x[t - s] along axis -2 (frames), edge-padded; s < 0 looks ahead."""
    frames = x.shape[-2]
    index = jnp.clip(jnp.arange(frames) - s, 0, frames - 1)
    return jnp.take(x, index, axis=-2)


def _gaussian_smooth(v: Array) -> Array:
    """sum_s v[..., s] exp(-(t - s)^2 / (2 PRIOR_FRAMES^2)) over |t - s| <= 3 PRIOR_FRAMES
    (zeros beyond the ends): a convolution, so memory and time grow with the frames, not
    their square."""
    reach = int(3 * PRIOR_FRAMES)
    offsets = np.arange(-reach, reach + 1)
    kernel = jnp.asarray(np.exp(-0.5 * np.square(offsets / PRIOR_FRAMES)), jnp.float32)
    flat = v.reshape(-1, v.shape[-1])
    padded = jnp.pad(flat, ((0, 0), (reach, reach)))
    out = jax.vmap(lambda row: jnp.convolve(row, kernel, mode="valid"))(padded)
    return out.reshape(v.shape)


def _refine(score: Array, log_f0s: Array) -> Array:
    """Log F0 (..., frames) of each frame's best candidate, refined by a parabola."""
    n = score.shape[-1]
    j = jnp.clip(jnp.argmax(score, axis=-1), 1, n - 2)
    take = lambda k: jnp.take_along_axis(score, k[..., None], axis=-1)[..., 0]
    a, b, c = take(j - 1), take(j), take(j + 1)
    delta = jnp.clip(0.5 * (a - c) / jnp.minimum(a - 2 * b + c, -1e-9), -0.5, 0.5)
    return log_f0s[j] + delta * (log_f0s[1] - log_f0s[0])


def estimate_pitch(log_mel: Array, mel_config: Any) -> tuple[Array, Array]:
    """(f0 in Hz, voicing probability), each (..., frames), from log-mel (..., frames, n_mels)
    in the definition `mel_config` describes (natural-log presets only)."""
    fields = _mel_fields(mel_config)
    templates = jnp.asarray(pitch_templates(*fields))
    log_f0s = jnp.asarray(np.log(candidates()), jnp.float32)
    n_mels = fields[3]
    mel = log_mel.astype(jnp.float32)
    highpass = jnp.asarray(highpass_matrix(n_mels, HIGHPASS_BANDS)[:PITCH_BANDS], jnp.float32)
    x = mel @ highpass.T
    x = x - jnp.mean(x, axis=-1, keepdims=True)
    x = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)
    corr = x @ templates.T  # (..., frames, candidates)
    peak = jnp.max(corr, axis=-1)

    def level(v):
        v = jax.nn.logsumexp(v, axis=-1)
        return v, v - jnp.max(v, axis=-1, keepdims=True)

    low, low_rel = level(mel[..., :LOW_BANDS])
    high, _ = level(mel[..., LOW_BANDS:])
    _, all_rel = level(mel)
    feats = jnp.stack([peak, low_rel, all_rel, jnp.clip(low - high, -6.0, 6.0)], axis=-1)
    cols = [feats]
    for s in range(1, CONTEXT + 1):
        cols += [_shift(feats, s), _shift(feats, -s)]
    cols.append(jnp.ones_like(feats[..., :1]))
    voiced = jax.nn.sigmoid(jnp.concatenate(cols, axis=-1) @ jnp.asarray(VOICING_WEIGHTS))

    first = _refine(corr, log_f0s)
    weight = ((peak > CONFIDENT) & (voiced > 0.5)).astype(jnp.float32)
    num = _gaussian_smooth(weight * first)
    den = _gaussian_smooth(weight)
    overall = jnp.sum(weight * first, -1, keepdims=True) / jnp.maximum(
        jnp.sum(weight, -1, keepdims=True), 1e-9
    )
    prior = (num + 1e-3 * overall) / (den + 1e-3)
    penalty = LAMBDA * jnp.square((log_f0s - prior[..., None]) / math.log(2.0))
    return jnp.exp(_refine(corr - penalty, log_f0s)), voiced


def upsample_frames(v: Array, hop: int, valid=None) -> Array:
    """Per-frame values (..., frames) -> per-sample (..., frames * hop), linear between frame
    centres (sample n lies at frame (n + 0.5) / hop - 0.5), held beyond the first and the
    last; with `valid` (may be traced), the frames from it on are padding and the last real
    frame is held over them, as at the end of an unpadded input."""
    frames = v.shape[-1]
    last = frames - 1 if valid is None else jnp.maximum(valid - 1, 0)
    t = (jnp.arange(frames * hop, dtype=jnp.float32) + 0.5) / hop - 0.5
    lo = jnp.clip(jnp.floor(t), 0, last).astype(jnp.int32)
    hi = jnp.clip(lo + 1, 0, last)
    w = jnp.clip(t - lo, 0.0, 1.0)
    return jnp.take(v, lo, axis=-1) * (1 - w) + jnp.take(v, hi, axis=-1) * w


def contour(f0: Array, voiced: Array, hop: int, valid=None) -> tuple[Array, Array]:
    """(F0 in Hz, voicing), each (..., frames * hop): per-frame values interpolated between
    frame centres to every sample (log F0 linearly; `valid` as in `upsample_frames`). A
    sample reads its frame and one neighbour only, so a window of frames gives the contour of
    its inner samples exactly."""
    f = jnp.exp(upsample_frames(jnp.log(f0.astype(jnp.float32)), hop, valid))
    return f, upsample_frames(voiced.astype(jnp.float32), hop, valid)


def pulses(f: Array, v: Array, sample_rate: int, phase: Array | float = 0.0):
    """(band-limited unit-power pulses (..., T), the phase after them (...)) for a per-sample
    F0 f (Hz) and voicing v (..., T), starting at `phase` (cycles, in [0, 1)): a synthesis in
    pieces passes each piece the phase the one before ended at, and gets the pulses of one
    pass over the whole (up to float rounding: the pieces' running sums are shorter)."""
    # The running sum modulo 1, as a parallel scan: addition modulo 1 is associative, and
    # every partial sum stays below 1, so the phase keeps float32's precision over any length
    # (a plain cumsum of hours of cycles would round to its ulp at the total's magnitude).
    steps = f.astype(jnp.float32) / sample_rate
    start = jnp.asarray(phase, jnp.float32)[..., None]
    steps = jnp.concatenate([jnp.broadcast_to(start, (*steps.shape[:-1], 1)), steps], axis=-1)
    cycle = lax.associative_scan(lambda a, b: jnp.mod(a + b, 1.0), steps, axis=-1)[..., 1:]
    theta = 2 * jnp.pi * cycle
    k = jnp.floor(0.5 * sample_rate / f)
    half = jnp.sin(0.5 * theta)
    small = jnp.abs(half) < 1e-4
    dirichlet = jnp.where(
        small, k, jnp.sin((k + 0.5) * theta) / (2 * jnp.where(small, 1.0, half)) - 0.5
    )
    return v * dirichlet / jnp.sqrt(0.5 * k), cycle[..., -1]


def pulse_train(f0: Array, voiced: Array, hop: int, sample_rate: int) -> Array:
    """Band-limited unit-power pulses (..., frames * hop) at per-frame F0 (Hz), scaled by the
    per-frame voicing (0..1), both interpolated between frame centres (`contour`)."""
    return pulses(*contour(f0, voiced, hop), sample_rate)[0]


def excitation_from_mel(log_mel: Array, mel_config: Any, hop: int) -> tuple[Array, Array]:
    """(pulses, voicing), each (..., frames * hop): `pulse_train` at `estimate_pitch` of the
    mel, and the voicing probability interpolated between frame centres as the pulses' is."""
    f0, voiced = estimate_pitch(log_mel, mel_config)
    return pulse_train(f0, voiced, hop, int(mel_config.sample_rate)), upsample_frames(voiced, hop)
