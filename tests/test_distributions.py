"""Tests for pwavenet.models.distributions.

Every value check compares against an independent computation: float64 numpy/scipy
transcriptions of the densities, Monte Carlo estimates from the family's own
sampler, numerical quadrature, or chi-square goodness of fit.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from pwavenet import audio
from pwavenet.models import distributions as D

LOG_SCALE_MIN = D.DEFAULT_LOG_SCALE_MIN
W16 = 2.0 / 65535.0


# ------------------------------------------------------------ float64 references


def _ref_mol_probs(
    params: np.ndarray, lower: np.ndarray, upper: np.ndarray, index: np.ndarray, num_bins: int
) -> np.ndarray:
    """Float64 mixture probabilities of bins [lower, upper] with scipy's logistic CDF.

    params (3K,), lower/upper/index (N,). Edge bins (index 0 / num_bins - 1) take the
    whole tail. Differences are taken on the side of the mean where they do not cancel.
    """
    k = params.size // 3
    params = params.astype(np.float64)
    weights = special.softmax(params[:k])
    means = params[k : 2 * k]
    scales = np.exp(np.maximum(params[2 * k :], LOG_SCALE_MIN))
    lo, hi = lower[:, None], upper[:, None]
    cdf_diff = stats.logistic.cdf(hi, means, scales) - stats.logistic.cdf(lo, means, scales)
    sf_diff = stats.logistic.sf(lo, means, scales) - stats.logistic.sf(hi, means, scales)
    mass = np.where(hi <= means, cdf_diff, sf_diff)
    mass = np.where(index[:, None] == 0, stats.logistic.cdf(hi, means, scales), mass)
    mass = np.where(index[:, None] == num_bins - 1, stats.logistic.sf(lo, means, scales), mass)
    return mass @ weights


def _ref_mol_probs_at_centers(params: np.ndarray, num_bins: int) -> np.ndarray:
    index = np.arange(num_bins)
    width = 2.0 / (num_bins - 1)
    centers = -1.0 + width * index
    return _ref_mol_probs(params, centers - width / 2, centers + width / 2, index, num_bins)


def _mol_params(logits, means, raw_log_scales) -> np.ndarray:
    return np.concatenate([logits, means, raw_log_scales]).astype(np.float32)


def _merged_chisquare_pvalue(observed: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square p-value after merging neighbouring cells until each expects >= 5."""
    expected = probs / probs.sum() * observed.sum()
    groups, current, acc = [], [], 0.0
    for i, e in enumerate(expected):
        current.append(i)
        acc += e
        if acc >= 5.0:
            groups.append(current)
            current, acc = [], 0.0
    if current:  # leftover tail with < 5 expected joins the last full group
        groups[-1].extend(current)
    obs = np.array([observed[g].sum() for g in groups], np.float64)
    exp = np.array([expected[g].sum() for g in groups], np.float64)
    assert exp.min() >= 5.0 and len(groups) > 10
    return stats.chisquare(obs, exp).pvalue


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize(
    "name, kwargs, num_params, cls",
    [
        ("mulaw", {}, 256, D.MuLawCategorical),
        ("mulaw", {"mu": 15}, 16, D.MuLawCategorical),
        ("mol", {}, 30, D.DiscretizedMixtureOfLogistics),
        ("mol", {"num_mixtures": 3, "num_bins": 256}, 9, D.DiscretizedMixtureOfLogistics),
        ("gaussian", {}, 2, D.Gaussian),
        ("logistic", {"log_scale_min": -7.0}, 2, D.Logistic),
    ],
)
def test_get_distribution_and_num_params(name, kwargs, num_params, cls):
    dist = D.get_distribution(name, **kwargs)
    assert type(dist) is cls
    assert dist.num_params == num_params
    assert isinstance(dist, D.Distribution)
    for key, value in kwargs.items():
        assert getattr(dist, key) == value


