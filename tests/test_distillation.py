"""Tests for pwavenet.distillation: the distillation objective (the job that trains with it is
tested in tests/test_jobs_student.py).

Each claim is checked against an independent computation: the STFT against numpy's FFT of
hand-framed, Hann-windowed frames; the closed-form Gaussian KL against a numpy Monte Carlo
estimate; the Monte Carlo KL against its exact value by quadrature (zero for a teacher that is
the student's own conditional, computed through the sequential inverse); learning against the
starting KL; the pmapped step against the single-device step.
"""

import dataclasses
import functools
import math

from flax import jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import integrate, signal, stats

from configs import student as student_config
from configs import teacher as teacher_config
from pwavenet.models import builders
from pwavenet import distillation
from pwavenet.audio import excitation
from pwavenet import training
from pwavenet.models import distributions
from pwavenet.models import iaf
from student_helpers import lpc_overrides, random_params, small_student_config

# ------------------------------------------------------------------ helpers


_iaf_config = small_student_config
_random_params = random_params


def _batch(batch, frames, hop, n_mels, num_speakers, seed=0):
    """{'audio', 'mel', 'speaker'} as numpy: quiet sines (the power loss's reference), random
    mels and speakers."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * hop)
    amplitude = rng.uniform(0.05, 0.1, (batch, 1))
    return {
        "audio": (amplitude * np.sin(2 * np.pi * t / 16.0)).astype(np.float32),
        "mel": rng.normal(-4.0, 1.0, (batch, frames, n_mels)).astype(np.float32),
        "speaker": rng.integers(0, num_speakers, batch).astype(np.int32),
    }


# ------------------------------------------------------------------ STFT and power loss


def _numpy_stft_magnitude(x, n_fft, hop, win_length):
    """|rfft| of frames taken by hand, each multiplied by scipy's periodic Hann window."""
    window = signal.get_window("hann", win_length, fftbins=True)
    frames = [
        x[..., start : start + win_length] * window
        for start in range(0, x.shape[-1] - win_length + 1, hop)
    ]
    spectrum = np.fft.rfft(np.stack(frames, axis=-2), n=n_fft, axis=-1)
    return np.sqrt(np.abs(spectrum) ** 2 + 1e-9)


