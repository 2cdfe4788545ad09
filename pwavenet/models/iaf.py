"""The Parallel WaveNet student: a stack of inverse autoregressive flows over white noise.

`IAFStudent(config)` is built from the `model` section of configs/student.py. Flow k (of K) is
a WaveNet-style causal stack (`pwavenet.models.wavenet.WaveNet` with output 'affine') run on its
input x^{k-1} (x^0 = z, the base noise) shifted right by one step, conditioned on the shared
upsampled mel and the speaker embedding, and emitting per step a shift mu_k,t and a scale
s_k,t > 0:

  x^k_t = x^{k-1}_t * s_k,t + mu_k,t,   (mu_k,t, s_k,t) functions of x^{k-1}_<t only.

The one-step shift makes every flow strictly causal, so each is a valid IAF: dx^k/dx^{k-1}
is lower triangular with diagonal s_k. The K flows compose to one affine map per step,

  x_t = z_t * S_t + M_t,   S_t = prod_k s_k,t,   M <- M * s_k + mu_k (M = 0 before flow 1),

with S_t and M_t functions of z_<t only. So given z_<t, x_t is the base distribution
(logistic or Gaussian) shifted by M_t and scaled by S_t: p_S(x_t | z_<t) is known in closed
form, which is what distillation needs (pwavenet.distillation).

Synthesis filter (model.lpc_order = p > 0): a last, fixed layer that gives the student the
teacher's linear prediction (pwavenet.audio.lpc). Each mel frame gives a predictor a and an
excitation level g (the residual level its spectrum implies); with e the flows' output,

  u_t = g e_t,   x_t = u_t + sum_j a_j x_{t-1-j}   (all-pole synthesis, frame by frame),

so x - prediction(x) = u exactly: the teacher's residual of the student's audio is the
student's excitation. The prediction depends on x_<t, hence on z_<t only, so it joins the
shift and g the scale: M_t <- g M_t + prediction_t, S_t <- g S_t, and the Jacobian stays
lower triangular with log-determinant sum_t log S_t. The flows then only have to model the
excitation, as the teacher's network does, and the untrained student is already noise with
the mel's envelope and harmonics. The filter is recursive, so x_t depends on all of z_<t;
it runs as a scan over frames (pwavenet.audio.lpc.all_pole_filter), and chunked synthesis
carries its last p samples from chunk to chunk.

Sampling is parallel: one pass of each flow over all of z. The inverse (`inverse`) undoes the
synthesis filter in parallel and recovers z from x one step at a time: z_t needs x^{k-1}_<t
of every flow, so it runs the flows' cached one-step form (the teacher's generation
machinery) under one `lax.scan`. On a CPU, `forward` can take the flows window by window
(model.synthesis_chunk, `windowed_flows`) with the same result, and `sample` designs the
synthesis filters on a second thread while the flows run.

Scales: a flow's raw log-scale r becomes log s = lo + softplus(r - lo) - softplus(r - hi), a
smooth clamp to (lo, hi) = (model.flow_log_scale_min, model.flow_log_scale_max) that is the
identity well inside the interval, so no flow can shrink or blow up its input without bound.
Each flow's output layer starts small (model.output_init_scale) with its log-scale offset by
model.init_log_scale / K, so the untrained student is close to x = z * exp(init_log_scale):
noise at roughly the level of speech rather than of the unit-scale base.

Conditioning: the mel is upsampled once (`upsampler`, the same module and parameter layout as
the teacher's, so the distillation job can copy the teacher's weights in), optionally
projected to model.cond_channels by one shared 1x1 (`cond_proj`; a low-rank factorization of
the per-layer projections that cuts their cost by n_mels / cond_channels), and shared by every
flow; each flow's layers have their own 1x1 projections of it and of the speaker embedding.
A student with its own upsampler (model.upsampler='own') and cond_channels projects first, at
the frame rate, and upsamples cond_channels rather than n_mels channels: per sample, its last
stage then costs (cond_channels / n_mels)^2 of the teacher's (about 1 kFLOP instead of 26
with 16 of 80 mel bands).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from pwavenet.audio import excitation as excitation_lib
from pwavenet.audio import lpc as lpc_lib
from pwavenet.models import wavenet
from pwavenet.models.layers import check_hop_length
from pwavenet import config_schema

Array = jax.Array

__all__ = ["IAFStudent", "chunked_sample", "forward", "inverse", "log_prob", "sample"]

BASES = ("logistic", "gaussian")
EXCITATIONS = ("noise", "pulses")


def soft_clip(x: Array, lo: float, hi: float) -> Array:
    """Smooth clamp to (lo, hi): lo + softplus(x - lo) - softplus(x - hi), monotone, with
    slope 1 - O(exp(-distance to a bound))."""
    return lo + jax.nn.softplus(x - lo) - jax.nn.softplus(x - hi)


def flow_configs(config) -> list[ml_collections.FrozenConfigDict]:
    """The `model` config of each flow's WaveNet."""
    c = config
    out = []
    for k, layers in enumerate(c.flow_layers):
        per_cycle = min(layers, c.layers_per_cycle)
        if layers < 1 or layers % per_cycle:
            raise ValueError(
                f"model.flow_layers[{k}]={layers}: each flow needs a positive number of layers "
                f"that is a multiple of model.layers_per_cycle={c.layers_per_cycle} (or fewer "
                "than it, for one short cycle)."
            )
        out.append(
            ml_collections.FrozenConfigDict(
                dict(
                    output="affine",
                    num_cycles=layers // per_cycle,
                    layers_per_cycle=per_cycle,
                    kernel_size=c.kernel_size,
                    residual_channels=c.residual_channels,
                    gate_channels=c.gate_channels,
                    skip_channels=c.skip_channels,
                    # The flow gets the student's upsampled mel and speaker embedding.
                    n_mels=0,
                    num_speakers=0,
                    upsample_strides=(1,),
                    dtype=c.dtype,
                    remat=c.remat,
                    scan_unroll=c.get("scan_unroll", 1),
                    output_init_scale=c.output_init_scale,
                )
            )
        )
    return out


