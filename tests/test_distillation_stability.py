"""Numerical stability of the distillation objective at extreme but finite parameters.

(The output distributions' own log-probs are swept in tests/test_distributions.py.) Here:
the KL terms (closed form and Monte Carlo, Gaussian and MoL teachers, Gaussian and logistic
students), the MoL teacher's continuous density, the STFT power loss, and a whole student
whose weights are blown up. Values and gradients must be finite everywhere on the grids;
where a term has a known sign or bound, that is checked too.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwavenet import distillation
from pwavenet.models import distributions as D
from pwavenet.models import iaf
from student_helpers import random_params, small_student_config

BIG = 1e4
LOG_SCALE_MIN = -7.0
SAMPLES = [-1.0, -1.0 + 1e-7, 0.0, 1.0 - 1e-7, 1.0]
MEANS = [-1.0, 0.0, 1.0, -BIG, BIG]
# Raw log-scales: far below the floor, at it, normal, and huge (exp overflows past ~88).
RAW_LOG_SCALES = [-BIG, LOG_SCALE_MIN, -3.0, 0.0, 80.0, BIG]
# The student's total log-scale: a sum of K soft-clipped per-flow values, so within
# K * (flow_log_scale_min, flow_log_scale_max); K = 4 with the default (-7, 3).
STUDENT_LOG_SCALES = [-28.0, -7.0, -3.0, 0.0, 12.0]


def _finite(*trees):
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            assert np.all(np.isfinite(np.asarray(leaf))), leaf


def _student(base):
    return iaf.IAFStudent(small_student_config(base=base))


def _kl_and_grads(mu, log_s, teacher_params, dist, student, eps, method):
    def loss(mu, log_s, tp):
        terms = distillation.kl_terms(
            mu, log_s, tp, dist, student, eps, method=method, log_scale_min=LOG_SCALE_MIN
        )
        return terms["kl"] + terms.get("regularizer", 0.0), terms

    (value, terms), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        mu, log_s, teacher_params
    )
    return value, terms, grads


def test_closed_form_kl_is_finite_and_nonnegative_over_the_grid():
    dist = D.Gaussian(log_scale_min=LOG_SCALE_MIN)
    grid = np.array(
        list(itertools.product(MEANS, STUDENT_LOG_SCALES, MEANS, RAW_LOG_SCALES)), np.float32
    )
    mu, log_s = jnp.asarray(grid[None, :, 0]), jnp.asarray(grid[None, :, 1])
    teacher = jnp.asarray(grid[None, :, 2:])
    value, terms, grads = _kl_and_grads(
        mu, log_s, teacher, dist, _student("gaussian"), None, "closed_form"
    )
    _finite(value, terms, grads)
    # Per point: KL(N_S || N_T) >= 0, with both log-scales floored as the loss floors them.
    per_point = D.gaussian_kl(
        mu,
        D.clamp_log_scale(log_s, LOG_SCALE_MIN),
        teacher[..., 0],
        D.clamp_log_scale(teacher[..., 1], LOG_SCALE_MIN),
    )
    assert np.all(np.asarray(per_point) >= -1e-5)
    np.testing.assert_allclose(terms["kl"], np.mean(np.asarray(per_point)), rtol=1e-5)


@pytest.mark.parametrize("base", ["gaussian", "logistic"])
def test_monte_carlo_kl_against_a_mol_teacher_is_finite_over_the_grid(base):
    """MoL teacher logits of +-1e4, means at and beyond the edges, log-scales from far below
    the floor to exp-overflowing; student draws at +-1 and beyond."""
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=2, log_scale_min=LOG_SCALE_MIN)
    component = list(itertools.product([-BIG, 0.0, BIG], MEANS, RAW_LOG_SCALES))
    teacher = np.array(
        [
            [a[0], b[0], a[1], b[1], a[2], b[2]]
            for a, b in itertools.product(component, component[::7])
        ],
        np.float32,
    )
    n = len(teacher)
    rng = np.random.default_rng(0)
    mu = rng.choice(SAMPLES + [-3.0, 3.0], n).astype(np.float32)
    log_s = rng.choice(STUDENT_LOG_SCALES, n).astype(np.float32)
    # Two draws per point: z = 0 (a sample exactly at the student's mean) and a tail draw.
    eps = np.stack([np.zeros(n), rng.choice([-30.0, -1.0, 1.0, 30.0], n)]).astype(np.float32)
    value, terms, grads = _kl_and_grads(
        jnp.asarray(mu[None]),
        jnp.asarray(log_s[None]),
        jnp.asarray(teacher[None]),
        dist,
        _student(base),
        jnp.asarray(eps[:, None]),
        "monte_carlo",
    )
    _finite(value, terms, grads)


def test_mol_teacher_density_is_finite_and_bounded_at_the_edges():
    """log p_T(x) of the continuous mixture at x = +-1 and beyond, for extreme parameters:
    finite, differentiable, and at most the largest component's peak, -log(4 s_min)."""
    dist = D.DiscretizedMixtureOfLogistics(num_mixtures=2, log_scale_min=LOG_SCALE_MIN)
    component = list(itertools.product([-BIG, 0.0, BIG], MEANS, RAW_LOG_SCALES))
    rows = np.array(
        [[a[0], b[0], a[1], b[1], a[2], b[2]] for a, b in itertools.product(component, repeat=2)],
        np.float32,
    )
    for x in SAMPLES + [-5.0, 5.0]:
        xs = jnp.full(len(rows), x, jnp.float32)
        fn = lambda p, xx: distillation.teacher_log_density(dist, p, xx).sum()
        value = distillation.teacher_log_density(dist, jnp.asarray(rows), xs)
        _finite(value, jax.grad(fn, argnums=(0, 1))(jnp.asarray(rows), xs))
        assert np.all(np.asarray(value) <= -np.log(4.0) - LOG_SCALE_MIN + 1e-4)