def test_get_distribution_rejects_unknown_names():
    with pytest.raises(ValueError) as info:
        D.get_distribution("softmax")
    message = str(info.value)
    assert "softmax" in message
    for valid in ("mulaw", "mol", "gaussian", "logistic"):
        assert repr(valid) in message


def test_invalid_hyperparameters_rejected():
    with pytest.raises(ValueError, match="num_bins"):
        D.DiscretizedMixtureOfLogistics(num_bins=1)
    with pytest.raises(ValueError, match="num_mixtures"):
        D.DiscretizedMixtureOfLogistics(num_mixtures=0)
    with pytest.raises(ValueError, match="mu"):
        D.MuLawCategorical(mu=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 30\)"):
        D.DiscretizedMixtureOfLogistics().log_prob(jnp.zeros((4, 29)), jnp.zeros(4))
    with pytest.raises(ValueError, match="log_scale_min"):
        D.Gaussian(log_scale_min=-200.0)


def test_low_precision_params_are_scored_in_float32():
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=4)
    params = _mol_params(*_MOL_CASES["moderate"])
    x = jnp.linspace(-0.5, 0.5, 7)
    params16 = jnp.asarray(params, jnp.bfloat16)
    lp16 = dist.log_prob(params16, x)
    assert lp16.dtype == jnp.float32
    # Same values as scoring the (exactly representable) bf16 parameters in float32.
    lp32 = dist.log_prob(params16.astype(jnp.float32), x)
    np.testing.assert_allclose(np.asarray(lp16), np.asarray(lp32), rtol=1e-6)


def test_clamp_log_scale_values_and_gradient():
    raw = jnp.array([-20.0, -9.5, -8.0, 0.0, 3.0])
    clamped = np.asarray(D.clamp_log_scale(raw, -9.0))
    np.testing.assert_array_equal(clamped, [-9.0, -9.0, -8.0, 0.0, 3.0])
    grad = jax.grad(lambda r: D.clamp_log_scale(r, -9.0).sum())(raw)
    np.testing.assert_array_equal(np.asarray(grad), [0.0, 0.0, 1.0, 1.0, 1.0])


# ------------------------------------------------------- discretized logistic mix

_MOL_CASES = {
    # name: (logits, means, raw log-scales), K = 4
    "moderate": ([0.3, -1.0, 0.8, 0.1], [-0.4, 0.05, 0.3, 0.7], [-3.0, -5.0, -2.0, -4.0]),
    "scale_at_floor": ([0.0, 0.5, -0.5, 1.0], [-0.5, 0.0, 0.25, 0.9], [-9.0, -30.0, -9.0, -1e3]),
    "means_outside": ([0.0, 0.0, 1.0, -1.0], [-3.0, 3.0, -1.5, 2.0], [-1.0, -2.0, -6.0, 0.5]),
    "dominant_weight": ([25.0, 0.0, -3.0, 1.0], [0.1, -0.6, 0.4, 0.9], [-4.0, -2.0, -7.0, -3.0]),
    "wide": ([0.0, 0.0, 0.0, 0.0], [0.0, 0.5, -0.5, 0.0], [2.0, 0.0, 1.0, 5.0]),
}


def _mol_log_probs_at_all_centers(dist, params):
    centers = dist.bin_centers()
    batch = jnp.broadcast_to(jnp.asarray(params), (dist.num_bins, params.size))
    return np.asarray(jax.jit(dist.log_prob)(batch, centers), np.float64)


@pytest.mark.parametrize("case", sorted(_MOL_CASES))
def test_mol_probabilities_sum_to_one_over_all_16bit_bins(case):
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=4)
    params = _mol_params(*_MOL_CASES[case])
    log_p = _mol_log_probs_at_all_centers(dist, params)
    assert np.all(np.isfinite(log_p)) and np.all(log_p <= 1e-6)
    # Each float32 log prob is within a few ulps of |log p| (<= ~1e-5 absolute for the
    # bins that carry mass, |log p| < ~100), i.e. each probability is within ~1e-5
    # relative, and the bins telescope analytically; 1e-4 leaves a safety factor and is
    # still far below the error of any missing tail or double-counted bin.
    np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-4)