def test_spectral_losses_against_numpy():
    """Spectral convergence and log magnitude against numpy's frames; a doubled signal has
    spectral convergence 1 and log magnitude ln 2 (up to the 1e-9 inside the magnitude)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 300))
    y = rng.normal(size=(2, 300))
    resolutions = ((64, 16, 48), (32, 8, 32))
    got = distillation.spectral_losses(
        jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), resolutions
    )
    sc, lm = [], []
    for r in resolutions:
        mx, my = _numpy_stft_magnitude(x, *r), _numpy_stft_magnitude(y, *r)
        sc.append(
            np.mean(np.linalg.norm(mx - my, axis=(-2, -1)) / np.linalg.norm(my, axis=(-2, -1)))
        )
        lm.append(np.mean(np.abs(np.log(mx) - np.log(my))))
    np.testing.assert_allclose(float(got["spectral_convergence"]), np.mean(sc), rtol=1e-4)
    np.testing.assert_allclose(float(got["log_magnitude"]), np.mean(lm), rtol=1e-4)
    doubled = distillation.spectral_losses(
        jnp.asarray(2 * x, jnp.float32), jnp.asarray(x, jnp.float32), resolutions
    )
    np.testing.assert_allclose(float(doubled["spectral_convergence"]), 1.0, rtol=1e-4)
    np.testing.assert_allclose(float(doubled["log_magnitude"]), np.log(2.0), rtol=1e-3)


def test_stft_magnitude_and_power_loss_against_numpy():
    """Independent computation: numpy's rfft of hand-framed frames with scipy's periodic Hann
    window (win_length < n_fft exercises the zero padding); the power loss against the numpy
    mean over resolutions of the mean squared magnitude difference."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 300)).astype(np.float32)
    y = rng.normal(size=(2, 300)).astype(np.float32)
    resolutions = ((64, 16, 48), (32, 8, 32))
    for r in resolutions:
        got = np.asarray(distillation.stft_magnitude(jnp.asarray(x), *r))
        expected = _numpy_stft_magnitude(x.astype(np.float64), *r)
        assert got.shape == (2, 1 + (300 - r[2]) // r[1], r[0] // 2 + 1)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    assert float(distillation.power_loss(jnp.asarray(x), jnp.asarray(x), resolutions)) == 0.0
    expected_loss = np.mean(
        [
            np.mean((_numpy_stft_magnitude(x, *r) - _numpy_stft_magnitude(y, *r)) ** 2)
            for r in resolutions
        ]
    )
    got_loss = float(distillation.power_loss(jnp.asarray(x), jnp.asarray(y), resolutions))
    assert got_loss > 0
    np.testing.assert_allclose(got_loss, expected_loss, rtol=1e-4)

    with pytest.raises(ValueError, match="win_length=128 exceeds n_fft=64"):
        distillation.stft_magnitude(jnp.asarray(x), 64, 16, 128)
    with pytest.raises(ValueError, match="300 samples is shorter than the STFT window \\(512\\)"):
        distillation.stft_magnitude(jnp.asarray(x), 512, 128, 512)


# ------------------------------------------------------------------ KL terms


def test_closed_form_gaussian_kl_matches_monte_carlo():
    """kl_terms(method='closed_form') against a numpy Monte Carlo KL: draws from the student's
    per-step Gaussian, log q - log p with scipy's normal log density, both log-scales floored at
    log_scale_min (set to -0.5 so the floor binds for some steps). r_n = the mean over steps of
    draw n's log ratio are i.i.d. over n with mean the closed form; tolerance 4 std(r) /
    sqrt(N)."""
    rng = np.random.default_rng(3)
    shape, floor = (2, 64), -0.5
    mu_s, mu_t = rng.normal(0.0, 0.5, shape), rng.normal(0.0, 0.5, shape)
    log_s_s, log_s_t = rng.uniform(-1.0, 0.5, shape), rng.uniform(-1.0, 0.5, shape)
    student = iaf.IAFStudent(_iaf_config("gaussian"))
    gaussian = distributions.get_distribution("gaussian", log_scale_min=-7.0)
    terms = distillation.kl_terms(
        jnp.asarray(mu_s, jnp.float32),
        jnp.asarray(log_s_s, jnp.float32),
        jnp.asarray(np.stack([mu_t, log_s_t], -1), jnp.float32),
        gaussian,
        student,
        None,
        method="closed_form",
        log_scale_min=floor,
    )
    sd_s, sd_t = np.exp(np.maximum(log_s_s, floor)), np.exp(np.maximum(log_s_t, floor))
    draws = 4000
    x = mu_s + sd_s * rng.standard_normal((draws, *shape))
    log_ratio = stats.norm.logpdf(x, mu_s, sd_s) - stats.norm.logpdf(x, mu_t, sd_t)
    r = log_ratio.mean(axis=(1, 2))
    tolerance = 4.0 * r.std() / math.sqrt(draws)
    assert abs(float(terms["kl"]) - r.mean()) < tolerance, (float(terms["kl"]), r.mean())
    assert tolerance < 0.05 * r.mean()  # the check resolves the KL to a few percent

    entropy = np.mean(log_s_s) + 0.5 * math.log(2 * math.pi * math.e)
    np.testing.assert_allclose(terms["entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(terms["cross_entropy"], terms["kl"] + entropy, rtol=1e-5)
    regularizer = np.mean((np.maximum(log_s_s, floor) - np.maximum(log_s_t, floor)) ** 2)
    np.testing.assert_allclose(terms["regularizer"], regularizer, rtol=1e-5)


def test_kl_method_choice_and_refusals():
    gaussian = distributions.get_distribution("gaussian")
    logistic_student = iaf.IAFStudent(_iaf_config("logistic"))
    gaussian_student = iaf.IAFStudent(_iaf_config("gaussian"))
    auto = ml_collections.ConfigDict(dict(kl="auto"))
    assert distillation.kl_method(auto, gaussian_student, gaussian) == "closed_form"
    assert distillation.kl_method(auto, logistic_student, gaussian) == "monte_carlo"
    mol = distributions.get_distribution("mol", num_mixtures=3)
    assert distillation.kl_method(auto, gaussian_student, mol) == "monte_carlo"
    closed = ml_collections.ConfigDict(dict(kl="closed_form"))
    with pytest.raises(ValueError, match="model.base='gaussian'.*'logistic'.*Gaussian"):
        distillation.kl_method(closed, logistic_student, gaussian)
    with pytest.raises(ValueError, match="distill.kl='exact'"):
        distillation.kl_method(
            ml_collections.ConfigDict(dict(kl="exact")), gaussian_student, gaussian
        )
    with pytest.raises(ValueError, match="mu-law softmax teacher cannot be distilled"):
        distillation.teacher_log_density(distributions.get_distribution("mulaw"), None, None)


def test_mol_teacher_density_inside_the_bins_is_the_logistic_density():
    """Away from the edge bins, a 16-bit MoL teacher scored with teacher_log_density is its
    continuous mixture's density (bin mass of a width-w bin centred at x, over w), against
    scipy's logistic pdf mixture."""
    mol = distributions.get_distribution("mol", num_mixtures=2, log_scale_min=-9.0)
    weights, means, scales = np.array([0.3, 0.7]), np.array([-0.2, 0.4]), np.array([0.1, 0.3])
    params = jnp.asarray(np.concatenate([np.log(weights), means, np.log(scales)]), jnp.float32)
    x = np.linspace(-0.99, 0.99, 101)
    got = distillation.teacher_log_density(
        mol, jnp.broadcast_to(params, (x.size, 6)), jnp.asarray(x)
    )
    expected = np.log(np.sum(weights * stats.logistic.pdf(x[:, None], means, scales), axis=-1))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_mol_teacher_density_integrates_to_one():
    """teacher_log_density must be a density in x: a single logistic (mean 0, scale 0.5) scored
    as a 16-bit MoL teacher integrates to 1 - P(|X| > 4) = 0.99933 over [-4, 4] (trapezoid on
    a 5e-5 grid; the interior is smooth, so the rule's error is far below the 1e-2 tolerance)."""
    mol = distributions.get_distribution("mol", num_mixtures=1, log_scale_min=-9.0)
    params = jnp.asarray([0.0, 0.0, math.log(0.5)], jnp.float32)
    x = np.linspace(-4.0, 4.0, 160_001)
    log_p = distillation.teacher_log_density(
        mol, jnp.broadcast_to(params, (x.size, 3)), jnp.asarray(x, jnp.float32)
    )
    integral = np.trapezoid(np.exp(np.asarray(log_p, np.float64)), x)
    assert abs(integral - (1.0 - 2.0 * stats.logistic.sf(8.0))) < 1e-2, integral


# ------------------------------------------------------------------ Monte Carlo KL: self-teacher


def _base_log_pdf(base):
    return stats.logistic.logpdf if base == "logistic" else stats.norm.logpdf


def _shift_kl_moments(base, shift):
    """Mean and variance, over eps ~ base, of -log base(eps - shift) - H(base): one draw's
    Monte Carlo KL between the student's step distribution and the same distribution shifted
    by `shift` scales. The mean is the exact KL (0 for shift 0). By quadrature."""
    dist = stats.logistic if base == "logistic" else stats.norm
    f = lambda e: -_base_log_pdf(base)(e - shift) - dist.entropy()
    mean = integrate.quad(lambda e: f(e) * dist.pdf(e), -60, 60, limit=200)[0]
    second = integrate.quad(lambda e: f(e) ** 2 * dist.pdf(e), -60, 60, limit=200)[0]
    return mean, second - mean**2


def _objective(**overrides) -> ml_collections.ConfigDict:
    """A `distill` section with the KL alone (closed form, nothing else weighted), then
    `overrides`."""
    section = dict(
        kl="closed_form",
        num_draws=0,
        log_scale_min=-7.0,
        regularizer_weight=0.0,
        power_weight=0.0,
        stft_resolutions=(),
        contrastive_weight=0.0,
    )
    return ml_collections.ConfigDict({**section, **overrides})


@pytest.mark.parametrize("base", ["logistic", "gaussian", "logistic_lpc"])
def test_monte_carlo_kl_is_zero_against_the_students_own_conditional(base):
    """The teacher is the student itself: teacher_fn inverts x to z (iaf.inverse), runs the
    student forward on z and returns its (mu_tot, log_s_tot) -- plus `shift` scales on the mean,
    the shift being the teacher's "parameters". With shift 0 the cross-entropy draws cost
    -log base(eps) + log S, so the Monte Carlo KL is the base entropy's MC error: its mean is 0
    and its standard error sqrt(Var(-log base(eps)) / (N B T)), the variance by quadrature. With
    shift 2 its mean is the exact KL between the base and the base shifted by 2 (quadrature;
    2 for the Gaussian). Tolerances: 4 standard errors. 'logistic_lpc' ends in the synthesis
    filter, so the student's (mu_tot, log_s_tot) carry its prediction and gains."""
    lpc = base.endswith("_lpc")
    base = base.split("_")[0]
    model = iaf.IAFStudent(_iaf_config(base, **(lpc_overrides() if lpc else {})))
    batch_size, frames, draws = 2, 4, 64
    batch = {k: jnp.asarray(v) for k, v in _batch(batch_size, frames, 8, 4, 3, seed=1).items()}
    params = _random_params(
        model, jnp.zeros((1, 8)), jnp.zeros((1, 1, 4)), jnp.zeros((1,), jnp.int32)
    )

    def teacher_fn(shift, x, batch):
        z, _ = iaf.inverse(model, params, x, batch["mel"], batch["speaker"])
        _, mu, log_s = model.apply({"params": params}, z, batch["mel"], batch["speaker"])
        return jnp.stack([mu + shift * jnp.exp(log_s), log_s], axis=-1)

    distiller = distillation.Distiller(
        student=model,
        teacher_dist=distributions.get_distribution(base, log_scale_min=-20.0),
        teacher_fn=teacher_fn,
        config=_objective(kl="monte_carlo", num_draws=draws, log_scale_min=-20.0),
        upsampler="own",
    )
    losses = jax.jit(lambda shift, rngs: distiller.losses(params, shift, batch, rngs)[1])
    rngs = jax.random.split(jax.random.key(4), batch_size)
    n = draws * batch_size * frames * 8

    zero = losses(0.0, rngs)
    _, variance = _shift_kl_moments(base, 0.0)
    tolerance = 4.0 * math.sqrt(variance / n)
    assert abs(float(zero["kl"])) < tolerance, (float(zero["kl"]), tolerance)

    shifted = losses(2.0, rngs)
    exact, variance = _shift_kl_moments(base, 2.0)
    if base == "gaussian":
        np.testing.assert_allclose(exact, 2.0, rtol=1e-6)  # shift^2 / 2
    assert abs(float(shifted["kl"]) - exact) < 4.0 * math.sqrt(variance / n)
    assert exact > 10 * tolerance  # a wrong teacher is far outside the zero test's tolerance
    np.testing.assert_allclose(shifted["entropy"], zero["entropy"])  # analytic, teacher-free


# ------------------------------------------------------------------ training steps


@pytest.fixture(scope="module")
def gaussian_teacher_setup():
    """A random tiny WaveNet teacher with a Gaussian output (configs/teacher.py:tiny's model),
    the tiny student (configs/student.py:tiny: logistic base, so a Monte Carlo KL; its upsampler
    the teacher's, frozen), the job's Distiller (distillation.make_distiller), a fixed batch of 8, and
    the single-device train step."""
    tconfig = teacher_config.get_config("tiny")
    tconfig.model.output = "gaussian"
    tconfig.model.log_scale_min = -7.0
    tmodel = builders.build_teacher(tconfig)
    hop, n_mels = tconfig.mel.hop_length, tconfig.mel.n_mels
    tparams = _random_params(
        tmodel, jnp.zeros((1, hop)), jnp.zeros((1, 1, n_mels)), jnp.zeros((1,), jnp.int32)
    )
    teacher = training.Teacher(tconfig, tmodel, tparams, 0, "")

    config = student_config.get_config("tiny")
    config.distill.stft_resolutions = ((64, 16, 64), (32, 8, 32))
    config.distill.power_weight = 0.1
    config.train.steps = 30
    config.train.learning_rate = 3e-3
    student = builders.build_student(config)
    params = jax.jit(functools.partial(builders.init_student_params, student, config))(
        jax.random.key(0), tparams
    )
    distiller = distillation.make_distiller(config, student, teacher)
    assert distiller.method == "monte_carlo"
    tx, schedule = training.create_optimizer(config.train)

    def loss_fn(params, batch, rngs, frozen):
        return distiller.losses(params, frozen, batch, rngs)

    single = training.make_train_step(loss_fn, tx, schedule, 0.9, pmap=False, with_frozen=True)
    batch = _batch(8, 2, hop, n_mels, tconfig.model.num_speakers)
    return dict(
        params=params,
        tparams=tparams,
        tx=tx,
        schedule=schedule,
        loss_fn=loss_fn,
        single=single,
        batch=batch,
    )


def _fresh_state(setup, rng, params=None):
    params = setup["params"] if params is None else params
    return training.create_train_state(rng, jax.tree.map(jnp.copy, params), setup["tx"])


def test_distillation_steps_reduce_the_kl(gaussian_teacher_setup):
    """30 train steps (training.make_train_step, frozen teacher) on a fixed batch against the
    starting point: the KL on a fixed evaluation noise, different from the training noise,
    falls by more than half. The evaluation runs the same compiled step on a fresh state
    whose key is fixed and reads its metrics (computed before the update). The KL stays
    positive, and the frozen upsampler stays exactly the teacher's weights."""
    s = gaussian_teacher_setup
    step, batch, frozen = s["single"], s["batch"], s["tparams"]

    def evaluate(params):
        # A new key every time: the step donates the state, rng included.
        return float(step(_fresh_state(s, jax.random.PRNGKey(99), params), batch, frozen)[1]["kl"])

    before = evaluate(s["params"])
    state = _fresh_state(s, jax.random.PRNGKey(1))
    for _ in range(30):
        state, metrics = step(state, batch, frozen)
        assert np.isfinite(float(metrics["loss"]))
    after = evaluate(state.params)
    assert after < 0.5 * before, (before, after)
    # A KL is >= 0: a student that drove the estimate below zero would be exploiting an
    # unnormalized teacher density, not matching the teacher (the fixed-noise estimate of
    # several nats here is far from 0 compared with its Monte Carlo error over 4096 draws).
    assert after > 0.0, after
    jax.tree.map(
        np.testing.assert_array_equal, state.params["upsampler"], s["tparams"]["upsampler"]
    )


@pytest.mark.slow
def test_pmapped_distillation_step_equals_a_single_device_step(gaussian_teacher_setup):
    """One step over 8 devices (one example each) against one step on one device from the same
    state and batch: per-example keys give both layouts the same noise, so the loss, its KL and
    power terms, the gradient norm, the updated parameters and EMA, and Adam's moments (which
    after one step are 0.1 g and 0.001 g^2: the averaged gradient itself) agree to float
    tolerance. (One step: the pmapped step compiles again on its second call.)"""
    s = gaussian_teacher_setup
    assert jax.local_device_count() == 8
    batch, frozen = s["batch"], s["tparams"]
    state1, metrics1 = s["single"](_fresh_state(s, jax.random.PRNGKey(2)), batch, frozen)
    multi = training.make_train_step(
        s["loss_fn"], s["tx"], s["schedule"], 0.9, pmap=True, with_frozen=True
    )
    state8 = jax_utils.replicate(_fresh_state(s, jax.random.PRNGKey(2)))
    state8, metrics8 = multi(state8, training.shard(batch), jax_utils.replicate(frozen))
    state8, metrics8 = training.first_replica(state8), training.first_replica(metrics8)
    for name in ("loss", "kl", "power_loss", "entropy", "grad_norm"):
        np.testing.assert_allclose(metrics8[name], metrics1[name], rtol=1e-4, err_msg=name)
    trees = [(state8.params, state1.params), (state8.ema_params, state1.ema_params)]
    adam8, adam1 = state8.opt_state[1][0], state1.opt_state[1][0]
    trees += [(adam8.mu, adam1.mu), (adam8.nu, adam1.nu)]
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(adam1.mu)) > 0
    for tree8, tree1 in trees:
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), tree8, tree1
        )