def _flow_receptive_field(fc) -> int:
    """R of one flow's config: its output at t depends on its input at t - R, ..., t."""
    dilations = sum(2**i for i in range(fc.layers_per_cycle)) * fc.num_cycles
    return (fc.kernel_size - 1) * dilations + 1


def _validate(c) -> None:
    if c.base not in BASES:
        raise ValueError(f"model.base={c.base!r}; expected one of {BASES}")
    if not c.flow_layers:
        raise ValueError("model.flow_layers is empty; give the layer count of each flow")
    if not c.flow_log_scale_min < c.init_log_scale / len(c.flow_layers) < c.flow_log_scale_max:
        raise ValueError(
            f"model.init_log_scale / number of flows = {c.init_log_scale / len(c.flow_layers)} "
            f"must lie inside (model.flow_log_scale_min, model.flow_log_scale_max) = "
            f"({c.flow_log_scale_min}, {c.flow_log_scale_max})"
        )
    if c.n_mels and c.get("hop_length") is not None:
        check_hop_length(c.upsample_strides, c.hop_length)
    if config_schema.setting(c, "model.lpc_order"):
        if not c.n_mels:
            raise ValueError(
                "model.lpc_order > 0 computes the synthesis filter from the mel: set n_mels, "
                "or model.lpc_order=0."
            )
        if c.lpc_mel.n_mels != c.n_mels:
            raise ValueError(
                f"model.lpc_mel.n_mels={c.lpc_mel.n_mels} differs from model.n_mels={c.n_mels}; "
                "lpc_mel must describe the mel the student is conditioned on."
            )
    excitation = config_schema.setting(c, "model.excitation")
    if excitation not in EXCITATIONS:
        raise ValueError(f"model.excitation={excitation!r}; expected one of {EXCITATIONS}")
    if excitation == "pulses" and not config_schema.setting(c, "model.lpc_order"):
        raise ValueError(
            "model.excitation='pulses' adds the pulses to the synthesis filter's excitation: "
            "set model.lpc_order > 0, or model.excitation='noise'."
        )
    configs = flow_configs(c)
    for fc in configs:
        wavenet.validate_config(fc)
    chunk = config_schema.setting(c, "model.synthesis_chunk")
    field = sum(_flow_receptive_field(fc) for fc in configs)
    if chunk and chunk < field:
        raise ValueError(
            f"model.synthesis_chunk={chunk} is shorter than the flows' receptive field "
            f"({field} samples), the past each window needs; use at least {field}, or 0 for "
            "one pass."
        )


