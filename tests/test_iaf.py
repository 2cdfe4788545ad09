"""Tests for pwavenet.models.iaf, the Parallel WaveNet student.

Each claim is checked against an independent computation: the inverse against the forward pass,
the composed affine map and its log-determinant against autodiff Jacobians (and numpy's
slogdet), causality against the Jacobians' supports, the analytic entropy against a Monte Carlo
estimate through the sequential inverse, and chunked synthesis against the one-pass forward.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwavenet.models import iaf

from student_helpers import lpc_overrides, random_params, small_student_config

HOP = 8  # upsample_strides (4, 2)


_config = small_student_config


def _random_params(model, seed=1):
    args = (jnp.zeros((1, HOP)), jnp.zeros((1, 1, model.config.n_mels)), jnp.zeros((1,), jnp.int32))
    return random_params(model, *args, seed=seed)


def _conditioning(batch, frames, seed=0):
    rng = np.random.default_rng(seed)
    mel = jnp.asarray(rng.normal(size=(batch, frames, 4)), jnp.float32)
    speaker = jnp.asarray(np.arange(batch) % 3, jnp.int32)
    return mel, speaker


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, z, mel, speaker):
    """(x, mu_tot, log_s_tot) in one parallel pass; one compilation per model and shape."""
    return model.apply({"params": params}, z, mel, speaker)


LENGTH = 4 * HOP  # T of the sampled sequences
NUM_SAMPLES = 256  # rows of each independent batch of noise


@pytest.fixture(scope="module", params=["logistic", "gaussian", "gaussian_lpc"])
def sampled(request):
    """The student of one base, and two independent batches of NUM_SAMPLES noise sequences
    z_a, z_b pushed through it under the same conditioning (row i of each batch gets mel i % 2
    and speaker i % 3), with the sequential inverse run on x_b. The Gaussian students also
    project their upsampled mel to model.cond_channels=3 (the shared 1x1 before the flows);
    'gaussian_lpc' ends in the synthesis filter (each mel frame's gain and order-6 all-pole
    filter)."""
    base = request.param.split("_")[0]
    overrides = dict(cond_channels=3) if base == "gaussian" else {}
    if request.param.endswith("_lpc"):
        overrides.update(lpc_overrides())
    model = iaf.IAFStudent(_config(base, **overrides))
    params = _random_params(model)
    assert ("cond_proj" in params) == bool(overrides)
    mel2, _ = _conditioning(batch=2, frames=LENGTH // HOP)
    rows = np.arange(NUM_SAMPLES)
    mel = mel2[rows % 2]
    speaker = jnp.asarray(rows % 3, jnp.int32)
    k_a, k_b = jax.random.split(jax.random.key(11))
    z_a = model.sample_base(k_a, (NUM_SAMPLES, LENGTH))
    z_b = model.sample_base(k_b, (NUM_SAMPLES, LENGTH))
    _, _, log_s_a = _forward(model, params, z_a, mel, speaker)
    x_b, mu_b, log_s_b = _forward(model, params, z_b, mel, speaker)
    z_back, log_s_back = iaf.inverse(model, params, x_b, mel, speaker)
    x_re, _, log_s_re = _forward(model, params, z_back, mel, speaker)
    return dict(
        model=model,
        params=params,
        mel=mel,
        speaker=speaker,
        log_s_a=np.asarray(log_s_a),
        z_b=np.asarray(z_b),
        x_b=np.asarray(x_b),
        mu_b=np.asarray(mu_b),
        log_s_b=np.asarray(log_s_b),
        z_back=np.asarray(z_back),
        log_s_back=np.asarray(log_s_back),
        x_re=np.asarray(x_re),
        log_s_re=np.asarray(log_s_re),
        log_prob_b=np.asarray(iaf.log_prob(model, params, x_b, mel, speaker), np.float64),
    )


# ------------------------------------------------------------------ inverse and density


def test_inverse_recovers_the_noise_and_log_prob_is_the_change_of_variables(sampled):
    """Independent computations: the parallel forward pass checks the sequential one-step
    inverse both ways: the recovered z' pushed forward again reproduces x, with the inverse's
    log-scales, to rounding (the backward error), and z' is the z that x came from. x is checked
    against the composed affine map from the returned (mu_tot, log_s_tot), and log_prob against
    sum(log base(z')) - sum(log_s_tot) with the base density from scipy."""
    s = sampled
    model, z, x, mu, log_s = s["model"], s["z_b"], s["x_b"], s["mu_b"], s["log_s_b"]
    # The flows are far from a constant affine map: their shift and scale vary along time.
    assert np.std(log_s) > 0.1 and np.std(mu) > 0.05
    np.testing.assert_allclose(x, z * np.exp(log_s) + mu, rtol=1e-5, atol=1e-6)

    # Backward error: forward(z') = x and its log-scales are the inverse's, to float32 rounding.
    # A wrong cache, a shift off by one step or a flow undone out of order breaks this at O(1).
    np.testing.assert_allclose(s["x_re"], x, atol=2e-6)
    np.testing.assert_allclose(s["log_s_back"], s["log_s_re"], atol=5e-6)
    # Forward error: z' = z. Undoing an IAF step divides by S (~e^-2.4 here) the rounding error
    # that the earlier steps' z' left in mu_t, so it grows along time (from ~1e-7 at t = 0 to
    # ~1e-2 at t = 31 for a few of the 256 Gaussian rows): most entries, not all, are tight.
    error = np.abs(s["z_back"] - z)
    assert np.median(error) < 2e-5 and np.mean(error < 1e-3) > 0.98, np.quantile(error, 0.98)
    # With the synthesis filter, undoing it subtracts from x a prediction of about its size
    # and divides the difference by the gain, which scales x's rounding up a little more.
    first_frame = 5e-4 if model.has_synthesis_filter else 1e-4
    np.testing.assert_allclose(s["z_back"][:, :8], z[:, :8], atol=first_frame)

    from scipy import stats

    dist = stats.logistic if model.config.base == "logistic" else stats.norm
    base = np.asarray(model.base_log_prob(jnp.asarray(z)))
    np.testing.assert_allclose(base, dist.logpdf(z.astype(np.float64)), atol=1e-5)
    # log p_S(x) = sum_t log base(z'_t) - log S_t at the inverse's z' and S.
    z_back = s["z_back"].astype(np.float64)
    expected = np.sum(dist.logpdf(z_back) - s["log_s_back"], axis=-1)
    np.testing.assert_allclose(s["log_prob_b"], expected, rtol=1e-5, atol=2e-4)


# ------------------------------------------------------------------ Jacobians


@pytest.fixture(scope="module", params=["flows", "lpc"])
def jacobians(request):
    """Autodiff Jacobians of (x, mu_tot, log_s_tot) w.r.t. z for one example longer than the
    receptive field, so its lower edge is visible: the flows alone (field 16, T = 24), and the
    flows followed by the order-6 synthesis filter (recursive: every past z reaches x_t). The
    base only matters for sampling and densities, so logistic students serve."""
    lpc = request.param == "lpc"
    model = iaf.IAFStudent(_config("logistic", **(lpc_overrides() if lpc else {})))
    params = _random_params(model)
    frames = 3
    mel, speaker = _conditioning(batch=1, frames=frames)
    z = model.sample_base(jax.random.key(5), (1, frames * HOP))
    f = lambda z: model.apply({"params": params}, z, mel, speaker)
    outputs = _forward(model, params, z, mel, speaker)
    jacs = jax.jit(jax.jacfwd(f))(z)  # each (1, T, 1, T): [0, t, 0, s] = d out_t / d z_s
    names = ("x", "mu", "log_s")
    values = {n: np.asarray(o)[0] for n, o in zip(names, outputs)}
    return model, values, {n: np.asarray(j)[0, :, 0, :] for n, j in zip(names, jacs)}


def _zero_level(model, jac):
    """What counts as zero in a Jacobian: exactly 0 for the flows; with the synthesis filter,
    float32 rounding of its FFTs, which spreads ~1e-7 of every input over every output of a
    frame: 1e-5 of the largest entry (a dependence that broke causality would be O(1))."""
    return 1e-5 * np.max(np.abs(jac)) if model.has_synthesis_filter else 0.0


def test_jacobian_is_lower_triangular_with_the_scales_on_its_diagonal(jacobians):
    """dx/dz from forward-mode autodiff: zero above the diagonal, exp(log_s_tot) on it, and
    numpy's slogdet of the full matrix equals sum(log_s_tot) (the log-determinant the density
    uses)."""
    model, values, jac = jacobians
    dx = jac["x"].astype(np.float64)
    length = dx.shape[0]
    assert np.all(np.abs(np.triu(dx, k=1)) <= _zero_level(model, dx))
    np.testing.assert_allclose(np.diag(dx), np.exp(values["log_s"]), rtol=1e-5)
    sign, logdet = np.linalg.slogdet(dx)
    assert sign == 1.0
    np.testing.assert_allclose(logdet, np.sum(values["log_s"]), rtol=1e-5, atol=1e-4)
    # Not merely diagonal: x_t depends on the past noise through the flows.
    assert np.count_nonzero(np.tril(dx, k=-1)) > length * (length - 1) // 4


def test_shift_and_scale_depend_only_on_past_noise_within_the_receptive_field(jacobians):
    """d mu_tot_t / dz and d log_s_tot_t / dz from autodiff are strictly lower triangular (no
    dependence on z_t or later), non-zero below the diagonal, and for the last step supported
    on exactly z_{t - R}, ..., z_{t - 1} with R = model.receptive_field (for mu with the
    recursive synthesis filter: all of z_<t)."""
    model, _, jac = jacobians
    for name in ("mu", "log_s"):
        j = jac[name]
        length = j.shape[0]
        # With the filter, mu_t's row carries y_t's rounding; log_s_tot never sees the filter.
        zero = _zero_level(model, j) if name == "mu" else 0.0
        assert np.all(np.abs(np.triu(j)) <= zero), f"{name}_t depends on z_t or later"
        assert np.count_nonzero(np.tril(j, k=-1)) > length * (length - 1) // 4
        support = np.flatnonzero(np.abs(j[-1]) > zero)
        r = model.receptive_field
        if name == "mu" and model.has_synthesis_filter:
            r = length - 1  # the recursive filter: every earlier z
        np.testing.assert_array_equal(support, np.arange(length - 1 - r, length - 1))


# ------------------------------------------------------------------ entropy


def test_analytic_entropy_matches_monte_carlo_through_the_inverse(sampled):
    """H(p_S) = E_z[sum_t log_s_tot_t] + T H(base) (the analytic form distillation uses), from
    the batch z_a, against the Monte Carlo mean of -log p_S(x) with log p_S from the sequential
    inverse, on the independent batch x_b = student(z_b) under the same per-row conditioning
    (so both means estimate the same average entropy). Tolerance: 4 standard errors of the
    difference of two independent means, sqrt((var_a + var_b) / n) from the sample variances
    (which include the spread between conditionings, so they only overstate the error)."""
    s = sampled
    model, n = s["model"], NUM_SAMPLES
    analytic = np.sum(s["log_s_a"].astype(np.float64), axis=-1) + LENGTH * model.base_entropy()
    neg_log_p = -s["log_prob_b"]

    tolerance = 4.0 * math.sqrt((analytic.var() + neg_log_p.var()) / n)
    assert abs(analytic.mean() - neg_log_p.mean()) < tolerance, (
        analytic.mean(),
        neg_log_p.mean(),
        tolerance,
    )
    # The tolerance is tight enough to see a base entropy wrong by 0.1 nats a step (a missing
    # or doubled log-scale term would be off by ~2 nats a step).
    assert tolerance < 0.1 * LENGTH
    # The base entropy constant itself, against scipy.
    from scipy import stats

    dist = stats.logistic if model.config.base == "logistic" else stats.norm
    np.testing.assert_allclose(model.base_entropy(), dist.entropy(), rtol=1e-12)


# ------------------------------------------------------------------ windowed synthesis


@pytest.mark.parametrize("lpc", [False, True], ids=["flows", "lpc"])
def test_flows_in_windows_equal_one_pass_and_need_the_receptive_field(monkeypatch, lpc):
    """iaf.forward with model.synthesis_chunk (the flows run window by window under lax.map,
    each with the flows' receptive field of past noise) against the one-pass apply: x, the
    composed shift and the log-scale agree, for a length that is not a multiple of the window.
    With less context than the receptive field the windows differ, and a window shorter than
    the field is refused by name."""
    overrides = dict(lpc_overrides(), cond_channels=3) if lpc else {}
    one = iaf.IAFStudent(_config("gaussian", **overrides))
    field = one.receptive_field
    assert field == 2 * (1 + 2 + 4 + 1)
    windowed = iaf.IAFStudent(_config("gaussian", synthesis_chunk=40, **overrides))
    params = _random_params(one, seed=4)
    frames = 23  # 184 samples: a first window of 40, then 4 windows, the last one padded
    mel, speaker = _conditioning(batch=2, frames=frames, seed=5)
    z = one.sample_base(jax.random.key(9), (2, frames * HOP))
    expected = [np.asarray(v) for v in _forward(one, params, z, mel, speaker)]
    forward = jax.jit(iaf.forward, static_argnums=0)
    got = [np.asarray(v) for v in forward(windowed, params, z, mel, speaker)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.max(np.abs(e)))

    monkeypatch.setattr(iaf.IAFStudent, "receptive_field", property(lambda self: field // 2))
    jax.clear_caches()  # the compiled forward would not see the patch
    cut = np.asarray(forward(windowed, params, z, mel, speaker)[0])
    assert np.max(np.abs(cut - expected[0])) > 1e-3 * np.max(np.abs(expected[0]))

    with pytest.raises(ValueError, match=rf"synthesis_chunk=8 .*receptive field \({field} samples"):
        iaf.IAFStudent(_config("gaussian", synthesis_chunk=8))


def test_sample_with_the_filter_designed_beside_the_flows_equals_one_pass():
    """iaf.sample called outside a trace designs the synthesis filters on another thread while
    the flows run: its audio equals the one-pass apply on the documented noise of the key, and
    sample traced inside jit (one program) gives the same audio."""
    model = iaf.IAFStudent(_config("gaussian", synthesis_chunk=40, **lpc_overrides()))
    params = _random_params(model, seed=6)
    mel, speaker = _conditioning(batch=2, frames=12, seed=7)
    key = jax.random.key(3)
    # The documented noise: item b's frame f from fold_in(fold_in(key, b), f).
    z = jnp.stack(
        [
            jnp.concatenate(
                [
                    model.sample_base(jax.random.fold_in(jax.random.fold_in(key, b), f), (HOP,))
                    for f in range(12)
                ]
            )
            for b in range(2)
        ]
    )
    expected = np.asarray(_forward(model, params, z, mel, speaker)[0])
    assert np.std(expected) > 0
    for got in (
        iaf.sample(model, params, key, mel, speaker),
        jax.jit(lambda p, k, m, s: iaf.sample(model, p, k, m, s))(params, key, mel, speaker),
    ):
        np.testing.assert_allclose(
            np.asarray(got), expected, rtol=1e-5, atol=1e-5 * np.max(np.abs(expected))
        )


# ------------------------------------------------------------------ config errors


def test_bad_configs_raise_clear_errors():
    with pytest.raises(
        ValueError, match=r"flow_layers\[1\]=4.*multiple of model.layers_per_cycle=3"
    ):
        iaf.IAFStudent(_config(flow_layers=(3, 4)))
    with pytest.raises(ValueError, match=r"model.base='laplace'.*logistic.*gaussian"):
        iaf.IAFStudent(_config("laplace"))
    with pytest.raises(ValueError, match="flow_layers is empty"):
        iaf.IAFStudent(_config(flow_layers=()))
    with pytest.raises(ValueError, match="init_log_scale"):
        iaf.IAFStudent(_config(init_log_scale=-20.0))  # -10 per flow, below the clamp at -7
    # A flow shorter than one cycle is allowed (one short cycle): its field is 2^2 = 4.
    assert iaf.IAFStudent(_config(flow_layers=(2, 3))).flow_receptive_fields == (4, 8)
