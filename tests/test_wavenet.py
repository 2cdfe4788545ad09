"""Tests for pwavenet.models.layers, .stack, .wavenet and .generation.

Each claim is checked against an independent computation: causality and the receptive field
against autodiff Jacobians, the convolutions against direct numpy sums, cached generation
against a teacher-forced pass over the generated audio, and learning against the starting NLL.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.ad_checkpoint import print_saved_residuals

from configs.teacher import get_config
from pwavenet.models import layers
from pwavenet.models import generation, placement, wavenet
import vocoder_helpers
from pwavenet.models.layers import CausalConv, ConditioningUpsampler, check_hop_length


def _config(**overrides):
    """The tiny teacher's model section (2 cycles x 3 layers, kernel 2), edited."""
    config = get_config("tiny").model.copy_and_resolve_references()
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


# Small conditioned layout: hop 4 keeps sequences short (T = 4 * frames).
COND = dict(n_mels=3, upsample_strides=(2, 2), num_speakers=3, speaker_embedding_dim=2)
UNCOND = dict(n_mels=0, num_speakers=0)


def _random_variables(module, *args, seed=0):
    """Variables of `module` filled with numpy Gaussians (std 1/sqrt(fan-in) for matrices, 0.3
    for vectors): no zero biases or symmetric start, so every path that exists in the network
    carries a non-zero gradient. Shapes come from `eval_shape`, which compiles nothing."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def fill(leaf):
        std = 1.0 / math.sqrt(leaf.shape[-2]) if len(leaf.shape) >= 2 else 0.3
        return jnp.asarray(rng.normal(0.0, std, leaf.shape), jnp.float32)

    return jax.tree.map(fill, shapes)


def _inputs(config, batch, frames, seed=0):
    """(x, mel, speaker) for a model config; mel/speaker None when unused."""
    rng = np.random.default_rng(seed)
    length = frames * math.prod(config.upsample_strides)
    x = jnp.asarray(rng.uniform(-0.9, 0.9, (batch, length)), jnp.float32)
    mel = (
        jnp.asarray(rng.normal(size=(batch, frames, config.n_mels)), jnp.float32)
        if config.n_mels
        else None
    )
    speaker = (
        jnp.asarray(rng.integers(0, config.num_speakers, batch), jnp.int32)
        if config.num_speakers
        else None
    )
    return x, mel, speaker


def _model_and_params(config, x, mel, speaker, seed=1):
    model = wavenet.WaveNet(config)
    return model, _random_variables(model, x, mel, speaker, seed=seed)["params"]


# ------------------------------------------------------------------------- layers


@pytest.mark.parametrize("kernel_size,dilation", [(2, 1), (3, 4), (4, 3)])
def test_causal_conv_matches_direct_sum_and_one_step(kernel_size, dilation):
    batch, length, c_in, c_out = 2, 20, 3, 5
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, length, c_in)), jnp.float32)
    conv = CausalConv(c_out, kernel_size, dilation)
    variables = _random_variables(conv, x)
    y = np.asarray(conv.apply(variables, x))

    kernel = np.asarray(variables["params"]["kernel"], np.float64)
    bias = np.asarray(variables["params"]["bias"], np.float64)
    xn = np.asarray(x, np.float64)
    expected = np.tile(bias, (batch, length, 1))
    for t in range(length):
        for j in range(kernel_size):
            s = t - (kernel_size - 1 - j) * dilation
            if s >= 0:
                expected[:, t] += xn[:, s] @ kernel[j]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    # One-step form from the k taps and from the whole window, on the zero-padded input.
    context = (kernel_size - 1) * dilation
    padded = jnp.pad(x, ((0, 0), (context, 0), (0, 0)))
    step = jax.jit(lambda window: conv.apply(variables, window, method=CausalConv.step))
    for t in range(length):
        window = padded[:, t : t + context + 1]
        from_taps = step(window[:, ::dilation])
        from_window = step(window)
        np.testing.assert_allclose(from_taps, y[:, t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(from_window, y[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["convolution", "taps"])
def test_causal_conv_derivatives_match_the_direct_sum(form):
    """Both sequence forms (XLA's convolution with its custom JVP, used on CPU, and the taps
    matmul, used on accelerators) against the brute-force sum: values, reverse-mode
    gradients in x and the kernel, and a forward-mode directional derivative."""
    k, d, batch, length, c_in, c_out = 3, 2, 2, 11, 3, 4
    rng = np.random.default_rng(1)
    x, dx, g = (rng.normal(size=(batch, length, c)) for c in (c_in, c_in, c_out))
    kernel, dkernel = (rng.normal(size=(k, c_in, c_out)) for _ in range(2))

    def direct(x, kernel):  # float64 numpy; y[t] = sum_j x[t - (k - 1 - j) d] @ kernel[j]
        y = np.zeros((batch, length, c_out))
        for t in range(length):
            for j in range(k):
                if t - (k - 1 - j) * d >= 0:
                    y[:, t] += x[:, t - (k - 1 - j) * d] @ kernel[j]
        return y

    if form == "convolution":
        fn = lambda x, w: layers._dilated_conv(x, w, d)  # noqa: E731
    else:
        fn = lambda x, w: layers._taps(x, k, d) @ w.reshape(-1, c_out)  # noqa: E731
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    np.testing.assert_allclose(fn(f32(x), f32(kernel)), direct(x, kernel), rtol=1e-5, atol=1e-5)
    # The loss sum(g * y) is bilinear: its gradient in x is direct(., kernel)'s adjoint
    # applied to g, read off by brute force from the unit inputs.
    loss = lambda x, w: jnp.sum(f32(g) * fn(x, w))  # noqa: E731
    grad_x, grad_kernel = jax.grad(loss, argnums=(0, 1))(f32(x), f32(kernel))
    expected_x = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        unit = np.zeros_like(x)
        unit[index] = 1.0
        expected_x[index] = np.sum(g * direct(unit, kernel))
    expected_kernel = np.zeros_like(kernel)
    for index in np.ndindex(kernel.shape):
        unit = np.zeros_like(kernel)
        unit[index] = 1.0
        expected_kernel[index] = np.sum(g * direct(x, unit))
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_kernel, expected_kernel, rtol=1e-4, atol=1e-4)
    # Each argument alone (the other's tangent is a symbolic zero, as a frozen network's
    # kernel is in distillation).
    only_x = jax.grad(loss, argnums=0)(f32(x), f32(kernel))
    only_kernel = jax.grad(loss, argnums=1)(f32(x), f32(kernel))
    np.testing.assert_allclose(only_x, expected_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(only_kernel, expected_kernel, rtol=1e-4, atol=1e-4)
    _, tangent_x = jax.jvp(lambda x: fn(x, f32(kernel)), (f32(x),), (f32(dx),))
    np.testing.assert_allclose(tangent_x, direct(dx, kernel), rtol=1e-4, atol=1e-4)
    # Forward mode: d/de fn(x + e dx, kernel + e dkernel) at e = 0, bilinearity again.
    _, tangent = jax.jvp(fn, (f32(x), f32(kernel)), (f32(dx), f32(dkernel)))
    np.testing.assert_allclose(
        tangent, direct(dx, kernel) + direct(x, dkernel), rtol=1e-4, atol=1e-4
    )


def test_gated_tanh_derivatives_match_finite_differences(capsys):
    """gated_tanh's custom JVP against float64 central differences of the numpy expression,
    in reverse and forward mode, from the linear region to saturation; and what reverse
    mode keeps for the backward pass: two arrays where autodiff of the expression keeps
    four."""
    rng = np.random.default_rng(3)
    # Saturated values (|filt| up to 8, where 1 - tanh^2 ~ 5e-7) and the linear region.
    filt = np.concatenate([rng.normal(size=12), [-8.0, -4.0, 0.0, 4.0, 8.0]])
    gate = np.concatenate([rng.normal(size=12) * 3, [8.0, -8.0, 0.0, -3.0, 3.0]])
    d_filt, d_gate, g = (rng.normal(size=filt.shape) for _ in range(3))

    def expression(f, a):  # float64 numpy
        return np.tanh(f) * (1 / (1 + np.exp(-a)))

    h = 1e-5  # central differences: O(h^2) = 1e-10 error, far below float32 rounding
    expected_filt = (expression(filt + h, gate) - expression(filt - h, gate)) / (2 * h)
    expected_gate = (expression(filt, gate + h) - expression(filt, gate - h)) / (2 * h)
    # atol: near saturation 1 - t^2 and 1 - s cancel in float32 (tanh(8) rounds to 1, so
    # 1 - t^2, 4.5e-7 exactly, is 0), which costs a few times float32's spacing near 1
    # (6e-8) per unit of the incoming derivative (|g|, |d| < 4 here); a wrong or missing
    # term would be off by up to a quarter of it.
    atol = 1e-5
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    np.testing.assert_allclose(
        layers.gated_tanh(f32(filt), f32(gate)), expression(filt, gate), rtol=1e-6, atol=1e-7
    )
    grad_filt, grad_gate = jax.grad(
        lambda f, a: jnp.sum(f32(g) * layers.gated_tanh(f, a)), argnums=(0, 1)
    )(f32(filt), f32(gate))
    np.testing.assert_allclose(grad_filt, g * expected_filt, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(grad_gate, g * expected_gate, rtol=1e-5, atol=atol)
    _, tangent = jax.jvp(layers.gated_tanh, (f32(filt), f32(gate)), (f32(d_filt), f32(d_gate)))
    np.testing.assert_allclose(
        tangent, d_filt * expected_filt + d_gate * expected_gate, rtol=1e-5, atol=atol
    )

    shape = f"f32[{filt.size}]"
    for fn, kept in ((layers.gated_tanh, 2), (lambda f, a: jnp.tanh(f) * jax.nn.sigmoid(a), 4)):
        print_saved_residuals(lambda f, a, fn=fn: jnp.sum(fn(f, a)), f32(filt), f32(gate))
        assert capsys.readouterr().out.count(shape) == kept


@pytest.mark.parametrize(
    "strides,kernel_multiple", [((2,), 2), ((4, 4), 2), ((2, 3, 5), 1), ((8, 8), 3)]
)
def test_upsampler_length_is_frames_times_hop(strides, kernel_multiple):
    frames, n_mels = 3, 4
    mel = jnp.ones((2, frames, n_mels))
    upsampler = ConditioningUpsampler(strides, kernel_multiple, hop_length=math.prod(strides))
    variables = _random_variables(upsampler, mel)
    out = upsampler.apply(variables, mel)
    assert upsampler.hop == math.prod(strides)
    assert out.shape == (2, frames * math.prod(strides), n_mels)
    assert set(variables["params"]) == {f"stage_{i}" for i in range(len(strides))}


def test_upsampler_stage_is_a_cropped_transposed_convolution():
    """One stage against the textbook scatter-add transposed convolution, then leaky ReLU."""
    frames, c_in, c_out, stride, multiple = 4, 3, 2, 3, 3
    mel = jnp.asarray(np.random.default_rng(0).normal(size=(1, frames, c_in)), jnp.float32)
    upsampler = ConditioningUpsampler((stride,), multiple, features=c_out)
    variables = _random_variables(upsampler, mel)
    out = np.asarray(upsampler.apply(variables, mel))[0]

    kernel = np.asarray(variables["params"]["stage_0"]["kernel"], np.float64)
    bias = np.asarray(variables["params"]["stage_0"]["bias"], np.float64)
    size = multiple * stride
    full = np.zeros(((frames - 1) * stride + size, c_out))
    for f in range(frames):
        for k in range(size):
            full[f * stride + k] += np.asarray(mel, np.float64)[0, f] @ kernel[k]
    left = (size - stride) // 2  # 'SAME'-like: the extra samples are cropped half each side
    expected = full[left : left + frames * stride] + bias
    expected = np.where(expected > 0, expected, 0.4 * expected)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_upsampler_rejects_strides_that_miss_the_hop():
    with pytest.raises(ValueError, match=r"\(4, 4\).*16.*32"):
        ConditioningUpsampler((4, 4), hop_length=32)
    with pytest.raises(ValueError, match="64"):
        check_hop_length((8, 4), 64)
    check_hop_length((8, 8), 64)
    with pytest.raises(ValueError, match="hop"):
        wavenet.WaveNet(_config(hop_length=256))  # tiny strides (8, 8) give 64


# ------------------------------------------------------------------------ WaveNet


def test_output_t_never_sees_x_t_or_later_with_conditioning():
    config = _config(**COND)
    x, mel, speaker = _inputs(config, batch=1, frames=6)
    model, params = _model_and_params(config, x, mel, speaker)
    out = model.apply({"params": params}, x, mel, speaker)
    assert out.shape == (1, x.shape[1], model.distribution.num_params)

    jac = jax.jit(jax.jacfwd(lambda x: model.apply({"params": params}, x, mel, speaker)))(x)
    # jac[t, p, s] = d out[t, p] / d x[s]
    jac = np.asarray(jac)[0, :, :, 0, :]
    length = x.shape[1]
    for t in range(length):
        assert np.all(jac[t, :, t:] == 0.0), f"output {t} depends on x[{t}:]"
    # Where an output depends on the audio at all, it depends on the newest past sample. (A
    # position whose head ReLUs are all off has no gradient anywhere: allowed, but rare.)
    live = [t for t in range(1, length) if np.any(jac[t] != 0.0)]
    assert len(live) >= 0.8 * (length - 1)
    for t in live:
        assert np.any(jac[t, :, t - 1] != 0.0), f"output {t} ignores x[{t - 1}]"


@pytest.mark.parametrize(
    "overrides",
    [
        dict(kernel_size=2, num_cycles=2, layers_per_cycle=3),
        dict(kernel_size=3, num_cycles=1, layers_per_cycle=4),
    ],
)
def test_receptive_field_formula_and_gradient_support(overrides):
    config = _config(**UNCOND, **overrides)
    model = wavenet.WaveNet(config)
    k, cycles, layers = config.kernel_size, config.num_cycles, config.layers_per_cycle
    formula = (k - 1) * cycles * (2**layers - 1) + 1
    assert model.receptive_field == formula

    length = formula + 12
    x = jnp.asarray(np.random.default_rng(0).uniform(-0.9, 0.9, (1, length)), jnp.float32)
    params = _random_variables(model, x)["params"]
    last = lambda x: model.apply({"params": params}, x)[0, -1]
    jac = np.asarray(jax.jit(jax.jacrev(last))(x))[:, 0]  # (P, T)
    support = np.flatnonzero(np.any(jac != 0.0, axis=0))
    assert support.size == model.receptive_field
    # Exactly x_{T-1-R}, ..., x_{T-2}: contiguous, ending just before the predicted sample.
    np.testing.assert_array_equal(support, np.arange(length - 1 - formula, length - 1))


@pytest.mark.parametrize("output", ["mol", "gaussian", "mulaw"])
def test_cached_generation_reproduces_teacher_forcing(output):
    config = _config(**COND, output=output, log_scale_min=-7.0)
    x, mel, speaker = _inputs(config, batch=2, frames=6)
    model, params = _model_and_params(config, x, mel, speaker)
    rng = jax.random.key(7)

    samples = generation.generate(model, params, rng, mel=mel, speaker=speaker)
    assert samples.shape == x.shape
    # Every sample is the family's draw, with the noise of its frame (drawn for the frame's
    # steps at once with the key fold_in(rng, first step)), from the parameters that teacher
    # forcing computes for it from the samples before it.
    teacher_forced = jax.jit(model.apply)({"params": params}, samples, mel, speaker)
    assert teacher_forced.shape == (*x.shape, model.distribution.num_params)
    np.testing.assert_allclose(
        samples, vocoder_helpers.redrawn(model, teacher_forced, rng, frames=6, batch=2), atol=1e-4
    )
    assert len(np.unique(np.asarray(samples))) > x.shape[1] // 4  # not a constant output

    # Traced inside a caller's jit, which keeps it on one device (the call above spread the
    # 2 streams over 2 of the 8 test devices): the same samples up to the float rounding of
    # a batch-2 matmul against two batch-1 ones.
    public = jax.jit(lambda p, r, m, s: generation.generate(model, p, r, mel=m, speaker=s))
    np.testing.assert_allclose(public(params, rng, mel, speaker), samples, rtol=0, atol=1e-5)


def test_log_scale_ceiling_and_bounded_generation():
    """A Gaussian head whose raw log-scale sits far above the ceiling (output bias +4): teacher
    forcing scores N(mean, 1) exactly (log_scale_max 0), generation draws with scale 1 and
    clips to [-1, 1] what it feeds back, and teacher forcing on those samples redraws them."""
    config = _config(**COND, output="gaussian", log_scale_min=-7.0, log_scale_max=0.0)
    x, mel, speaker = _inputs(config, batch=2, frames=6)
    model, params = _model_and_params(config, x, mel, speaker)
    params["output"]["bias"] = params["output"]["bias"].at[1].set(4.0)
    outputs = model.apply({"params": params}, x, mel, speaker)
    assert float(jnp.min(outputs[..., 1])) > 1.0  # the raw log-scale is above the ceiling
    mean = np.asarray(outputs[..., 0], np.float64)
    density = -0.5 * (np.asarray(x) - mean) ** 2 - 0.5 * math.log(2 * math.pi)  # N(mean, 1)
    np.testing.assert_allclose(
        wavenet.log_likelihood(outputs, x, model.distribution), density, rtol=1e-5, atol=1e-5
    )
    rng = jax.random.key(3)
    samples = generation.generate(model, params, rng, mel=mel, speaker=speaker)
    assert float(jnp.max(jnp.abs(samples))) == 1.0  # some draws left [-1, 1] and were clipped
    forced = model.apply({"params": params}, samples, mel, speaker)
    np.testing.assert_allclose(
        samples, vocoder_helpers.redrawn(model, forced, rng, frames=6, batch=2), atol=1e-4
    )


@pytest.mark.parametrize("batch", [3, 4])
def test_generation_spreads_a_batch_over_the_local_devices(batch):
    """A batch of streams is split over as many local devices as divide it (the tests run
    with 8 CPU devices), each stream drawing the noise it draws on one device: the samples
    equal those of the same generation kept on one device (inside a caller's jit)."""
    assert jax.local_device_count() == 8
    config = _config(**COND, output="gaussian", log_scale_min=-7.0)
    x, mel, speaker = _inputs(config, batch=batch, frames=3)
    model, params = _model_and_params(config, x, mel, speaker)
    rng = jax.random.key(11)
    spread = generation.generate(model, params, rng, mel=mel, speaker=speaker)
    assert len(spread.sharding.device_set) == batch
    one = jax.jit(lambda p, r, m, s: generation.generate(model, p, r, mel=m, speaker=s))
    kept = one(params, rng, mel, speaker)
    assert len(kept.sharding.device_set) == 1
    np.testing.assert_allclose(np.asarray(spread), np.asarray(kept), rtol=0, atol=1e-5)
    assert np.std(np.asarray(spread)) > 0


def test_spread_devices_takes_the_most_devices_that_divide_the_batch():
    sizes = {}
    for b in (1, 5, 7, 9, 12, 16):
        mesh = placement.spread_devices(b, jnp.ones(b))
        sizes[b] = 1 if mesh is None else mesh.devices.size
        assert mesh is None or b % mesh.devices.size == 0
    assert sizes == {1: 1, 5: 5, 7: 7, 9: 3, 12: 6, 16: 8}  # of the 8 test devices
    # Traced inside a caller's jit, generation stays where that jit places it.
    seen = []
    jax.jit(lambda x: seen.append(placement.spread_devices(4, x)) or x)(jnp.ones(4))
    assert seen == [None]


def test_conditioning_terms_ahead_and_in_the_step_generate_the_same(monkeypatch):
    """Generation computes the layers' conditioning terms a frame ahead when they fit in
    generation.AHEAD_BYTES, else in each step: the two give the same samples."""
    config = _config(**COND, output="gaussian", log_scale_min=-7.0)
    x, mel, speaker = _inputs(config, batch=2, frames=4)
    model, params = _model_and_params(config, x, mel, speaker)
    rng = jax.random.key(5)
    ahead = generation.generate(model, params, rng, mel=mel, speaker=speaker)
    monkeypatch.setattr(generation, "AHEAD_BYTES", 0)
    jax.clear_caches()  # the compiled sampler would not see the patch
    in_step = generation.generate(model, params, rng, mel=mel, speaker=speaker)
    np.testing.assert_allclose(np.asarray(ahead), np.asarray(in_step), rtol=1e-5, atol=1e-5)
    assert np.std(np.asarray(ahead)) > 0
    # Both sample the distribution that teacher forcing scores.
    for samples in (ahead, in_step):
        teacher_forced = jax.jit(model.apply)({"params": params}, samples, mel, speaker)
        np.testing.assert_allclose(
            samples, vocoder_helpers.redrawn(model, teacher_forced, rng, frames=4, batch=2), atol=1e-4
        )


def test_unconditional_generation_needs_num_samples():
    config = _config(**UNCOND)
    model = wavenet.WaveNet(config)
    params = _random_variables(model, jnp.zeros((1, 8)))["params"]
    samples = generation.generate(model, {"params": params}, jax.random.key(1), num_samples=10)
    assert samples.shape == (1, 10)
    assert np.all(np.abs(np.asarray(samples)) <= 1.0)
    with pytest.raises(ValueError, match="num_samples"):
        generation.generate(model, params, jax.random.key(1))


@pytest.mark.parametrize("output", ["mol", "gaussian", "mulaw"])
def test_each_output_family_learns_a_short_sine(output):
    config = _config(**UNCOND, output=output, log_scale_min=-7.0)
    model = wavenet.WaveNet(config)
    t = jnp.arange(96)
    # Exactly predictable from the two previous samples, well inside the receptive field (15).
    x = (0.6 * jnp.sin(2 * jnp.pi * t / 12.0))[None]
    # The model's own initialisers; an RBG key compiles them faster than threefry.
    params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)["params"]
    steps = 48
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.05))

    def loss_fn(params):
        return wavenet.negative_log_likelihood(
            model.apply({"params": params}, x), x, model.distribution
        )

    @jax.jit
    def update(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    start = float(jax.jit(loss_fn)(params))
    for _ in range(steps):
        params, opt_state, _ = update(params, opt_state)
    end = float(jax.jit(loss_fn)(params))
    # 1.5 nats per sample: each sample's probability (density) grows e^1.5 = 4.5 times on
    # average, far beyond what a stalled or mis-wired loss could show. The three families'
    # NLLs live on different scales (16-bit bins, 256 classes, densities), so the margin is
    # absolute rather than relative.
    assert end < start - 1.5, (start, end)
    if output == "gaussian":
        # Below the best context-free Gaussian, 0.5 log(2 pi e var(x)): the past is being used.
        assert end < 0.5 * math.log(2 * math.pi * math.e * float(jnp.var(x))), end


def test_shape_and_conditioning_errors_are_clear():
    config = _config(**COND)
    x, mel, speaker = _inputs(config, batch=2, frames=5)
    model = wavenet.WaveNet(config)
    init = lambda *args: jax.eval_shape(model.init, jax.random.key(0), *args)

    with pytest.raises(ValueError, match=r"\(2, 20\).*\(2, 4, 3\).*16"):
        init(x, mel[:, :4], speaker)  # 20 samples against 4 frames x hop 4
    with pytest.raises(ValueError, match="mel"):
        init(x, None, speaker)
    with pytest.raises(ValueError, match="speaker"):
        init(x, mel, None)
    with pytest.raises(ValueError, match="n_mels"):
        init(x, mel[..., :2], speaker)
    with pytest.raises(ValueError, match="num_samples"):
        generation.generate(model, {}, jax.random.key(0), mel=mel, speaker=speaker, num_samples=7)

    plain = wavenet.WaveNet(_config(**UNCOND))
    with pytest.raises(ValueError, match="no local conditioning"):
        jax.eval_shape(plain.init, jax.random.key(0), x, mel)
    with pytest.raises(ValueError, match="no speaker conditioning"):
        jax.eval_shape(plain.init, jax.random.key(0), x, None, speaker)
    with pytest.raises(ValueError, match="gate_channels"):
        wavenet.WaveNet(_config(gate_channels=15))


def test_remat_and_bfloat16_keep_the_model():
    config = _config(**COND)
    x, mel, speaker = _inputs(config, batch=2, frames=4)
    model, params = _model_and_params(config, x, mel, speaker)

    def loss(model, params):
        out = model.apply({"params": params}, x, mel, speaker)
        return wavenet.negative_log_likelihood(out, x, model.distribution)

    remat = wavenet.WaveNet(_config(**COND, remat=True))
    assert jax.tree.structure(
        jax.eval_shape(remat.init, jax.random.key(1), x, mel, speaker)
    ) == jax.tree.structure({"params": params})
    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(model, p)))(params)
    value_r, grads_r = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(params)
    np.testing.assert_allclose(value_r, value, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_r, grads
    )

    half = wavenet.WaveNet(_config(**COND, dtype="bfloat16"))
    out = jax.jit(half.apply)({"params": params}, x, mel, speaker)
    assert out.dtype == jnp.float32
    full = jax.jit(model.apply)({"params": params}, x, mel, speaker)
    assert float(jnp.max(jnp.abs(out - full))) < 0.1 * float(jnp.max(jnp.abs(full)))