class IAFStudent(nn.Module):
    """K inverse autoregressive flows on base noise z, conditioned on mel and speaker.

    Attributes:
      config: the `model` ConfigDict of configs/student.py (stored frozen).

    Parameter subtrees: `upsampler` (n_mels > 0; the teacher's layout), `cond_proj`
    (model.cond_channels > 0), `speaker_embedding`
    (num_speakers > 0), `flows_<k>` (each a WaveNet with output 'affine').
    """

    config: Any

    def __post_init__(self):
        object.__setattr__(self, "config", wavenet.freeze_config(self.config))
        _validate(self.config)
        super().__post_init__()

    @property
    def hop_length(self) -> int:
        return math.prod(self.config.upsample_strides)

    @property
    def num_flows(self) -> int:
        return len(self.config.flow_layers)

    @property
    def flow_receptive_fields(self) -> tuple[int, ...]:
        """Per flow R_k: x^k_t depends on x^{k-1}_t and x^{k-1}_{t - R_k}, ..., x^{k-1}_{t - 1}."""
        return tuple(_flow_receptive_field(fc) for fc in flow_configs(self.config))

    @property
    def has_synthesis_filter(self) -> bool:
        return bool(config_schema.setting(self.config, "model.lpc_order"))

    @property
    def has_pulses(self) -> bool:
        """model.excitation == 'pulses': a pitch-pulse train from the mel joins the shift."""
        return config_schema.setting(self.config, "model.excitation") == "pulses"

    @property
    def receptive_field(self) -> int:
        """The flows' output at t depends on z_{t - receptive_field}, ..., z_t: the sum of
        their fields. (The synthesis filter, if any, is recursive: x_t then depends on all of
        the past noise, and chunks carry its state; see `chunked_sample`.)"""
        return sum(self.flow_receptive_fields)

    def base_entropy(self) -> float:
        """Entropy in nats of the standard base distribution (logistic(0, 1) or N(0, 1))."""
        if self.config.base == "logistic":
            return 2.0
        return 0.5 * math.log(2.0 * math.pi * math.e)

    def sample_base(self, rng: Array, shape: tuple[int, ...]) -> Array:
        """Standard base noise z of the given shape."""
        if self.config.base == "logistic":
            return jax.random.logistic(rng, shape, jnp.float32)
        return jax.random.normal(rng, shape, jnp.float32)

    def base_log_prob(self, z: Array) -> Array:
        """Elementwise log density of the standard base."""
        if self.config.base == "logistic":
            return jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z)
        return -0.5 * jnp.square(z) - 0.5 * math.log(2.0 * math.pi)

    def setup(self):
        c = self.config
        upsampler, speaker_embedding = wavenet.conditioning_layers(c)
        if upsampler is not None:
            self.upsampler = upsampler
            if config_schema.setting(c, "model.cond_channels"):
                self.cond_proj = nn.Dense(c.cond_channels, use_bias=False, dtype=jnp.dtype(c.dtype))
        if speaker_embedding is not None:
            self.speaker_embedding = speaker_embedding
        self.flows = [wavenet.WaveNet(fc) for fc in flow_configs(c)]
        if self.has_pulses:
            self.pulse_log_gain = self.param(
                "pulse_log_gain",
                nn.initializers.constant(math.log(config_schema.setting(c, "model.pulse_gain"))),
                (),
            )
            self.voiced_noise_log_gain = self.param(
                "voiced_noise_log_gain",
                nn.initializers.constant(
                    math.log(config_schema.setting(c, "model.voiced_noise_gain"))
                ),
                (),
            )

    def conditioning(self, mel, speaker):
        """(mel_up, speaker_emb, filters): the upsampled mel (B, frames * hop, C), the speaker
        embedding (B, E) and the synthesis filters (`synthesis_filters`), None where the
        student has none. C = model.cond_channels if set (one shared 1x1 projection of the
        upsampled mel, so each layer's own projection is C x G rather than n_mels x G), else
        n_mels."""
        mel_up = None
        if self.config.n_mels:
            features = wavenet.normalized_mel(self.config, mel)
            if self._project_first:
                mel_up = self.upsampler(self.cond_proj(features))
            else:
                mel_up = self.upsampler(features)
                if config_schema.setting(self.config, "model.cond_channels"):
                    mel_up = self.cond_proj(mel_up)
        speaker_emb = self.speaker_embedding(speaker) if self.config.num_speakers else None
        return mel_up, speaker_emb, self.synthesis_filters(mel)

    @property
    def _project_first(self) -> bool:
        """An own upsampler (model.upsampler='own') with cond_channels runs on the projected
        mel: the same low-rank factorization, applied at the frame rate."""
        c = self.config
        own = config_schema.setting(c, "model.upsampler") == "own"
        return own and bool(config_schema.setting(c, "model.cond_channels"))

    def synthesis_filters(self, mel):
        """With model.lpc_order > 0: (coefficients (B, frames, lpc_order), log_gain (B,
        frames)), each mel frame's predictor and excitation level
        (pwavenet.audio.lpc.synthesis_filters), a fixed function of the data; else None."""
        if not config_schema.setting(self.config, "model.lpc_order"):
            return None
        mel = lax.stop_gradient(mel)
        filters = lpc_lib.synthesis_filters(mel, self.config)
        if self.has_pulses:
            filters = (*filters, *self.excitation_inputs(mel))
        return filters

    def excitation_inputs(self, mel):
        """(pulses, voicing), each (B, frames * hop), from the mel
        (pwavenet.audio.excitation.excitation_from_mel): what `excitation_terms` scales."""
        mel = lax.stop_gradient(mel)
        return excitation_lib.excitation_from_mel(mel, self.config.lpc_mel, self.hop_length)

    def excitation_terms(self, filters):
        """(log_noise_gain, added), each (B, T) and a function of the mel only, or (None, None)
        without pulses: the excitation is e' = e exp(log_noise_gain) + added, where e is the
        flows' output, added the pulses (model.excitation='pulses') times a learned gain, and
        log_noise_gain the mel's voicing (0..1) times a learned log-gain, so that the noise
        in voiced frames has its own level (starting at model.voiced_noise_gain). e' is an
        affine map of e_t whose terms depend on the mel only: the shift gains `added`, the
        log-scale log_noise_gain."""
        if filters is None or len(filters) < 4:
            return None, None
        pulses, voicing = filters[2:4]
        return voicing * self.voiced_noise_log_gain, jnp.exp(self.pulse_log_gain) * pulses

    def _affine(self, outputs: Array) -> tuple[Array, Array]:
        """(shift, log-scale) of one flow from its (..., 2) outputs."""
        c = self.config
        offset = c.init_log_scale / self.num_flows
        log_s = soft_clip(outputs[..., 1] + offset, c.flow_log_scale_min, c.flow_log_scale_max)
        return outputs[..., 0], log_s

    def __call__(
        self, z: Array, mel: Array | None = None, speaker: Array | None = None
    ) -> tuple[Array, Array, Array]:
        """Transforms base noise into audio in one parallel pass.

        Args:
          z: (B, T) standard base noise.
          mel: (B, frames, n_mels) with T = frames * hop, iff n_mels > 0.
          speaker: int (B,), iff num_speakers > 0.

        Returns:
          (x, mu_tot, log_s_tot), each (B, T) float32: x_t = z_t exp(log_s_tot_t) + mu_tot_t,
          with mu_tot_t and log_s_tot_t functions of z_<t only.
        """
        return self.transform(z, *self.conditioning_checked(z.shape, mel, speaker))

    def conditioning_checked(self, z_shape, mel, speaker):
        wavenet.check_inputs(self, z_shape, mel, speaker)
        return self.conditioning(mel, speaker)

    def transform(self, z, mel_up, speaker_emb, filters=None, past=None):
        """`__call__` after the conditioning; `past` (B, lpc_order) is the synthesis filter's
        state before the start (zeros if None)."""
        flowed = self.flows_transform(z, mel_up, speaker_emb)
        return self.filter_transform(*flowed, filters, past)

    def flows_transform(self, z, mel_up, speaker_emb):
        """The flows alone: (e, mu, log_s), each (B, T), with e_t = z_t exp(log_s_t) + mu_t."""
        x = z.astype(jnp.float32)
        mu_tot = jnp.zeros_like(x)
        log_s_tot = jnp.zeros_like(x)
        for flow in self.flows:
            mu, log_s = self._affine(flow.network(x, mel_up, speaker_emb))
            scale = jnp.exp(log_s)
            x = x * scale + mu
            mu_tot = mu_tot * scale + mu
            log_s_tot = log_s_tot + log_s
        return x, mu_tot, log_s_tot

    def filter_transform(self, x, mu_tot, log_s_tot, filters=None, past=None, plan=None):
        """The synthesis filter (if `filters` is not None) after the flows' (e, mu, log_s);
        `plan` is the filters' `pwavenet.audio.lpc.synthesis_plan` if already computed."""
        if filters is not None:
            # u = g e, x = u + prediction(x_<t): the prediction depends on z_<t only, so it
            # joins the shift; the gain joins the scale.
            coefficients, log_gain = filters[:2]
            log_noise_gain, added = self.excitation_terms(filters)
            if added is not None:
                # e exp(n) + p: n and p depend on the mel only, so p joins the shift and n
                # the log-scale.
                noise_gain = jnp.exp(log_noise_gain)
                x = x * noise_gain + added
                mu_tot = mu_tot * noise_gain + added
                log_s_tot = log_s_tot + log_noise_gain
            log_gain = jnp.repeat(log_gain, self.hop_length, axis=1)
            gain = jnp.exp(log_gain)
            u = x * gain
            x, _ = lpc_lib.all_pole_filter(u, coefficients, self.hop_length, past, plan)
            mu_tot = mu_tot * gain + (x - u)
            log_s_tot = log_s_tot + log_gain
        return x, mu_tot, log_s_tot

    def flow_step(self, k: int, cache, x_prev, mel_t, speaker_emb, t, cond_kernel=None):
        """Flow k's (shift, log-scale) at step t from its input at t - 1 and its cache;
        `cond_kernel` is `flow_conditioning_kernel(k)` if built ahead."""
        outputs, cache = self.flows[k].step(
            cache, x_prev, mel_t, speaker_emb, t, cond_kernel=cond_kernel
        )
        mu, log_s = self._affine(outputs)
        return mu, log_s, cache

    def flow_conditioning_kernel(self, k: int):
        """Flow k's `pwavenet.models.wavenet.WaveNet.conditioning_kernel` (its layers' 1x1s of the
        upsampled mel and the speaker embedding, stacked)."""
        return self.flows[k].conditioning_kernel()