def test_mol_edge_bins_collect_the_tails():
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=4)
    params = _mol_params(*_MOL_CASES["means_outside"])
    p = np.exp(_mol_log_probs_at_all_centers(dist, params))
    ref = _ref_mol_probs_at_centers(params, dist.num_bins)
    # Means at +-3 put large masses on the two edge bins.
    assert p[0] > 0.2 and p[-1] > 0.2
    np.testing.assert_allclose(p[[0, -1]], ref[[0, -1]], rtol=1e-5)


@pytest.mark.parametrize("case", ["moderate", "dominant_weight", "means_outside"])
def test_mol_per_bin_probabilities_match_scipy(case):
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=4)
    params = _mol_params(*_MOL_CASES[case])
    log_p = _mol_log_probs_at_all_centers(dist, params)
    ref = _ref_mol_probs_at_centers(params, dist.num_bins)
    np.testing.assert_allclose(np.exp(log_p), ref, rtol=1e-5, atol=1e-9)
    # Relative agreement wherever float64 resolves the bin mass.
    resolved = ref > 1e-25
    assert resolved.sum() > 1000
    np.testing.assert_allclose(log_p[resolved], np.log(ref[resolved]), rtol=0, atol=2e-4)


def test_mol_quantize_false_scores_a_bin_centred_at_x():
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=4)
    params = _mol_params(*_MOL_CASES["moderate"])
    rng = np.random.default_rng(1)
    # Off-grid points (0.4 bin from a centre, same nearest centre), plus the ends.
    centers = (-1.0 + W16 * rng.integers(1, 65534, size=500)).astype(np.float32)
    x32 = np.concatenate([centers + np.float32(0.4 * W16), [-1.0, 1.0]]).astype(np.float32)
    x = x32.astype(np.float64)  # the reference sees exactly the float32 inputs
    index = np.round((x + 1.0) / W16).astype(np.int64)
    batch = np.broadcast_to(params, (x.size, params.size))

    unq = np.asarray(dist.log_prob(batch, x32, quantize=False), np.float64)
    ref_unq = np.log(_ref_mol_probs(params, x - W16 / 2, x + W16 / 2, index, 65536))
    np.testing.assert_allclose(unq, ref_unq, rtol=0, atol=5e-5)

    q = np.asarray(dist.log_prob(batch, x32, quantize=True), np.float64)
    near = -1.0 + W16 * index
    ref_q = np.log(_ref_mol_probs(params, near - W16 / 2, near + W16 / 2, index, 65536))
    np.testing.assert_allclose(q, ref_q, rtol=0, atol=5e-5)
    # The tolerance resolves the difference between the two modes off-grid ...
    assert np.max(np.abs(q - ref_unq)) > 10 * 5e-5
    # ... and the modes agree at the centres themselves.
    at_c = np.asarray(dist.log_prob(batch[:-2], centers, quantize=False))
    at_c_quantized = np.asarray(dist.log_prob(batch[:-2], centers))
    np.testing.assert_allclose(at_c, at_c_quantized, rtol=0, atol=5e-5)


def test_mol_gradient_wrt_x_matches_finite_differences():
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=4)
    params = _mol_params(*_MOL_CASES["moderate"])
    x = np.linspace(-0.9, 0.95, 41)
    grad_fn = jax.vmap(jax.grad(lambda xi: dist.log_prob(params, xi, quantize=False)))
    got = np.asarray(grad_fn(jnp.asarray(x, jnp.float32)), np.float64)

    def ref_log_p(xs):
        index = np.full(xs.shape, 1000)  # interior bins
        return np.log(_ref_mol_probs(params, xs - W16 / 2, xs + W16 / 2, index, 65536))

    h = 1e-6
    want = (ref_log_p(x + h) - ref_log_p(x - h)) / (2 * h)
    # Slopes reach ~1/s_min = e^5; float32 positions carry ~1e-7 absolute error.
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=0.05)
    assert np.max(np.abs(want)) > 10  # the check sees real slopes