def test_a_step_in_microbatches_equals_the_whole_batch_step(gaussian_teacher_setup):
    """train.microbatch_size: the 8 examples taken 2 at a time (4 microbatches under a scan,
    gradients and metrics averaged) give the whole batch's step: the same per-example keys,
    loss terms, gradient norm and updated parameters, to float tolerance."""
    s = gaussian_teacher_setup
    batch, frozen = s["batch"], s["tparams"]
    state1, metrics1 = s["single"](_fresh_state(s, jax.random.PRNGKey(2)), batch, frozen)
    micro = training.make_train_step(
        s["loss_fn"], s["tx"], s["schedule"], 0.9, pmap=False, with_frozen=True, microbatch_size=2
    )
    state2, metrics2 = micro(_fresh_state(s, jax.random.PRNGKey(2)), batch, frozen)
    for name in ("loss", "kl", "power_loss", "entropy", "grad_norm"):
        np.testing.assert_allclose(metrics2[name], metrics1[name], rtol=1e-4, err_msg=name)
    assert float(metrics1["grad_norm"]) > 0
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
        (state2.params, state2.ema_params),
        (state1.params, state1.ema_params),
    )


def test_contrastive_loss_does_not_depend_on_the_device_layout():
    """The pmapped step's loss is the mean over devices of the losses on each device's examples;
    with 8 devices and 8 examples that is the mean of the 8 one-example losses. With the
    contrastive term on, it must equal the loss of the whole batch on one device, as it does for
    every other term. Teacher: a Gaussian whose mean follows the example's mel (its mean over
    channels, held for a frame) and speaker, so the mismatched conditioning changes it and the
    contrastive KL is large."""
    model = iaf.IAFStudent(_iaf_config("gaussian"))
    params = _random_params(
        model, jnp.zeros((1, 8)), jnp.zeros((1, 1, 4)), jnp.zeros((1,), jnp.int32)
    )

    def teacher_fn(_, x, batch):
        mean = jnp.repeat(0.1 * jnp.mean(batch["mel"] + 4.0, axis=-1), 8, axis=1)
        mean = mean + 0.05 * batch["speaker"][:, None]
        return jnp.stack([mean, jnp.full_like(mean, -2.0)], axis=-1)

    distiller = distillation.Distiller(
        student=model,
        teacher_dist=distributions.get_distribution("gaussian"),
        teacher_fn=teacher_fn,
        config=_objective(contrastive_weight=0.5),
        upsampler="own",
    )
    batch = {k: jnp.asarray(v) for k, v in _batch(8, 2, 8, 4, 3, seed=2).items()}
    rngs = jax.random.split(jax.random.key(0), 8)
    losses = jax.jit(lambda b, r: distiller.losses(params, None, b, r))
    whole, metrics = losses(batch, rngs)
    # The term is on and matters: the mismatched KL is well above the matched one.
    assert float(metrics["contrastive_kl"]) > float(metrics["kl"]) + 0.1, metrics
    np.testing.assert_allclose(whole, metrics["kl"] - 0.5 * metrics["contrastive_kl"], rtol=1e-6)
    per_device = [
        float(losses({k: v[i : i + 1] for k, v in batch.items()}, rngs[i : i + 1])[0])
        for i in range(8)
    ]
    np.testing.assert_allclose(np.mean(per_device), float(whole), rtol=1e-5, atol=1e-6)