# ----------------------------------------------------------------------------- functions


def sample(model: IAFStudent, params, rng: Array, mel=None, speaker=None, num_samples=None):
    """Audio (B, T) from fresh base noise in one parallel pass.

    `num_samples` (T) is needed only without a mel; with one, T = frames * hop.

    With a synthesis filter, the filters' design (Levinson per frame, impulse responses:
    `pwavenet.audio.lpc.synthesis_plan`) needs only the mel, and the flows need only the noise and
    the mel. Called outside a trace, the two run as separate programs on two threads at the
    same time, then the filter runs on both results: their loops are sequential, and each
    alone would leave a CPU core idle (docs/benchmarks.md has the measurements). The
    result is the one-program result (`forward` on the same noise); under a trace (sample
    inside a jitted function) it is one program.
    """
    traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves((params, rng, mel)))
    if traced or not model.has_synthesis_filter:
        return _sample_one_program(model, params, rng, mel, speaker, num_samples)
    variables = _variables(params)
    design = _design_pool().submit(
        lambda: jax.block_until_ready(_design_filters(model, variables, mel))
    )
    flowed = _sample_flows(model, variables, rng, mel, speaker)
    filters, plan = design.result()
    return _apply_filter(model, variables, flowed, filters, plan)


@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def _sample_one_program(model, params, rng, mel, speaker, num_samples):
    z = model.sample_base(rng, _noise_shape(model, mel, speaker, num_samples))
    return forward(model, params, z, mel, speaker)[0]


