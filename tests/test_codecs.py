"""Tests for pwavenet.audio: mu-law companding/quantization and uniform 16-bit bins.

Reference values come from float64 numpy transcriptions of the formulas, never from
the module under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from pwavenet import audio

MU = 255


def _dense_grid(n: int = 200_001) -> np.ndarray:
    """Float32 grid over [-1, 1] plus values very close to 0 and to the ends."""
    below_one = np.nextafter(np.float32(1), np.float32(0))
    extra = np.array(
        [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1.0, -1.0, below_one, -below_one], np.float32
    )
    return np.sort(np.concatenate([np.linspace(-1, 1, n, dtype=np.float32), extra]))


def _np_compress(x: np.ndarray, mu: int) -> np.ndarray:
    x = x.astype(np.float64)
    return np.sign(x) * np.log(1.0 + mu * np.abs(x)) / np.log(1.0 + mu)


def _np_expand(y: np.ndarray, mu: int) -> np.ndarray:
    y = y.astype(np.float64)
    return np.sign(y) * ((1.0 + mu) ** np.abs(y) - 1.0) / mu


# ------------------------------------------------------------------------- mu-law


def test_compress_expand_round_trip():
    x = _dense_grid()
    y = audio.mulaw_compress(x)
    np.testing.assert_allclose(np.asarray(audio.mulaw_expand(y)), x, rtol=0, atol=1e-6)
    # And the other way round, over the compressed axis.
    np.testing.assert_allclose(
        np.asarray(audio.mulaw_compress(audio.mulaw_expand(x))), x, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("mu", [255, 15])
def test_compress_and_expand_match_formula(mu):
    x = _dense_grid(20_001)
    y = np.asarray(audio.mulaw_compress(x, mu))
    np.testing.assert_allclose(y, _np_compress(x, mu), rtol=1e-6, atol=1e-7)
    assert y.min() == -1.0 and y.max() == 1.0
    np.testing.assert_allclose(
        np.asarray(audio.mulaw_expand(x, mu)), _np_expand(x, mu), rtol=1e-5, atol=1e-7
    )
    # Small inputs keep full relative precision (log1p / expm1, not log / pow).
    tiny = np.array([1e-7, -3e-9], np.float32)
    np.testing.assert_allclose(
        np.asarray(audio.mulaw_compress(tiny, mu)), _np_compress(tiny, mu), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(audio.mulaw_expand(tiny, mu)), _np_expand(tiny, mu), rtol=1e-5
    )


@pytest.mark.parametrize("mu", [255, 15])
def test_encode_matches_numpy_reference(mu):
    x = _dense_grid()
    got = np.asarray(audio.mulaw_encode(x, mu))
    assert got.dtype == np.int32
    scaled = (_np_compress(x, mu) + 1.0) / 2.0 * mu
    want = np.round(scaled).astype(np.int64)  # numpy rounds half to even too
    # float32 evaluation may land on the other side of a .5 tie that float64 sees
    # as a hair off; allow +-1 only within 1e-4 of a tie and require those to be rare.
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-4
    assert near_tie.mean() < 1e-3
    np.testing.assert_array_equal(got[~near_tie], want[~near_tie])
    assert np.all(np.abs(got[near_tie] - want[near_tie]) <= 1)


def test_encode_exact_values():
    # (f(x) + 1) / 2 * 255 is 0 at x = -1, 255 at x = 1 and exactly 127.5 at x = 0;
    # round-half-to-even sends 127.5 to 128.
    got = audio.mulaw_encode(jnp.array([-1.0, 1.0, 0.0, -0.0]))
    np.testing.assert_array_equal(np.asarray(got), [0, 255, 128, 128])
    # Inputs outside [-1, 1] are clipped first.
    np.testing.assert_array_equal(np.asarray(audio.mulaw_encode(np.array([-3.0, 7.5]))), [0, 255])
    # The smallest positive and negative inputs fall on either side of the tie.
    tiny = np.array([1e-6, -1e-6])
    np.testing.assert_array_equal(np.asarray(audio.mulaw_encode(tiny)), [128, 127])


def test_encode_monotone_and_hits_every_class():
    x = _dense_grid()
    classes = np.asarray(audio.mulaw_encode(x))
    assert np.all(np.diff(classes) >= 0)
    np.testing.assert_array_equal(np.unique(classes), np.arange(MU + 1))


def test_decode_matches_formula_and_inverts_encode():
    classes = np.arange(MU + 1)
    decoded = np.asarray(audio.mulaw_decode(classes))
    want = _np_expand(2.0 * classes / MU - 1.0, MU)
    np.testing.assert_allclose(decoded, want, rtol=1e-5, atol=1e-7)
    assert decoded[0] == -1.0 and decoded[-1] == 1.0
    # Each class's decoded value is encoded back to that class.
    np.testing.assert_array_equal(np.asarray(audio.mulaw_encode(decoded)), classes)


def test_decode_error_bounded_by_half_step():
    """|decode(encode(x)) - x| <= half a compressed step times the steepest slope of expand.

    With y = f(x) and y_hat = 2 c / mu - 1 the centre of x's class, rounding gives
    |y - y_hat| <= 1 / mu (half the step 2 / mu). expand g has
    g'(t) = ln(1 + mu) / mu * (1 + mu)^|t|, increasing in |t|, so by the mean value
    theorem |g(y) - g(y_hat)| <= 1 / mu * ln(1 + mu) / mu * (1 + mu)^min(1, |y_hat| + 1 / mu).
    """
    x = _dense_grid()
    classes = np.asarray(audio.mulaw_encode(x))
    err = np.abs(np.asarray(audio.mulaw_decode(classes), np.float64) - x)

    y_hat = 2.0 * classes / MU - 1.0
    max_slope = np.log1p(MU) / MU * (1.0 + MU) ** np.minimum(1.0, np.abs(y_hat) + 1.0 / MU)
    bound = max_slope / MU
    slack = 1e-6 * np.abs(x) + 1e-7  # float32 evaluation of compress/expand
    assert np.all(err <= bound + slack)
    # The bound is nearly attained at the widest steps (near |x| = 1), so it is not vacuous.
    assert np.max(err / bound) > 0.9


def test_mulaw_accepts_numpy_batches_and_jits():
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 5)).astype(np.float32)
    eager = audio.mulaw_encode(x)
    jitted = jax.jit(audio.mulaw_encode)(x)
    assert eager.shape == (2, 3, 5) and eager.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    decoded = jax.jit(audio.mulaw_decode)(eager)
    assert decoded.shape == (2, 3, 5) and jnp.issubdtype(decoded.dtype, jnp.floating)
    # Integer waveforms are treated as floats, not truncated.
    assert float(audio.mulaw_compress(np.int32(1))) == 1.0


# ----------------------------------------------------------------- uniform bins


def test_16bit_levels_round_trip():
    levels = np.arange(audio.NUM_16BIT_BINS)
    centers = np.asarray(audio.bin_center(levels))
    np.testing.assert_allclose(centers, -1.0 + 2.0 * levels / 65535.0, rtol=0, atol=1.2e-7)
    assert centers[0] == -1.0 and centers[-1] == 1.0
    np.testing.assert_array_equal(np.asarray(audio.bin_index(centers)), levels)


def test_16bit_quantization_error_and_edges():
    x = _dense_grid()
    levels = np.asarray(audio.bin_index(x))
    assert levels.dtype == np.int32 and levels.min() == 0 and levels.max() == 65535
    assert np.all(np.diff(levels) >= 0)
    err = np.abs(np.asarray(audio.bin_center(levels), np.float64) - x)
    half_width = 1.0 / 65535.0
    assert np.all(err <= half_width * (1 + 1e-2))  # float32 rounding of the centres
    np.testing.assert_array_equal(
        np.asarray(audio.bin_index(np.array([-2.0, -1.0, 1.0, 2.0]))), [0, 0, 65535, 65535]
    )


def _nearest_pcm16(x):
    """int16 level whose centre (2 s + 1) / 65535 is nearest to x (clipped), in float64."""
    x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    return np.clip(np.round(x * 32767.5 - 0.5), -32768, 32767).astype(np.int16)


def test_pcm16_maps_onto_the_16bit_bin_centres():
    s = np.arange(-32768, 32768).astype(np.int16)
    x = audio.pcm16_to_float(s)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.asarray(audio.bin_index(x)), s.astype(np.int64) + 32768)
    np.testing.assert_array_equal(_nearest_pcm16(x), s)
    import tensorflow as tf  # only here: the same map inside tf.data pipelines

    np.testing.assert_array_equal(audio.pcm16_to_float(tf.constant(s)).numpy(), x)
    y = np.random.RandomState(4).uniform(-1.2, 1.2, 10000)
    pcm = _nearest_pcm16(y)
    centre = audio.pcm16_to_float(pcm).astype(np.float64)
    assert np.all(np.abs(centre - np.clip(y, -1, 1)) <= 1.0 / 65535.0 + 1e-7)
    # bin_index rounds in float32: it may pick the other side of a near tie.
    diff = pcm.astype(np.int64) - (np.asarray(audio.bin_index(y)) - 32768)
    assert np.all(np.abs(diff) <= 1) and np.mean(diff == 0) > 0.99


def test_write_wav_writes_16bit_pcm_clipped_to_full_scale(tmp_path):
    x = np.concatenate(
        [[-1.5, -1.0, 0.0, 0.5, 1.0, 1.5], np.random.default_rng(0).uniform(-1.2, 1.2, 1000)]
    ).astype(np.float32)
    path = str(tmp_path / "x.wav")
    audio.write_wav(path, x, 22050)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    read, _ = soundfile.read(path, dtype="int16")
    # Full scale is 32768 levels per unit, the top level saturating at 32767; libsndfile's
    # rounding is its own, so within one level.
    want = np.clip(np.clip(x.astype(np.float64), -1, 1) * 32768, -32768, 32767)
    assert np.all(np.abs(read - want) <= 1.0)
    np.testing.assert_array_equal(read[:6], [-32768, -32768, 0, 16384, 32767, 32767])


@pytest.mark.parametrize("num_bins", [2, 256, 65536])
def test_bin_helpers(num_bins):
    width = 2.0 / (num_bins - 1)
    assert audio.bin_width(num_bins) == pytest.approx(width)
    x = np.linspace(-1, 1, 10_001, dtype=np.float32)
    index = np.asarray(audio.bin_index(x, num_bins))
    want = np.round((x.astype(np.float64) + 1.0) / width)
    near_tie = np.abs((x + 1.0) / width - np.floor((x + 1.0) / width) - 0.5) < 1e-3
    np.testing.assert_array_equal(index[~near_tie], want[~near_tie])
    q = np.asarray(audio.quantize(x, num_bins))
    np.testing.assert_allclose(q, -1.0 + index * width, rtol=0, atol=1e-6)
    assert np.all(np.abs(q - x) <= width / 2 + 1e-6)
    with pytest.raises(ValueError, match="num_bins"):
        audio.bin_index(x, 1)