def test_mol_extreme_parameters_give_the_right_limits():
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=1)
    x = jnp.array([-1.0, 0.0, 1.0])
    s_min = math.exp(LOG_SCALE_MIN)

    # Mean far above the range at the smallest scale: everything lands in the top bin.
    def log_prob(logit, mean, raw_log_scale):
        params = jnp.broadcast_to(jnp.array([logit, mean, raw_log_scale]), (3, 3))
        return np.asarray(dist.log_prob(params, x), np.float64)

    lp = log_prob(0.0, 1e4, -1e4)
    assert lp[2] == pytest.approx(0.0, abs=1e-6)
    b_bottom = (-1.0 + W16 / 2 - 1e4) / s_min  # log sigmoid(b) ~= b for b << 0
    assert lp[0] == pytest.approx(b_bottom, rel=1e-5)
    # Interior: sigmoid(b) sigmoid(-a) (1 - e^-d) with b ~= a ~= (0 - 1e4) / s_min.
    assert lp[1] == pytest.approx(-1e4 / s_min, rel=1e-5)

    # Mean far below: mirror image.
    lp = log_prob(0.0, -1e4, -50.0)
    assert lp[0] == pytest.approx(0.0, abs=1e-6)
    assert lp[2] == pytest.approx(-(1.0 - W16 / 2 + 1e4) / s_min, rel=1e-5)

    # Enormous scale: each edge bin holds half the mass, an interior bin ~ w / (4 s).
    lp = log_prob(0.0, 0.0, 1e4)
    np.testing.assert_allclose(lp[[0, 2]], [math.log(0.5)] * 2, rtol=1e-6)
    assert lp[1] == pytest.approx(math.log(W16 / 4) - 1e4, rel=1e-6)


def test_mol_sampling_frequencies_chisquare():
    num_bins, n = 256, 40_000
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=3, num_bins=num_bins)
    params = _mol_params([0.5, -0.3, 1.0], [-0.6, 0.1, 1.2], [-2.5, -4.0, -1.5])
    batch = jnp.broadcast_to(jnp.asarray(params), (n, params.size))
    samples = np.asarray(dist.sample(jax.random.PRNGKey(0), batch))
    assert samples.shape == (n,)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    index = np.round((samples.astype(np.float64) + 1.0) / 2.0 * (num_bins - 1)).astype(int)
    # Samples are exactly bin centres.
    np.testing.assert_array_equal(samples, np.asarray(audio.bin_center(index, num_bins)))
    counts = np.bincount(index, minlength=num_bins)
    probs = _ref_mol_probs_at_centers(params, num_bins)
    assert counts[-1] > 0.1 * n  # the component with mean 1.2 piles into the top bin
    assert _merged_chisquare_pvalue(counts, probs) > 1e-3


