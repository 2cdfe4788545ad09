"""The quality measures and the Griffin-Lim baseline against independent computations."""

import math

import ml_collections
import numpy as np
import pytest

from pwavenet import audio
from pwavenet.evaluation import quality, tables

SR = 22050


def _harmonic(f0: float, seconds: float, sr: int = SR, harmonics: int = 20) -> np.ndarray:
    """A vowel-like signal: harmonics of f0 with falling amplitudes."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1) if k * f0 < sr / 2)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float64)


def _noise(seconds: float, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def test_identical_signals_score_the_reference_ceiling():
    x = _harmonic(140.0, 1.5) + _noise(1.5, level=0.01)
    m = quality.measure(x, x, SR)
    assert m["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert m["pesq_wb"] == pytest.approx(4.64, abs=0.01)  # P.862.2's maximum MOS-LQO
    assert m["mcd_db"] == 0.0 and m["mrstft"] == 0.0 and m["periodicity_rmse"] == 0.0
    assert m["f0_rmse_cents"] == 0.0 and m["vuv_error"] == 0.0


def test_intelligibility_and_pesq_fall_as_noise_rises():
    x = _harmonic(120.0, 2.0) * np.repeat(np.random.default_rng(1).uniform(0.2, 1, 20), SR // 10)
    scores = [
        (quality.stoi(x, y, SR), quality.pesq_wb(x, y, SR))
        for y in (x + _noise(2.0, 2, level) for level in (0.001, 0.03, 0.3))
    ]
    stoi, pesq = zip(*scores)
    assert stoi[0] > stoi[1] > stoi[2] and pesq[0] > pesq[1] > pesq[2]
    assert pesq[2] < 1.5 and pesq[0] > pesq[2] + 0.3


def test_f0_of_a_known_pitch_and_its_rmse_in_cents():
    x = _harmonic(150.0, 1.0)
    f0 = quality.f0_track(x, SR)
    voiced = f0[f0 > 0]
    assert len(voiced) > 0.8 * len(f0)
    assert np.median(np.abs(1200 * np.log2(voiced / 150.0))) < 10
    # A pitch 100 cents (one semitone) higher: the RMSE says 100 cents, no frame differs in voicing.
    y = _harmonic(150.0 * 2 ** (100 / 1200), 1.0)
    errors = quality.pitch_errors(x, y, SR)
    assert errors["f0_rmse_cents"] == pytest.approx(100.0, abs=10.0)
    assert errors["vuv_error"] < 0.05


def test_voicing_error_of_silence_against_a_vowel():
    """The reference is half silence, half vowel; silence throughout misses exactly the vowel's
    frames, and the vowel throughout misses the silent ones."""
    half = int(0.75 * SR)
    vowel = _harmonic(180.0, 0.75)
    reference = np.concatenate([np.zeros(half), vowel])
    silence = np.zeros_like(reference)
    f0 = quality.f0_track(reference, SR)
    voiced_fraction = np.mean(f0 > 0)
    assert voiced_fraction == pytest.approx(0.5, abs=0.08)
    assert quality.pitch_errors(reference, silence, SR)["vuv_error"] == pytest.approx(
        voiced_fraction, abs=1e-9
    )
    assert math.isnan(quality.pitch_errors(reference, silence, SR)["f0_rmse_cents"])
    everywhere = np.concatenate([_harmonic(180.0, 0.75), vowel])
    assert quality.pitch_errors(reference, everywhere, SR)["vuv_error"] == pytest.approx(
        1 - voiced_fraction, abs=0.06
    )


def test_periodicity_matches_a_brute_force_autocorrelation():
    x = _harmonic(200.0, 0.5) + _noise(0.5, 3, 0.05)
    p = quality.periodicity(x, SR)
    # Frame 10 by hand: the Hann-windowed frame's autocorrelation, lag by lag, over the
    # window's own, maximised over the lags of 60 to 500 Hz.
    padded = np.pad(x, (512, 512))
    frame = padded[10 * 256 : 10 * 256 + 1024]
    window = np.hanning(1026)[1:-1]
    w = frame * window

    def r(v, lag):
        return float(np.dot(v[: len(v) - lag], v[lag:]))

    lags = range(int(SR / 500), int(math.ceil(SR / 60)) + 1)
    expected = max((r(w, k) / r(w, 0)) / (r(window, k) / r(window, 0)) for k in lags)
    assert p[10] == pytest.approx(min(expected, 1.0), abs=1e-9)
    # A steady vowel is periodic, white noise is not.
    assert np.median(quality.periodicity(_harmonic(120.0, 0.5), SR)[4:-4]) > 0.9
    assert np.median(quality.periodicity(_noise(0.5, 4), SR)[4:-4]) < 0.5


def test_all_pass_alpha_matches_the_published_table():
    """SPTK's customary warping constants for speech analysis at each sample rate."""
    for sample_rate, alpha in ((22050, 0.455), (24000, 0.466), (44100, 0.544), (48000, 0.554)):
        assert quality.all_pass_alpha(sample_rate) == pytest.approx(alpha, abs=0.0015)