def test_voiced_temperature_and_kl_weight(monkeypatch):
    """distill.voiced_temperature = 0.5 (and distill.kl_weight) against a hand computation:
    the closed-form KL between the student's per-step Gaussians and a fixed Gaussian teacher
    whose log-scale gains voicing * log 0.5, the voicing (rising 0 -> 1 over the frames,
    patched in for the estimator, which cannot read 4-band mels) interpolated between frame
    centres by np.interp. A non-Gaussian teacher is refused."""
    frames, hop = 4, 8
    voicing = np.linspace(0.0, 1.0, frames)
    monkeypatch.setattr(
        excitation,
        "estimate_pitch",
        lambda mel, config: (
            jnp.full(mel.shape[:-1], 200.0),
            jnp.broadcast_to(jnp.asarray(voicing, jnp.float32), mel.shape[:-1]),
        ),
    )
    model = iaf.IAFStudent(_iaf_config("gaussian", **lpc_overrides()))
    params = _random_params(
        model, jnp.zeros((1, hop)), jnp.zeros((1, 1, 4)), jnp.zeros((1,), jnp.int32)
    )
    teacher_mean, teacher_log_s = 0.02, -3.0

    def teacher_fn(_, x, batch):
        return jnp.stack([jnp.full_like(x, teacher_mean), jnp.full_like(x, teacher_log_s)], axis=-1)

    config = _objective(log_scale_min=-20.0, voiced_temperature=0.5)
    distiller = distillation.Distiller(
        student=model,
        teacher_dist=distributions.get_distribution("gaussian", log_scale_min=-20.0),
        teacher_fn=teacher_fn,
        config=config,
        upsampler="own",
    )
    batch = {k: jnp.asarray(v) for k, v in _batch(2, frames, hop, 4, 3, seed=5).items()}
    rngs = jax.random.split(jax.random.key(1), 2)
    kl = float(distiller.losses(params, None, batch, rngs)[1]["kl"])

    z, _ = distiller.noise(rngs, frames * hop)
    _, mu, log_s = model.apply({"params": params}, z, batch["mel"], batch["speaker"])
    mu, log_s = np.asarray(mu, np.float64), np.asarray(log_s, np.float64)
    centres = (np.arange(frames) + 0.5) * hop - 0.5
    v = np.interp(np.arange(frames * hop), centres, voicing)
    log_t = teacher_log_s + v * math.log(0.5)
    expected = (
        log_t
        - log_s
        + (np.exp(2 * log_s) + (mu - teacher_mean) ** 2) / (2 * np.exp(2 * log_t))
        - 0.5
    )
    np.testing.assert_allclose(kl, expected.mean(), rtol=1e-4)
    untempered = dataclasses.replace(
        distiller, config=ml_collections.ConfigDict(dict(config.to_dict(), voiced_temperature=1.0))
    )
    assert abs(float(untempered.losses(params, None, batch, rngs)[1]["kl"]) - kl) > 0.1

    # distill.kl_weight scales the KL term alone (every other term is off here).
    weighted = dataclasses.replace(
        distiller, config=ml_collections.ConfigDict(dict(config.to_dict(), kl_weight=0.3))
    )
    loss, metrics = weighted.losses(params, None, batch, rngs)
    np.testing.assert_allclose(float(loss), 0.3 * kl, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), kl, rtol=1e-6)

    logistic = dataclasses.replace(
        distiller, teacher_dist=distributions.get_distribution("logistic")
    )
    with pytest.raises(ValueError, match="Gaussian teacher"):
        logistic.tempered(jnp.zeros((2, frames * hop, 2)), batch["mel"])
