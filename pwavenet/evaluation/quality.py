"""Speech quality measures of vocoded audio against the reference, and the Griffin-Lim baseline.

Every measure compares one generated waveform with the reference utterance whose mel produced
it (same length, time-aligned: no alignment search), at the corpus's sample rate:

  stoi              short-time objective intelligibility (pystoi), in [0, 1]; 1 = reference
  pesq_wb           wide-band PESQ (ITU-T P.862.2, the `pesq` package) on both signals resampled
                    to 16 kHz; 4.64 = reference, about 1 = noise
  mcd_db            mel-cepstral distortion in dB between spectral envelopes:
                    (10 / ln 10) sqrt(2 sum_d (c_d - c'_d)^2), d = 1..24, averaged over the
                    reference's speech frames (envelope power within 50 dB of its loudest
                    frame). c are the all-pass warped (mel) cepstra, as SPTK defines them, of
                    WORLD's CheapTrick envelope (pyworld) at each signal's own harvest F0, 5 ms
                    frames, on both signals resampled to 16 kHz (as wide-band PESQ): 0 to
                    8 kHz, the band the mels here describe (above it a vocoder can only guess,
                    and a corpus may hold nothing but its noise floor); warping alpha 0.41,
                    fitted to the mel scale. c_0 (the level) is left out, so a gain scores 0
  f0_rmse_cents     RMSE of 1200 log2(f0 / f0_ref) over frames both call voiced; F0 and voicing
                    from WORLD's harvest (pyworld), 5 ms frames, 60 to 500 Hz
  vuv_error         the fraction of frames whose voiced/unvoiced decision differs from the
                    reference's
  gross_pitch_error the fraction of frames voiced in both whose F0 is more than 20% off the
                    reference's (octave and other gross errors)
  f0_fine_cents     the F0 RMSE in cents over the frames voiced in both without a gross error
  periodicity_rmse  RMSE over frames of the periodicity (below) against the reference's
  mrstft            multi-resolution STFT distance: per resolution (FFT 512/1024/2048, hop a
                    quarter, Hann), spectral convergence ||S - S_ref||_F / ||S_ref||_F plus the
                    mean |log S - log S_ref| (magnitudes floored at 1e-5), averaged over the
                    three; 0 = reference

Periodicity of a frame (1024 samples, 256 hop) is the height of the highest peak of its
normalized autocorrelation for pitch periods of 60 to 500 Hz, the autocorrelation of the
Hann-windowed frame divided by the window's own (Boersma's correction, which makes a
periodic signal score near 1 at its period): about 1 for a steady vowel, near 0 for white
noise; frames 50 dB below the utterance's loudest are silence and score 0.

`griffin_lim(log_mel, mel_config)` inverts a log-mel of any `mel.preset`
(audio.log_mel_spectrogram) to audio: the mel magnitudes mapped back to FFT bins by
non-negative least squares against the same filterbank, then librosa's Griffin-Lim with the
same FFT, window and hop, shifted to the preset's frame centres. It is the classical floor a
neural vocoder must beat.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import librosa
import numpy as np
import pesq
import pystoi
import pyworld
from scipy import signal

from pwavenet import audio as audio_lib

__all__ = [
    "MEASURES",
    "f0_track",
    "griffin_lim",
    "measure",
    "all_pass_alpha",
    "compare_f0_tracks",
    "mean_measures",
    "mel_cepstral_distortion",
    "mel_cepstrum",
    "warped_cepstrum",
    "multi_resolution_stft_distance",
    "periodicity",
    "pesq_wb",
    "pitch_errors",
    "stoi",
]

# name -> whether higher is better; the order of the report's tables.
MEASURES: dict[str, bool] = {
    "stoi": True,
    "pesq_wb": True,
    "mcd_db": False,
    "f0_rmse_cents": False,
    "vuv_error": False,
    "gross_pitch_error": False,
    "f0_fine_cents": False,
    "periodicity_rmse": False,
    "mrstft": False,
}

F0_RANGE_HZ = (60.0, 500.0)
_FRAME, _HOP = 1024, 256
_STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
_SILENCE_DB = 50.0
_F0_FRAME_PERIOD_MS = 5.0
_MCD_ORDER = 24
_MCD_RATE = 16000  # the envelopes are compared over 0 to 8 kHz
_GROSS_PITCH_ERROR = 0.2  # relative F0 deviation beyond which a frame's pitch is grossly wrong


def _pair(reference: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, np.float64)
    audio = np.asarray(audio, np.float64)
    if reference.ndim != 1 or reference.shape != audio.shape:
        raise ValueError(
            f"Quality measures compare two 1-D waveforms of one length; got shapes "
            f"{reference.shape} and {audio.shape}."
        )
    return reference, audio


def stoi(reference: np.ndarray, audio: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility of `audio` against `reference` (pystoi)."""
    reference, audio = _pair(reference, audio)
    return float(pystoi.stoi(reference, audio, sample_rate, extended=False))