def test_warped_cepstrum_recovers_the_coefficients_of_a_known_envelope():
    """An envelope built from chosen mel-cepstra, log|H(w)| = sum_m c_m cos(m w~(w)) with w~
    the all-pass warped frequency (here from the all-pass filter's complex response), analyses
    back to them."""
    rng = np.random.default_rng(0)
    order, alpha, bins = 24, 0.455, 1025
    c = rng.normal(scale=0.5, size=(3, order + 1)) / (1 + np.arange(order + 1))
    w = np.linspace(0, np.pi, bins)
    z_inv = np.exp(-1j * w)
    w_warped = -np.unwrap(np.angle((z_inv - alpha) / (1 - alpha * z_inv)))  # all-pass phase
    log_magnitude = np.cos(np.arange(order + 1)[None, :, None] * w_warped) * c[:, :, None]
    power = np.exp(2 * log_magnitude.sum(axis=1))
    recovered = quality.warped_cepstrum(power, order, alpha)
    np.testing.assert_allclose(recovered, c, atol=2e-4)


def test_mel_cepstral_distortion_judges_envelopes():
    """The probes that the single-frame mel cepstrum failed: noises of one spectrum are close,
    a delay is close, a different envelope is far; a gain is free and silence is not scored."""
    rng = np.random.default_rng(3)
    vowel = _harmonic(130, 1.0) + _noise(1.0, 5, level=0.003)
    white = [0.1 * rng.standard_normal(SR) for _ in range(2)]
    same_spectrum = quality.mel_cepstral_distortion(white[0], white[1], SR)
    different = quality.mel_cepstral_distortion(vowel, white[0], SR)
    delayed = quality.mel_cepstral_distortion(vowel, np.roll(vowel, 128), SR)
    assert same_spectrum < 6.0 and delayed < 6.0 and different > 2 * max(same_spectrum, delayed)
    assert quality.mel_cepstral_distortion(vowel, vowel, SR) == 0.0
    assert quality.mel_cepstral_distortion(vowel, 0.5 * vowel, SR) == pytest.approx(0, abs=1e-5)
    # A second of digital silence in the reference: what the audio holds there is not scored.
    with_silence = np.concatenate([vowel, np.zeros(SR)])
    noisy_tail = np.concatenate([vowel, 0.1 * rng.standard_normal(SR)])
    clean_tail = np.concatenate([vowel, np.zeros(SR)])
    # (Only the frames whose analysis window straddles the vowel's end can differ: scored,
    # the noise would add about 20 dB to a third of the frames.)
    assert quality.mel_cepstral_distortion(with_silence, noisy_tail, SR) == pytest.approx(
        quality.mel_cepstral_distortion(with_silence, clean_tail, SR), abs=0.5
    )


def test_gross_and_fine_pitch_errors():
    """Half the audio an octave up (a gross error), half 30 cents up (a fine one)."""
    half = 0.6
    x = np.concatenate([_harmonic(150.0, half), _harmonic(150.0, half)])
    y = np.concatenate([_harmonic(300.0, half), _harmonic(150.0 * 2 ** (30 / 1200), half)])
    errors = quality.pitch_errors(x, y, SR)
    assert errors["gross_pitch_error"] == pytest.approx(0.5, abs=0.08)
    # Harvest glides between the halves over a few frames, which count as fine errors.
    assert errors["f0_fine_cents"] == pytest.approx(30.0, abs=15.0)
    assert errors["f0_rmse_cents"] > 600  # the octave errors dominate the plain RMSE