def test_mol_sampling_histogram_over_16bit_bins():
    """Full-resolution sampler, histogrammed into groups of 256 bins."""
    n = 40_000
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=3)
    params = _mol_params([0.0, 1.0, -0.5], [-0.95, 0.2, 0.5], [-3.0, -5.0, -1.0])
    batch = jnp.broadcast_to(jnp.asarray(params), (n, params.size))
    samples = np.asarray(dist.sample(jax.random.PRNGKey(3), batch))
    levels = np.round((np.clip(samples, -1, 1).astype(np.float64) + 1.0) / 2.0 * 65535)
    levels = levels.astype(int)
    counts = np.bincount(levels // 256, minlength=256)
    probs = _ref_mol_probs_at_centers(params, 65536).reshape(256, 256).sum(axis=1)
    assert _merged_chisquare_pvalue(counts, probs) > 1e-3


# ------------------------------------------------------------ mu-law categorical


def _np_log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    return logits - special.logsumexp(logits, axis=-1, keepdims=True)


def _np_mulaw_class(x: np.ndarray, mu: int = 255) -> np.ndarray:
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.round((y + 1.0) / 2.0 * mu).astype(np.int64)


def test_mulaw_categorical_normalised_and_indexes_encoded_class():
    dist = D.MuLawCategorical()
    rng = np.random.default_rng(2)
    logits = (3.0 * rng.normal(size=(6, 50, 256))).astype(np.float32)
    # Waveform values away from class boundaries so the float64 class is unambiguous.
    classes = rng.integers(0, 256, size=(6, 50))
    x = np.asarray(audio.mulaw_decode(classes))
    assert np.all(_np_mulaw_class(x.astype(np.float64)) == classes)

    all_classes = np.arange(256)
    lp_all = np.asarray(
        dist.log_prob_classes(np.broadcast_to(logits[0, 0], (256, 256)), all_classes), np.float64
    )
    np.testing.assert_allclose(np.exp(lp_all).sum(), 1.0, rtol=1e-5)

    ref = np.take_along_axis(_np_log_softmax(logits), classes[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(dist.log_prob(logits, x)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(dist.log_prob_classes(logits, classes)), ref, rtol=1e-5, atol=1e-5
    )
    # Continuous inputs are scored through their encoded class.
    x_any = rng.uniform(-1, 1, size=(6, 50)).astype(np.float32)
    ref_any = np.take_along_axis(
        _np_log_softmax(logits), np.asarray(audio.mulaw_encode(x_any))[..., None], axis=-1
    )[..., 0]
    np.testing.assert_allclose(
        np.asarray(dist.log_prob(logits, x_any)), ref_any, rtol=1e-5, atol=1e-5
    )


def test_mulaw_categorical_sampling_chisquare():
    n = 40_000
    dist = D.MuLawCategorical()
    logits = (1.5 * np.random.default_rng(4).normal(size=256)).astype(np.float32)
    batch = jnp.broadcast_to(jnp.asarray(logits), (n, 256))
    samples = np.asarray(dist.sample(jax.random.PRNGKey(1), batch))
    assert samples.shape == (n,) and samples.min() >= -1.0 and samples.max() <= 1.0
    classes = np.asarray(audio.mulaw_encode(samples))
    # Samples are exactly decoded class values.
    np.testing.assert_array_equal(samples, np.asarray(audio.mulaw_decode(classes)))
    counts = np.bincount(classes, minlength=256)
    probs = np.exp(_np_log_softmax(logits))
    assert _merged_chisquare_pvalue(counts, probs) > 1e-3


# --------------------------------------------------------- continuous families


@pytest.mark.parametrize(
    "dist, scipy_dist", [(D.Gaussian(), stats.norm), (D.Logistic(), stats.logistic)]
)
def test_continuous_log_prob_matches_scipy(dist, scipy_dist):
    rng = np.random.default_rng(5)
    means = rng.uniform(-2, 2, size=(4, 25))
    raw = rng.uniform(-12, 2, size=(4, 25))  # some below the floor
    params = np.stack([means, raw], axis=-1).astype(np.float32)
    x = rng.uniform(-1, 1, size=(4, 25)).astype(np.float32)
    got = np.asarray(dist.log_prob(params, x))
    scale = np.exp(np.maximum(params[..., 1].astype(np.float64), LOG_SCALE_MIN))
    want = scipy_dist.logpdf(x.astype(np.float64), params[..., 0], scale)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize(
    "dist, scipy_dist, entropy_fn",
    [
        (D.Gaussian(), stats.norm, D.gaussian_entropy),
        (D.Logistic(), stats.logistic, D.logistic_entropy),
    ],
)
def test_entropy_matches_monte_carlo_and_scipy(dist, scipy_dist, entropy_fn):
    n = 100_000
    for mean, log_scale in [(0.3, -1.0), (-2.0, 0.7), (0.0, -8.0)]:
        params = jnp.broadcast_to(jnp.array([mean, log_scale]), (n, 2))
        samples = dist.sample(jax.random.PRNGKey(7), params)
        neg_log_p = -np.asarray(dist.log_prob(params, samples), np.float64)
        standard_error = neg_log_p.std(ddof=1) / math.sqrt(n)
        entropy = float(dist.entropy(jnp.array([mean, log_scale])))
        assert abs(neg_log_p.mean() - entropy) < 5 * standard_error
        assert entropy == pytest.approx(scipy_dist(mean, math.exp(log_scale)).entropy(), abs=1e-5)
        assert float(entropy_fn(log_scale)) == pytest.approx(entropy, abs=1e-6)


def test_entropy_uses_the_floored_scale():
    params = jnp.array([[0.0, -50.0]])
    np.testing.assert_allclose(
        np.asarray(D.Logistic().entropy(params)), [LOG_SCALE_MIN + 2.0], rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(D.Gaussian().entropy(params)),
        [stats.norm(0, math.exp(LOG_SCALE_MIN)).entropy()],
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "q, p", [((0.2, -0.5), (-0.3, 0.1)), ((1.0, 0.3), (0.0, 0.0)), ((0.0, -2.0), (0.1, -1.5))]
)
def test_gaussian_kl_matches_monte_carlo_and_quadrature(q, p):
    n = 100_000
    dist = D.Gaussian()
    samples = dist.sample(jax.random.PRNGKey(11), jnp.broadcast_to(jnp.array(q), (n, 2)))
    log_ratio = np.asarray(
        dist.log_prob(jnp.array(q), samples) - dist.log_prob(jnp.array(p), samples), np.float64
    )
    kl = float(D.gaussian_kl(q[0], q[1], p[0], p[1]))
    standard_error = log_ratio.std(ddof=1) / math.sqrt(n)
    assert abs(log_ratio.mean() - kl) < 5 * standard_error

    sq, sp = math.exp(q[1]), math.exp(p[1])
    integrand = lambda t: (
        stats.norm.pdf(t, q[0], sq)
        * (stats.norm.logpdf(t, q[0], sq) - stats.norm.logpdf(t, p[0], sp))
    )
    want, _ = integrate.quad(integrand, q[0] - 30 * sq, q[0] + 30 * sq, points=[q[0]])
    assert kl == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_gaussian_kl_is_zero_for_equal_and_broadcasts():
    mu = jnp.array([[-1.0], [0.5]])
    log_s = jnp.array([-3.0, 0.0, 2.0])
    kl = np.asarray(D.gaussian_kl(mu, log_s, mu, log_s))
    np.testing.assert_allclose(kl, np.zeros((2, 3)), atol=1e-7)
    # Nearly equal distributions keep relative precision: KL ~= delta^2 for tiny delta.
    delta = 1e-4
    assert float(D.gaussian_kl(0.0, delta, 0.0, 0.0)) == pytest.approx(delta**2, rel=1e-2)


# ------------------------------------------------------------------- robustness

_BIG = 1e4
_EXTREME_MEANS = [-_BIG, -1.0, 0.0, 1.0, _BIG]
_EXTREME_LOG_SCALES = [-_BIG, LOG_SCALE_MIN, 0.0, 9.0, _BIG]
_EDGE_X = [-1.0, -1.0 + W16 / 4, 0.0, 1.0 - W16 / 4, 1.0]


def _assert_finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(np.asarray(a)))


def _grads(log_prob_fn, params, x, wrt_x: bool):
    loss = lambda p, xx: log_prob_fn(p, xx).sum()
    argnums = (0, 1) if wrt_x else 0
    return jax.grad(loss, argnums=argnums)(params, x)


@pytest.mark.parametrize("quantize", [True, False])
def test_mol_extreme_parameters_are_finite(quantize):
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=2)
    component = list(itertools.product([-_BIG, 0.0, _BIG], _EXTREME_MEANS, _EXTREME_LOG_SCALES))
    rows = [
        [c1[0], c2[0], c1[1], c2[1], c1[2], c2[2], x]
        for c1, c2, x in itertools.product(component, component, _EDGE_X)
    ]
    rows = jnp.asarray(np.array(rows, np.float32))
    params, x = rows[:, :6], rows[:, 6]
    fn = jax.jit(lambda p, xx: dist.log_prob(p, xx, quantize=quantize))
    lp = fn(params, x)
    _assert_finite(lp, *_grads(fn, params, x, wrt_x=True))
    assert np.all(np.asarray(lp) <= 1e-6)


@pytest.mark.parametrize("dist", [D.Gaussian(), D.Logistic()])
def test_continuous_extreme_parameters_are_finite(dist):
    grid = itertools.product(_EXTREME_MEANS, _EXTREME_LOG_SCALES, _EDGE_X)
    rows = np.array(list(grid), np.float32)
    params, x = jnp.asarray(rows[:, :2]), jnp.asarray(rows[:, 2])
    lp = dist.log_prob(params, x)
    _assert_finite(lp, *_grads(dist.log_prob, params, x, wrt_x=True), dist.entropy(params))
    # Even absurd (finite) means stay finite.
    _assert_finite(
        dist.log_prob(jnp.array([3e38, 0.0]), 1.0), dist.log_prob(jnp.array([-3e38, -9.0]), -1.0)
    )


def test_mulaw_extreme_logits_are_finite():
    dist = D.MuLawCategorical()
    rng = np.random.default_rng(6)
    logits = rng.choice([-_BIG, 0.0, _BIG], size=(11, 256)).astype(np.float32)
    logits[0] = -_BIG
    logits[1] = _BIG
    x = np.array(_EDGE_X * 2 + [0.5], np.float32)
    lp = dist.log_prob(logits, x)
    _assert_finite(lp, _grads(dist.log_prob, jnp.asarray(logits), jnp.asarray(x), wrt_x=False))


@settings(max_examples=60, deadline=None)
@given(
    params=st.lists(st.floats(-_BIG, _BIG, allow_nan=False, width=32), min_size=9, max_size=9),
    x=st.floats(-1.0, 1.0, width=32),
    quantize=st.booleans(),
)
def test_mol_any_finite_parameters_property(params, x, quantize):
    lp, grads = _mol_value_and_grads(jnp.array(params, jnp.float32), jnp.float32(x), quantize)
    _assert_finite(lp, *grads)
    assert float(lp) <= 1e-6


@jax.jit
def _mol_value_and_grads_jit(params, x):
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=3)
    out = []
    for quantize in (True, False):
        fn = lambda p, xx: dist.log_prob(p, xx, quantize=quantize)
        out.append(jax.value_and_grad(fn, argnums=(0, 1))(params, x))
    return out