def pesq_wb(reference: np.ndarray, audio: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, 1.04 to 4.64) at 16 kHz; NaN where PESQ finds no speech in
    the reference (e.g. shorter than its quarter-second analysis needs)."""
    reference, audio = _pair(reference, audio)
    if not np.any(reference):
        return math.nan  # digital silence: no speech for PESQ to find
    if sample_rate != 16000:
        g = math.gcd(16000, sample_rate)
        reference = signal.resample_poly(reference, 16000 // g, sample_rate // g)
        audio = signal.resample_poly(audio, 16000 // g, sample_rate // g)
    try:
        return float(pesq.pesq(16000, reference, audio, "wb"))
    except (pesq.PesqError, ValueError):
        return math.nan


def _warp(omega: np.ndarray, alpha: float) -> np.ndarray:
    """The phase response of the first-order all-pass (z^-1 - alpha) / (1 - alpha z^-1):
    frequency omega in [0, pi] mapped to the warped (mel-like) frequency; -alpha inverts it."""
    return omega + 2.0 * np.arctan(alpha * np.sin(omega) / (1.0 - alpha * np.cos(omega)))


@functools.lru_cache(maxsize=8)
def all_pass_alpha(sample_rate: float) -> float:
    """The all-pass constant whose frequency warping best fits the mel scale
    (log(1 + f / 1000), normalized at Nyquist) in RMS, to 0.001: 0.455 at 22.05 kHz."""
    f = np.linspace(0.0, sample_rate / 2.0, 1000)
    mel = np.log1p(f / 1000.0) / math.log1p(sample_rate / 2000.0)
    omega = np.pi * f / (sample_rate / 2.0)
    alphas = np.arange(0.0, 1.0, 0.001)
    errors = [np.mean(np.square(_warp(omega, a) / np.pi - mel)) for a in alphas]
    return float(alphas[int(np.argmin(errors))])


def warped_cepstrum(power_envelope: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """Mel-cepstra c_0..c_order (..., order + 1) of power spectral envelopes (..., bins) on
    0..pi: log |H| = sum_m c_m cos(m w~), w~ the all-pass warped frequency (SPTK's definition).
    The log-magnitude is resampled on a uniform warped grid; its cosine series gives c."""
    bins = power_envelope.shape[-1]
    grid = np.linspace(0.0, np.pi, bins)
    log_magnitude = 0.5 * np.log(np.maximum(power_envelope, 1e-30))
    # The linear frequencies that land on the uniform warped grid, as fractional bins: one
    # linear interpolation shared by every frame.
    position = np.clip(_warp(grid, -alpha) / grid[1], 0.0, bins - 1)
    lo = np.minimum(np.floor(position).astype(np.int64), bins - 2)
    weight = position - lo
    warped = log_magnitude[..., lo] * (1.0 - weight) + log_magnitude[..., lo + 1] * weight
    c = np.fft.irfft(warped, n=2 * (bins - 1), axis=-1)[..., : order + 1]
    c[..., 1:] *= 2.0  # one-sided cosine series
    return c


def mel_cepstrum(
    x: np.ndarray, sample_rate: int, f0: np.ndarray | None = None, order: int = _MCD_ORDER
) -> tuple[np.ndarray, np.ndarray]:
    """(mel-cepstra (frames, order + 1), envelope power in dB (frames,)) of WORLD's CheapTrick
    envelope every 5 ms; `f0` is the signal's harvest track (f0_track), computed if None."""
    x = np.ascontiguousarray(x, np.float64)
    f0 = f0_track(x, sample_rate) if f0 is None else np.asarray(f0, np.float64)
    times = np.arange(len(f0)) * (_F0_FRAME_PERIOD_MS / 1000.0)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
    power_db = 10.0 * np.log10(np.sum(envelope, axis=-1) + 1e-30)
    return warped_cepstrum(envelope, order, all_pass_alpha(sample_rate)), power_db


def mel_cepstral_distortion(
    reference: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    order: int = _MCD_ORDER,
    reference_f0: np.ndarray | None = None,
    audio_f0: np.ndarray | None = None,
) -> float:
    """Mean mel-cepstral distortion in dB over the reference's speech frames, coefficients
    1..order of the spectral envelopes up to 8 kHz (see the module docstring); NaN in digital
    silence. `reference_f0` and `audio_f0` reuse harvest tracks (f0_track) already computed."""
    reference, audio = _pair(reference, audio)
    if not np.any(reference):
        return math.nan
    if sample_rate > _MCD_RATE:  # F0 tracks are in time (5 ms frames): they stay valid
        g = math.gcd(_MCD_RATE, sample_rate)
        reference = signal.resample_poly(reference, _MCD_RATE // g, sample_rate // g)
        audio = signal.resample_poly(audio, _MCD_RATE // g, sample_rate // g)
        sample_rate = _MCD_RATE
    c_ref, power_db = mel_cepstrum(reference, sample_rate, reference_f0, order)
    c, _ = mel_cepstrum(audio, sample_rate, audio_f0, order)
    n = min(len(c_ref), len(c))
    speech = power_db[:n] > power_db[:n].max() - _SILENCE_DB
    diff = c_ref[:n, 1:][speech] - c[:n, 1:][speech]
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(np.square(diff), axis=-1))
    return float(np.mean(per_frame))


def f0_track(
    x: np.ndarray, sample_rate: int, frame_period_ms: float = _F0_FRAME_PERIOD_MS
) -> np.ndarray:
    """F0 in Hz per frame (0 where unvoiced) from WORLD's harvest."""
    f0, _ = pyworld.harvest(
        np.ascontiguousarray(x, np.float64),
        sample_rate,
        f0_floor=F0_RANGE_HZ[0],
        f0_ceil=F0_RANGE_HZ[1],
        frame_period=frame_period_ms,
    )
    return f0


def pitch_errors(
    reference: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    reference_f0: np.ndarray | None = None,
    audio_f0: np.ndarray | None = None,
) -> dict[str, float]:
    """{'f0_rmse_cents', 'vuv_error', 'gross_pitch_error', 'f0_fine_cents'} of `audio`
    against `reference` (harvest's tracks). `reference_f0` and `audio_f0` reuse tracks already
    computed. The F0 errors are NaN when no frame is voiced in both (the fine error also when
    every such frame is a gross error)."""
    reference, audio = _pair(reference, audio)
    f0_ref = f0_track(reference, sample_rate) if reference_f0 is None else reference_f0
    f0 = f0_track(audio, sample_rate) if audio_f0 is None else audio_f0
    return compare_f0_tracks(f0_ref, f0)


def compare_f0_tracks(f0_ref: np.ndarray, f0: np.ndarray) -> dict[str, float]:
    """`pitch_errors` of two F0 tracks in Hz on the same frames (0 where unvoiced), cut to
    the shorter."""
    f0_ref, f0 = np.asarray(f0_ref, np.float64), np.asarray(f0, np.float64)
    n = min(len(f0_ref), len(f0))
    f0_ref, f0 = f0_ref[:n], f0[:n]
    voiced_ref, voiced = f0_ref > 0, f0 > 0
    both = voiced_ref & voiced
    cents = 1200.0 * np.log2(f0[both] / f0_ref[both])
    gross = np.abs(f0[both] / f0_ref[both] - 1.0) > _GROSS_PITCH_ERROR

    def rms(v):
        return float(np.sqrt(np.mean(np.square(v)))) if v.size else math.nan

    return {
        "f0_rmse_cents": rms(cents),
        "vuv_error": float(np.mean(voiced_ref != voiced)),
        "gross_pitch_error": float(np.mean(gross)) if both.any() else math.nan,
        "f0_fine_cents": rms(cents[~gross]),
    }


def periodicity(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-frame periodicity in [0, 1] (see the module docstring): (frames,)."""
    x = np.asarray(x, np.float64)
    x = np.pad(x, (_FRAME // 2, _FRAME // 2))
    frames = librosa.util.frame(x, frame_length=_FRAME, hop_length=_HOP, axis=0)  # (F, N)
    window = np.hanning(_FRAME + 2)[1:-1]
    n_fft = 2 * _FRAME

    def autocorrelation(v):  # (..., N) -> (..., N) for lags 0..N-1
        spectrum = np.fft.rfft(v, n=n_fft, axis=-1)
        return np.fft.irfft(np.abs(spectrum) ** 2, n=n_fft, axis=-1)[..., :_FRAME]

    r = autocorrelation(frames * window)
    r_window = autocorrelation(window)
    lo = int(sample_rate / F0_RANGE_HZ[1])
    hi = min(int(math.ceil(sample_rate / F0_RANGE_HZ[0])), _FRAME // 2)
    energy = r[:, 0]
    normalized = r[:, lo : hi + 1] / np.maximum(energy[:, None], 1e-20)
    normalized /= r_window[lo : hi + 1] / r_window[0]
    value = np.clip(normalized.max(axis=1), 0.0, 1.0)
    loud = energy > energy.max() * 10.0 ** (-_SILENCE_DB / 10.0) if energy.max() > 0 else energy > 0
    return np.where(loud, value, 0.0)


def multi_resolution_stft_distance(reference: np.ndarray, audio: np.ndarray) -> float:
    """Spectral convergence plus log-magnitude L1, averaged over three resolutions."""
    reference, audio = _pair(reference, audio)
    total = 0.0
    for n_fft, hop in _STFT_RESOLUTIONS:
        s_ref = np.abs(librosa.stft(reference, n_fft=n_fft, hop_length=hop))
        s = np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop))
        convergence = np.linalg.norm(s - s_ref) / max(np.linalg.norm(s_ref), 1e-12)
        log_l1 = np.mean(np.abs(np.log(np.maximum(s, 1e-5)) - np.log(np.maximum(s_ref, 1e-5))))
        total += convergence + log_l1
    return float(total / len(_STFT_RESOLUTIONS))


def measure(
    reference: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    reference_f0: np.ndarray | None = None,
    reference_periodicity: np.ndarray | None = None,
) -> dict[str, float]:
    """Every measure of MEASURES for one utterance. The reference's F0 track and periodicity
    may be passed in to avoid recomputing them for each system."""
    reference, audio = _pair(reference, audio)
    p_ref = (
        periodicity(reference, sample_rate)
        if reference_periodicity is None
        else (reference_periodicity)
    )
    p = periodicity(audio, sample_rate)
    f0_ref = f0_track(reference, sample_rate) if reference_f0 is None else reference_f0
    f0 = f0_track(audio, sample_rate)
    return {
        "stoi": stoi(reference, audio, sample_rate),
        "pesq_wb": pesq_wb(reference, audio, sample_rate),
        "mcd_db": mel_cepstral_distortion(
            reference, audio, sample_rate, reference_f0=f0_ref, audio_f0=f0
        ),
        **pitch_errors(reference, audio, sample_rate, f0_ref, f0),
        "periodicity_rmse": float(np.sqrt(np.mean(np.square(p - p_ref)))),
        "mrstft": multi_resolution_stft_distance(reference, audio),
    }


def mean_measures(per_utterance: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each measure over utterances, NaNs (undefined cases) left out."""
    out = {}
    for name in MEASURES:
        values = np.array([m[name] for m in per_utterance], np.float64)
        finite = values[np.isfinite(values)]
        out[name] = float(finite.mean()) if finite.size else math.nan
    return out


def griffin_lim(
    log_mel: np.ndarray, mel_config: Any, num_samples: int, n_iter: int = 64, seed: int = 0
) -> np.ndarray:
    """Audio (num_samples,) float32 from one utterance's log-mel (frames, n_mels) in the
    project's definition, by NNLS mel inversion and Griffin-Lim (see the module docstring)."""
    n_fft, win, hop = (
        int(mel_config.n_fft),
        int(mel_config.win_length),
        int(mel_config.hop_length),
    )
    log_mel = np.asarray(log_mel, np.float64)
    if log_mel.ndim != 2 or log_mel.shape[1] != int(mel_config.n_mels):
        raise ValueError(
            f"griffin_lim takes one utterance's log-mel (frames, {mel_config.n_mels}); got "
            f"shape {log_mel.shape}."
        )
    basis = audio_lib.mel_filterbank(mel_config).astype(np.float64)  # (n_fft // 2 + 1, n_mels)
    mel = audio_lib.mel_magnitude(log_mel, mel_config)
    magnitude = librosa.util.nnls(basis.T, mel.T)  # (n_fft // 2 + 1, frames)
    y = librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=hop,
        win_length=win,
        n_fft=n_fft,
        window="hann",
        center=True,
        random_state=seed,
    )
    # librosa centres frame i on sample i hop; the project centres it on i hop + shift.
    left, _ = audio_lib.mel_padding(mel_config)
    shift = n_fft // 2 - left
    y = np.concatenate([np.zeros(shift), y])[:num_samples]
    y = np.pad(y, (0, num_samples - len(y)))
    return np.clip(y, -1.0, 1.0).astype(np.float32)