def test_multi_resolution_stft_distance_of_a_doubled_signal():
    """|2S - S| / |S| = 1 and |log 2S - log S| = ln 2 at every resolution."""
    x = _noise(1.0, 7)
    assert quality.multi_resolution_stft_distance(x, 2.0 * x) == pytest.approx(
        1.0 + math.log(2.0), rel=1e-6
    )


def test_pesq_is_undefined_without_speech():
    """PESQ finds no utterance in digital silence or in a reference shorter than its analysis
    window: NaN, which the means leave out."""
    assert math.isnan(quality.pesq_wb(np.zeros(SR), _noise(1.0), SR))
    short = _harmonic(150.0, 0.05)
    assert math.isnan(quality.pesq_wb(short, short, SR))


def test_shapes_must_agree():
    with pytest.raises(ValueError, match=r"shapes \(100,\) and \(99,\)"):
        quality.measure(np.zeros(100), np.zeros(99), SR)


def _mel_config(**fields):
    c = ml_collections.ConfigDict(
        dict(
            sample_rate=SR,
            n_fft=1024,
            win_length=1024,
            hop_length=256,
            n_mels=80,
            fmin=0.0,
            fmax=8000.0,
            log_floor=1e-5,
            preset="pwavenet",
        )
    )
    c.update(fields)
    return c


@pytest.mark.parametrize("preset", audio.MEL_PRESETS)
def test_griffin_lim_reproduces_the_mel_and_the_frame_alignment(preset):
    """Griffin-Lim's audio has (nearly) the mel it was given, and its frames sit where the
    preset's frames are: shifting it by half a hop makes the match worse."""
    config = _mel_config(preset=preset, log_floor=1e-10 if preset == "espnet" else 1e-5)
    unit = math.log(10.0) if preset == "espnet" else 1.0  # log10 features: distances / ln 10
    rng = np.random.default_rng(8)
    # Tones whose level and pitch jump every 3000 samples: misalignment shows at every jump.
    n = int(1.5 * SR)
    levels = np.repeat(rng.uniform(0.02, 0.3, n // 3000 + 1), 3000)[:n]
    freqs = np.repeat(rng.uniform(150, 900, n // 3000 + 1), 3000)[:n]
    x = (levels * np.sin(2 * np.pi * np.cumsum(freqs) / SR)).astype(np.float32)
    log_mel = audio.log_mel_spectrogram(x, config)
    y = quality.griffin_lim(log_mel, config, len(x))
    assert y.shape == x.shape and y.dtype == np.float32

    def distance(z):
        return float(np.mean(np.abs(audio.log_mel_spectrogram(z, config) - log_mel)))

    at_zero = distance(y)
    half = config.hop_length // 2
    assert at_zero < 0.8 / unit
    assert at_zero < distance(np.roll(y, half)) and at_zero < distance(np.roll(y, -half))
    assert distance(_noise(1.5, 9).astype(np.float32)) > 5 * at_zero
    with pytest.raises(ValueError, match="frames, 80"):
        quality.griffin_lim(log_mel[:, :10], config, len(x))


def test_means_leave_out_undefined_values():
    rows = [dict.fromkeys(quality.MEASURES, 1.0), dict.fromkeys(quality.MEASURES, 3.0)]
    rows[1]["f0_rmse_cents"] = math.nan
    means = quality.mean_measures(rows)
    assert means["stoi"] == 2.0 and means["f0_rmse_cents"] == 1.0


def test_an_earlier_table_is_reused_only_for_the_same_utterances_and_sampling():
    """`tables.reusable_rows`: every row of an earlier table when split, seed, batch size and
    the utterance ids (in order) all match; none when any one differs."""
    setting = {"split": "validation", "seed": 0, "batch_size": 4}
    rows = {name: [{"id": "a"}, {"id": "b"}] for name in ("reference", "griffin_lim", "teacher")}
    earlier = {**setting, "per_utterance": rows}
    assert tables.reusable_rows(earlier, setting, ["a", "b"]) == list(rows)
    assert tables.reusable_rows(None, setting, ["a", "b"]) == []
    assert tables.reusable_rows(earlier, setting, ["b", "a"]) == []
    assert tables.reusable_rows(earlier, setting, ["a"]) == []
    for key, other in (("split", "test"), ("seed", 1), ("batch_size", 2)):
        assert tables.reusable_rows(earlier, {**setting, key: other}, ["a", "b"]) == []
    # A table from before these fields were recorded is not reused.
    assert tables.reusable_rows({"per_utterance": rows}, setting, ["a", "b"]) == []