def _mol_value_and_grads(params, x, quantize):
    return _mol_value_and_grads_jit(params, x)[0 if quantize else 1]


# -------------------------------------------------------------- shapes and jit


@pytest.mark.parametrize(
    "dist",
    [
        D.MuLawCategorical(),
        D.DiscretizedMixtureOfLogistics(num_mixtures=3),
        D.Gaussian(),
        D.Logistic(),
    ],
    ids=lambda d: type(d).__name__,
)
def test_batched_shapes_and_jit(dist):
    rng = np.random.default_rng(8)
    params = rng.normal(size=(2, 3, 5, dist.num_params)).astype(np.float32)
    x = rng.uniform(-1, 1, size=(2, 3, 5)).astype(np.float32)
    eager = dist.log_prob(params, x)
    jitted = jax.jit(dist.log_prob)(params, x)
    assert eager.shape == (2, 3, 5) and eager.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-5, atol=1e-5)
    # Each position is scored independently of the others.
    np.testing.assert_allclose(
        np.asarray(eager[1, 2, 3]),
        np.asarray(dist.log_prob(params[1, 2, 3], x[1, 2, 3])),
        rtol=1e-5,
    )
    samples = jax.jit(dist.sample)(jax.random.PRNGKey(0), params)
    assert samples.shape == (2, 3, 5)
    _assert_finite(samples)