def _noise_shape(model, mel, speaker, num_samples) -> tuple[int, int]:
    batch = wavenet.check_inputs(model, None, mel, speaker) or 1
    return batch, mel.shape[1] * model.hop_length if mel is not None else num_samples


@functools.lru_cache(maxsize=1)
def _design_pool():
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pwavenet-filters")


@functools.partial(jax.jit, static_argnames=("model",))
def _design_filters(model, variables, mel):
    filters = model.apply(variables, mel, method=IAFStudent.synthesis_filters)
    return filters, lpc_lib.synthesis_plan(filters[0], model.hop_length)


@functools.partial(jax.jit, static_argnames=("model",))
def _sample_flows(model, variables, rng, mel, speaker):
    z = model.sample_base(rng, _noise_shape(model, mel, speaker, None))
    # The conditioning's filters are not used here, so XLA leaves their design out.
    mel_up, speaker_emb, _ = model.apply(
        variables, z.shape, mel, speaker, method=IAFStudent.conditioning_checked
    )
    return windowed_flows(model, variables, z, mel_up, speaker_emb)


@functools.partial(jax.jit, static_argnames=("model",))
def _apply_filter(model, variables, flowed, filters, plan):
    x, _, _ = model.apply(
        variables, *flowed, filters, None, plan, method=IAFStudent.filter_transform
    )
    return x