@pytest.mark.parametrize("scale", [0.0, 1e-30, 1.0, 1e3])
def test_power_loss_is_finite_for_silence_and_full_scale(scale):
    """|STFT| is sqrt(|X|^2 + 1e-9): its gradient is finite at exact silence too."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(scale * np.sign(rng.standard_normal((2, 1024))), jnp.float32)
    reference = jnp.asarray(np.clip(rng.standard_normal((2, 1024)), -1, 1), jnp.float32)
    resolutions = ((256, 64, 256), (128, 32, 128))
    value, grad = jax.value_and_grad(distillation.power_loss)(x, reference, resolutions)
    _finite(value, grad)
    assert float(value) >= 0.0


@pytest.mark.parametrize("blow_up", [30.0, -30.0])
def test_a_student_with_blown_up_weights_stays_finite_and_within_its_clamps(blow_up):
    """Every weight multiplied by +-30: the per-flow log-scales sit at the smooth clamps, so
    the total log-scale stays within K (min, max) and x, its inverse and the entropy's
    gradient stay finite."""
    config = small_student_config(base="gaussian")
    student = iaf.IAFStudent(config)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 256))
    mel = jnp.asarray(np.random.default_rng(2).standard_normal((2, 32, 4)), jnp.float32)
    speaker = jnp.array([0, 2])
    params = random_params(student, z, mel, speaker, seed=3)
    params = jax.tree.map(lambda p: p * blow_up, params)
    x, mu, log_s = student.apply({"params": params}, z, mel, speaker)
    _finite(x, mu, log_s)
    k = len(config.flow_layers)
    lo, hi = config.flow_log_scale_min, config.flow_log_scale_max
    assert np.all(np.asarray(log_s) >= k * lo - 1e-3) and np.all(np.asarray(log_s) <= k * hi + 1e-3)
    assert np.asarray(log_s).std() > 0  # the clamps are reached, not bypassed
    entropy_grad = jax.grad(lambda p: jnp.mean(student.apply({"params": p}, z, mel, speaker)[2]))(
        params
    )
    _finite(entropy_grad)