def forward(model: IAFStudent, params, z: Array, mel=None, speaker=None, past=None):
    """`model.apply(params, z, mel, speaker)`, (x, mu_tot, log_s_tot), with the flows run in
    windows of model.synthesis_chunk samples (`windowed_flows`); `past` as in `transform`."""
    variables = _variables(params)
    mel_up, speaker_emb, filters = model.apply(
        variables, z.shape, mel, speaker, method=IAFStudent.conditioning_checked
    )
    flowed = windowed_flows(model, variables, z, mel_up, speaker_emb)
    return model.apply(variables, *flowed, filters, past, method=IAFStudent.filter_transform)


def windowed_flows(model: IAFStudent, variables, z: Array, mel_up=None, speaker_emb=None):
    """`IAFStudent.flows_transform`, (e, mu, log_s), computed window by window.

    With c = model.synthesis_chunk > 0 and T > c, the noise is cut into windows of c samples;
    each runs through all the flows with the flows' receptive field (`receptive_field`) of
    noise before it and keeps only its own c outputs, which then equal the one-pass outputs
    (the first window has no past: it runs alone, zero-padded as the one pass is). The windows
    run one after another under `lax.map`, so each layer's activations stay in cache: on a
    CPU, narrow flows run about twice as fast in windows of 4096 samples as in one pass over
    seconds of audio. Accelerators want the one pass (c = 0).
    """
    chunk = config_schema.setting(model.config, "model.synthesis_chunk")
    batch, length = z.shape
    if not chunk or length <= chunk:
        return model.apply(variables, z, mel_up, speaker_emb, method=IAFStudent.flows_transform)
    context = model.receptive_field
    windows = -(-length // chunk) - 1  # after the first
    padded = windows * chunk + chunk
    z = jnp.pad(z.astype(jnp.float32), ((0, 0), (0, padded - length)))
    index = chunk - context + chunk * jnp.arange(windows)[:, None] + jnp.arange(chunk + context)

    def gather(v):  # (B, padded, ...) -> (windows, B, chunk + context, ...)
        return None if v is None else jnp.moveaxis(v[:, index], 1, 0)

    if mel_up is not None:
        mel_up = jnp.pad(mel_up, ((0, 0), (0, padded - length), (0, 0)))

    def run(z_w, mel_w):
        return jnp.stack(
            model.apply(variables, z_w, mel_w, speaker_emb, method=IAFStudent.flows_transform)
        )

    first = run(z[:, :chunk], None if mel_up is None else mel_up[:, :chunk])
    rest = lax.map(lambda w: run(*w)[..., context:], (gather(z), gather(mel_up)))
    rest = jnp.moveaxis(rest, 0, 2).reshape(3, batch, windows * chunk)
    out = jnp.concatenate([first, rest], axis=-1)[..., :length]
    return out[0], out[1], out[2]


def _variables(params) -> dict:
    return wavenet.as_variables(params)


@functools.partial(jax.jit, static_argnames=("model",))
def inverse(model: IAFStudent, params, x: Array, mel=None, speaker=None):
    """Recovers z from x = student(z) one step at a time.

    Args:
      model, params: the student.
      x: (B, T) audio.
      mel, speaker: the conditioning x was produced with.

    Returns:
      (z, log_s_tot), each (B, T): the noise, and the composed log-scale of every step (so
      log p_S(x) = sum_t [log base(z_t) - log_s_tot_t]).
    """
    variables = _variables(params)
    x = x.astype(jnp.float32)
    batch, length = x.shape
    mel_up, speaker_emb, filters = model.apply(
        variables, x.shape, mel, speaker, method=IAFStudent.conditioning_checked
    )
    mel_steps = None if mel_up is None else jnp.swapaxes(mel_up, 0, 1)
    configs = flow_configs(model.config)
    hop = model.hop_length

    base_log_s = jnp.zeros_like(x)
    flows_out = x
    if filters is not None:
        # Undo the synthesis filter in parallel: u = x - prediction(x), e = u / g.
        coefficients, log_gain = filters[:2]
        u = x - lpc_lib.predict(x, jnp.repeat(coefficients, hop, axis=1))
        base_log_s = jnp.repeat(log_gain, hop, axis=1)
        flows_out = u * jnp.exp(-base_log_s)
        log_noise_gain, added = model.apply(variables, filters, method=IAFStudent.excitation_terms)
        if added is not None:
            flows_out = (flows_out - added) * jnp.exp(-log_noise_gain)
            base_log_s = base_log_s + log_noise_gain

    # Built once, outside the loop over time (see pwavenet.models.wavenet.loop_invariant).
    cond_kernels = [
        model.apply(variables, k, method=IAFStudent.flow_conditioning_kernel)
        for k in range(len(configs))
    ]
    step_variables = wavenet.loop_invariant(variables)

    def one_step(carry, inputs):
        caches, prevs = carry
        t, y, log_s_t, mel_t = inputs
        new_caches, new_prevs = list(caches), list(prevs)
        variables_t = step_variables()
        # Undo the flows from the last: flow k maps x^{k-1}_t to x^k_t with (mu, s) computed
        # from x^{k-1}_<t, which flow k's cache already holds.
        for k in reversed(range(len(configs))):
            mu, log_s, new_caches[k] = model.apply(
                variables_t,
                k,
                caches[k],
                prevs[k],
                mel_t,
                speaker_emb,
                t,
                cond_kernels[k],
                method=IAFStudent.flow_step,
            )
            y = (y - mu) * jnp.exp(-log_s)
            new_prevs[k] = y
            log_s_t = log_s_t + log_s
        return (tuple(new_caches), tuple(new_prevs)), (y, log_s_t)

    caches = tuple(wavenet.zero_cache(fc, batch) for fc in configs)
    prevs = tuple(jnp.zeros((batch,), jnp.float32) for _ in configs)
    steps = (jnp.arange(length, dtype=jnp.int32), flows_out.T, base_log_s.T, mel_steps)
    _, (z, log_s) = lax.scan(one_step, (caches, prevs), steps)
    return z.T, log_s.T


def log_prob(model: IAFStudent, params, x: Array, mel=None, speaker=None) -> Array:
    """log p_S(x) per utterance (B,), in nats, through the sequential inverse."""
    z, log_s = inverse(model, params, x, mel, speaker)
    return jnp.sum(model.base_log_prob(z) - log_s, axis=-1)


def chunk_context(model: IAFStudent) -> tuple[int, int]:
    """(left, right) mel frames a chunk needs around it to match the one-pass output exactly.

    Left: the flows' total receptive field in frames, plus the upsampler's reach; right: the
    upsampler's reach (each transposed-convolution stage's kernel spans kernel_multiple of its
    input steps, so a sample sees at most that many frames on either side per stage).
    """
    reach = model.config.upsample_kernel_multiple * len(model.config.upsample_strides)
    if not model.config.n_mels:
        reach = 0
    left = -(-model.receptive_field // model.hop_length) + reach
    return left, reach


def chunked_sample(
    model: IAFStudent,
    params,
    z: Array,
    mel: Array | None = None,
    speaker: Array | None = None,
    *,
    chunk_frames: int,
):
    """The student's x for noise z, computed in chunks of `chunk_frames` mel frames.

    Each chunk's flows run with `chunk_context` frames of mel and noise around it and only its
    own samples are kept; the synthesis filter (model.lpc_order > 0) continues from the last
    lpc_order samples of the chunk before. So the result equals
    `model.apply(params, z, mel, speaker)[0]` while memory is bounded by the chunk plus its
    context. Without a mel, chunks are `chunk_frames * hop` samples.
    """
    hop = model.hop_length
    variables = _variables(params)
    check_unchunked(model, "chunked_sample")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    total = z.shape[1] // hop if mel is None else mel.shape[1]
    if mel is not None and z.shape[1] != total * hop:
        raise ValueError(
            f"noise of shape {z.shape} must have frames x hop = {total} x {hop} samples"
        )
    if mel is None and z.shape[1] % hop:
        total = -(-z.shape[1] // hop)
    left, right = chunk_context(model)
    apply = _chunk_jit(model)
    past = None
    if model.has_synthesis_filter:
        past = jnp.zeros((z.shape[0], model.config.lpc_order), jnp.float32)
    pieces = []
    for start in range(0, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        lo, hi = max(0, start - left), min(total, stop + right)
        z_chunk = z[:, lo * hop : hi * hop]
        mel_chunk = None if mel is None else mel[:, lo:hi]
        x, past = apply(variables, z_chunk, mel_chunk, speaker, past, start - lo, stop - lo)
        pieces.append(x)
    return jnp.concatenate(pieces, axis=1)[:, : z.shape[1]]


def check_unchunked(model: IAFStudent, what: str) -> None:
    """The pitch estimate behind model.excitation='pulses' reads the whole mel (its prior
    looks 120 frames either way, its voicing levels are relative to the loudest frame) and
    the pulse phase runs from the start, so a chunk alone would not give the one-pass output:
    refuse chunk-by-chunk synthesis of such a student."""
    if model.has_pulses:
        raise NotImplementedError(
            f"{what} does not support model.excitation='pulses' (its pitch estimate needs the "
            "whole mel): use iaf.sample, or Vocoder.vocode, which computes the pulses over the "
            "whole mel first."
        )


@functools.lru_cache(maxsize=8)
def _chunk_jit(model: IAFStudent):
    """(x of frames [keep_from, keep_to) of the chunk, the synthesis filter's state after
    them) for a chunk of noise and mel with its context."""

    def run(variables, z, mel, speaker, past, keep_from, keep_to):
        hop = model.hop_length
        mel_up, speaker_emb, filters = model.apply(
            variables, z.shape, mel, speaker, method=IAFStudent.conditioning_checked
        )
        x = windowed_flows(model, variables, z, mel_up, speaker_emb)[0]
        x = x[:, keep_from * hop : keep_to * hop]
        if filters is None:
            return x, past
        coefficients, log_gain = (f[:, keep_from:keep_to] for f in filters)
        u = x * jnp.exp(jnp.repeat(log_gain, hop, axis=1))
        return lpc_lib.all_pole_filter(u, coefficients, hop, past)

    return jax.jit(run, static_argnums=(5, 6))
