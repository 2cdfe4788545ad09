"""The Parallel WaveNet student: a stack of inverse autoregressive flows over white noise.

`IAFStudent(config)` is built from the `model` section of configs/student.py. Flow k (of K)
(`Flow`) is the dilated causal stack (pwavenet.models.stack, the teacher's network core) run
on its input x^{k-1} (x^0 = z, the base noise) shifted right by one step, conditioned on the
shared upsampled mel and the speaker embedding, with an affine head that emits per step a
shift mu_k,t and a scale s_k,t > 0:

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

Source (`SourceFilter`, `source_affine`): everything between the flows' output e and the
synthesis filter is one affine map per sample whose terms depend on the mel only,
u = e exp(log_scale) + shift; the excitation level g, and with model.excitation='pulses' the
voicing-scaled noise gain and the pulse train, fold into it. Synthesis, the training
transform and the inverse all apply it through `source_affine`.

Synthesis follows the contract of pwavenet.models.synthesis: `student_window` is the
student's window step (a `StudentState` carries the synthesis filter's last lpc_order
samples), and `sample` is one step over the whole mel. It is parallel: one pass of each flow
over all of the noise. On a CPU the flows can run window by window (model.synthesis_chunk,
`windowed_flows`) with the same result, and `sample` designs the synthesis filters on a
second thread while the flows run. The inverse (`inverse`) undoes the synthesis filter in
parallel and recovers z from x one step at a time: z_t needs x^{k-1}_<t of every flow, so it
runs the flows' cached one-step form under one `lax.scan`.

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

import concurrent.futures
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from pwavenet import config_schema
from pwavenet.audio import excitation as excitation_lib
from pwavenet.audio import lpc as lpc_lib
from pwavenet.models import conditioning as conditioning_lib
from pwavenet.models import pitch as pitch_lib
from pwavenet.models import placement, synthesis
from pwavenet.models.layers import check_hop_length
from pwavenet.models.stack import DilatedStack, StackCache, check_stack_config, receptive_field

Array = jax.Array

__all__ = [
    "Flow",
    "IAFStudent",
    "SourceFilter",
    "StudentState",
    "chunk_context",
    "forward",
    "inverse",
    "log_prob",
    "sample",
    "student_window",
]

BASES = ("logistic", "gaussian")
EXCITATIONS = ("noise", "pulses")
PITCH_SOURCES = ("estimate", "learned")


def soft_clip(x: Array, lo: float, hi: float) -> Array:
    """Smooth clamp to (lo, hi): lo + softplus(x - lo) - softplus(x - hi), monotone, with
    slope 1 - O(exp(-distance to a bound))."""
    return lo + jax.nn.softplus(x - lo) - jax.nn.softplus(x - hi)


class SourceFilter(NamedTuple):
    """What the mel fixes of the student's last layer: each frame's predictor and excitation
    level, and with model.excitation='pulses' the F0 (Hz) and voicing (0..1) of every sample
    (`pwavenet.audio.excitation.contour`), from which the pulses are drawn with a phase."""

    coefficients: Array  # (B, frames, lpc_order)
    log_gain: Array  # (B, frames)
    f0: Array | None = None  # (B, frames * hop)
    voicing: Array | None = None  # (B, frames * hop)

    def frames(self, start, count: int, hop: int) -> SourceFilter:
        """The part for frames [start, start + count)."""
        coefficients, log_gain = (
            lax.dynamic_slice_in_dim(a, start, count, axis=1)
            for a in (self.coefficients, self.log_gain)
        )
        rest = (
            None if a is None else lax.dynamic_slice_in_dim(a, start * hop, count * hop, axis=1)
            for a in (self.f0, self.voicing)
        )
        return SourceFilter(coefficients, log_gain, *rest)


class StudentState(NamedTuple):
    """Where the student's synthesis stands: the synthesis filter's last lpc_order samples,
    oldest first ((B, 0) without a filter), and the pulse train's phase in cycles (B,)."""

    filter_memory: Array
    pulse_phase: Array


def flow_configs(config) -> list[ml_collections.FrozenConfigDict]:
    """The stack config of each flow."""
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
                    num_cycles=layers // per_cycle,
                    layers_per_cycle=per_cycle,
                    kernel_size=c.kernel_size,
                    residual_channels=c.residual_channels,
                    gate_channels=c.gate_channels,
                    skip_channels=c.skip_channels,
                    dtype=c.dtype,
                    remat=c.remat,
                    scan_unroll=c.get("scan_unroll", 1),
                )
            )
        )
    return out


class Flow(nn.Module):
    """One IAF flow: the dilated stack with an affine head. Its (shift, log-scale) at t are
    functions of its input before t. The head's 1x1 starts small (`init_scale`), so the flow
    starts close to the fixed map x * exp(log_scale_offset); the raw log-scale is offset by
    `log_scale_offset` and clamped smoothly to (log_scale_min, log_scale_max).

    Parameters: the stack's `input_conv`, `cycles` and `skip_out`, and the head `output`."""

    config: Any  # a `flow_configs` entry
    init_scale: float
    log_scale_offset: float
    log_scale_min: float
    log_scale_max: float

    def setup(self):
        self.stack = DilatedStack(self.config)
        nn.share_scope(self, self.stack)
        self.output = nn.Dense(
            2, dtype=jnp.float32, kernel_init=nn.initializers.normal(self.init_scale)
        )

    def _affine(self, features: Array) -> tuple[Array, Array]:
        outputs = self.output(features).astype(jnp.float32)
        raw = outputs[..., 1] + self.log_scale_offset
        return outputs[..., 0], soft_clip(raw, self.log_scale_min, self.log_scale_max)

    def __call__(self, x: Array, cond: Array | None, speaker_emb: Array | None):
        """(shift, log-scale), each (B, T), of the flow's input x (B, T)."""
        return self._affine(self.stack(x, cond, speaker_emb))

    def step(self, cache: StackCache, x_prev: Array, t: Array, *, cond_terms=None):
        """(shift, log-scale) at step t, each (B,), from the input at t - 1, and the cache."""
        features, cache = self.stack.step(cache, x_prev, t, cond_terms=cond_terms)
        return (*self._affine(features), cache)

    def conditioning_kernel(self):
        return self.stack.conditioning_kernel()

    def step_conditioning(self, cond_t, speaker_emb, kernel=None):
        return self.stack.step_conditioning(cond_t, speaker_emb, kernel)


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
    _validate_source(c)
    configs = flow_configs(c)
    for fc in configs:
        check_stack_config(fc)
    chunk = config_schema.setting(c, "model.synthesis_chunk")
    field = sum(receptive_field(fc) for fc in configs)
    if chunk and chunk < field:
        raise ValueError(
            f"model.synthesis_chunk={chunk} is shorter than the flows' receptive field "
            f"({field} samples), the past each window needs; use at least {field}, or 0 for "
            "one pass."
        )


def _validate_source(c) -> None:
    order = config_schema.setting(c, "model.lpc_order")
    if order:
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
    if excitation == "pulses" and not order:
        raise ValueError(
            "model.excitation='pulses' adds the pulses to the synthesis filter's excitation: "
            "set model.lpc_order > 0, or model.excitation='noise'."
        )
    pitch_source = config_schema.setting(c, "model.pitch_source")
    if pitch_source not in PITCH_SOURCES:
        raise ValueError(f"model.pitch_source={pitch_source!r}; expected one of {PITCH_SOURCES}")


class IAFStudent(nn.Module):
    """K inverse autoregressive flows on base noise z, conditioned on mel and speaker.

    Attributes:
      config: the `model` ConfigDict of configs/student.py (stored frozen).

    Parameter subtrees: `upsampler` (n_mels > 0; the teacher's layout), `cond_proj`
    (model.cond_channels > 0), `speaker_embedding` (num_speakers > 0), `flows_<k>` (each a
    `Flow`), and with pulses `pulse_log_gain` and `voiced_noise_log_gain`.
    """

    config: Any

    def __post_init__(self):
        object.__setattr__(self, "config", conditioning_lib.freeze_config(self.config))
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
        return tuple(receptive_field(fc) for fc in flow_configs(self.config))

    @property
    def lpc_order(self) -> int:
        return int(config_schema.setting(self.config, "model.lpc_order"))

    @property
    def has_synthesis_filter(self) -> bool:
        return bool(self.lpc_order)

    @property
    def has_pulses(self) -> bool:
        """model.excitation == 'pulses': a pitch-pulse train from the mel joins the shift."""
        return config_schema.setting(self.config, "model.excitation") == "pulses"

    @property
    def learned_pitch(self) -> bool:
        """The pulses' F0 and voicing come from the learned pitch predictor
        (model.pitch_source='learned', pwavenet.models.pitch): a bounded context, so the
        student streams; else from the hand-made estimate, which reads the whole mel."""
        return self.has_pulses and config_schema.setting(self.config, "model.pitch_source") == (
            "learned"
        )

    @property
    def pitch_context(self) -> int:
        """Frames on either side a sample's pulses read: the learned predictor's context plus
        the frame the contour interpolates from; 0 without a learned pitch."""
        if not self.learned_pitch:
            return 0
        return int(sum(config_schema.setting(self.config, "model.pitch_dilations"))) + 1

    @property
    def receptive_field(self) -> int:
        """The flows' output at t depends on z_{t - receptive_field}, ..., z_t: the sum of
        their fields. (The synthesis filter, if any, is recursive: x_t then depends on all of
        the past noise, and windows carry its state; see `student_window`.)"""
        return sum(self.flow_receptive_fields)

    def initial_state(self, batch: int) -> StudentState:
        """The synthesis filter at rest (zero memory), the pulses at phase 0."""
        return StudentState(
            jnp.zeros((batch, self.lpc_order), jnp.float32), jnp.zeros((batch,), jnp.float32)
        )

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
        upsampler, speaker_embedding = conditioning_lib.conditioning_layers(c)
        if upsampler is not None:
            self.upsampler = upsampler
            if config_schema.setting(c, "model.cond_channels"):
                self.cond_proj = nn.Dense(c.cond_channels, use_bias=False, dtype=jnp.dtype(c.dtype))
        if speaker_embedding is not None:
            self.speaker_embedding = speaker_embedding
        self.flows = [
            Flow(
                fc,
                init_scale=c.output_init_scale,
                log_scale_offset=c.init_log_scale / self.num_flows,
                log_scale_min=c.flow_log_scale_min,
                log_scale_max=c.flow_log_scale_max,
            )
            for fc in flow_configs(c)
        ]
        if self.learned_pitch:
            self.pitch = pitch_lib.PitchPredictor(
                channels=config_schema.setting(c, "model.pitch_channels"),
                dilations=tuple(config_schema.setting(c, "model.pitch_dilations")),
                num_speakers=c.num_speakers,
                speaker_dim=config_schema.setting(c, "model.pitch_speaker_dim"),
            )
        if self.has_pulses:
            self.pulse_log_gain = self._log_gain_param("pulse_log_gain", "model.pulse_gain")
            self.voiced_noise_log_gain = self._log_gain_param(
                "voiced_noise_log_gain", "model.voiced_noise_gain"
            )

    def _log_gain_param(self, name: str, field: str):
        start = math.log(config_schema.setting(self.config, field))
        return self.param(name, nn.initializers.constant(start), ())

    # ----------------------------------------------------------------- conditioning

    def conditioning(self, mel, speaker):
        """(mel_up, speaker_emb, source): the upsampled mel (B, frames * hop, C), the speaker
        embedding (B, E) and the `SourceFilter` (`source_filter`), None where the student has
        none. C = model.cond_channels if set (one shared 1x1 projection of the upsampled mel,
        so each layer's own projection is C x G rather than n_mels x G), else n_mels."""
        mel_up = None
        if self.config.n_mels:
            features = conditioning_lib.normalized_mel(self.config, mel)
            if self._project_first:
                mel_up = self.upsampler(self.cond_proj(features))
            else:
                mel_up = self.upsampler(features)
                if config_schema.setting(self.config, "model.cond_channels"):
                    mel_up = self.cond_proj(mel_up)
        speaker_emb = self.speaker_embedding(speaker) if self.config.num_speakers else None
        return mel_up, speaker_emb, self.source_filter(mel, speaker)

    def conditioning_checked(self, z_shape, mel, speaker):
        conditioning_lib.check_inputs(self, z_shape, mel, speaker)
        return self.conditioning(mel, speaker)

    @property
    def _project_first(self) -> bool:
        """An own upsampler (model.upsampler='own') with cond_channels runs on the projected
        mel: the same low-rank factorization, applied at the frame rate."""
        c = self.config
        own = config_schema.setting(c, "model.upsampler") == "own"
        return own and bool(config_schema.setting(c, "model.cond_channels"))

    def source_filter(self, mel, speaker=None, valid=None) -> SourceFilter | None:
        """With model.lpc_order > 0 the `SourceFilter` of a mel (each frame's predictor and
        excitation level, pwavenet.audio.lpc.synthesis_filters; with pulses the F0 and voicing
        contour), a fixed function of the data; else None. `valid`: the mel's real frames
        (the rest is a window's padding), for the learned pitch predictor."""
        if not self.lpc_order:
            return None
        mel = lax.stop_gradient(mel)
        source = SourceFilter(*lpc_lib.synthesis_filters(mel, self.config))
        if self.has_pulses:
            pitch = self.excitation_inputs(mel, speaker, valid)
            source = source._replace(f0=pitch.f0, voicing=pitch.voicing)
        return source

    def excitation_inputs(self, mel, speaker=None, valid=None) -> SourceFilter:
        """A `SourceFilter` holding only the F0 and voicing contour (each (B, frames * hop))
        of a mel: from the learned predictor (pwavenet.models.pitch; not trained further) or
        the hand-made estimate (pwavenet.audio.excitation.estimate_pitch)."""
        mel = lax.stop_gradient(mel)
        if self.learned_pitch:
            f0, voiced = pitch_lib.decode(*self.pitch(mel, speaker, valid))
            f0, voiced = lax.stop_gradient(f0), lax.stop_gradient(voiced)
        else:
            f0, voiced = excitation_lib.estimate_pitch(mel, self.config.lpc_mel)
        contour = excitation_lib.contour(f0, voiced, self.hop_length, valid)
        return SourceFilter(None, None, *contour)

    def source_affine(self, source: SourceFilter, phase=None):
        """(log_scale, shift, phase after), (B, T), (B, T) and (B,), functions of the mel (and
        the pulses' starting `phase`, 0 if None) only: the excitation is
        u = e exp(log_scale) + shift for the flows' output e. log_scale is the frame's
        excitation level log g; with pulses (model.excitation='pulses') the excitation is
        g (e exp(n) + p), where p is the pulse train (pwavenet.audio.excitation.pulses) times a
        learned gain and n the voicing (0..1) times a learned log-gain, so that the noise of
        voiced frames has its own level (starting at model.voiced_noise_gain): then
        log_scale = log g + n, shift = g p."""
        log_scale = jnp.repeat(source.log_gain, self.hop_length, axis=1)
        shift = jnp.zeros_like(log_scale)
        if phase is None:
            phase = jnp.zeros(log_scale.shape[:1], jnp.float32)
        if source.f0 is not None:
            sample_rate = int(self.config.lpc_mel.sample_rate)
            pulses, phase = excitation_lib.pulses(source.f0, source.voicing, sample_rate, phase)
            shift = jnp.exp(log_scale + self.pulse_log_gain) * pulses
            log_scale = log_scale + source.voicing * self.voiced_noise_log_gain
        return log_scale, shift, phase

    # ----------------------------------------------------------------- transform

    def __call__(self, z, mel=None, speaker=None) -> tuple[Array, Array, Array]:
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

    def transform(self, z, mel_up, speaker_emb, source=None, state=None):
        """`__call__` after the conditioning; `state` (a `StudentState`) is the synthesis
        filter's before the start (at rest if None)."""
        return self.filter_transform(self.flows_transform(z, mel_up, speaker_emb), source, state)

    def flows_transform(self, z, mel_up, speaker_emb):
        """The flows alone: (e, mu, log_s), each (B, T), with e_t = z_t exp(log_s_t) + mu_t."""
        x = z.astype(jnp.float32)
        mu_tot = jnp.zeros_like(x)
        log_s_tot = jnp.zeros_like(x)
        for flow in self.flows:
            mu, log_s = flow(x, mel_up, speaker_emb)
            scale = jnp.exp(log_s)
            x = x * scale + mu
            mu_tot = mu_tot * scale + mu
            log_s_tot = log_s_tot + log_s
        return x, mu_tot, log_s_tot

    def filter_transform(self, flowed, source=None, state=None):
        """The source and synthesis filter (if `source` is not None) after the flows'
        `flowed` = (e, mu, log_s): (x, mu_tot, log_s_tot). u = e exp(a) + b and
        x = u + prediction(x_<t): b and the prediction depend on z_<t only, so they join the
        shift; a joins the log-scale."""
        e, mu_tot, log_s_tot = flowed
        if source is None:
            return e, mu_tot, log_s_tot
        u, log_scale, shift, _ = self._excitation(e, source, state)
        x, _ = self._all_pole(u, source, state)
        return x, mu_tot * jnp.exp(log_scale) + shift + (x - u), log_s_tot + log_scale

    def excite(self, e, source: SourceFilter, state=None, plan=None):
        """(x, state after it): the flows' output e (B, T) through the source's affine map
        and the all-pole synthesis filter, continuing from `state` (at rest if None); `plan`
        is the filters' `pwavenet.audio.lpc.synthesis_plan` if already computed."""
        u, _, _, phase = self._excitation(e, source, state)
        x, memory = self._all_pole(u, source, state, plan)
        return x, StudentState(memory, phase)

    def _excitation(self, e, source, state):
        phase = None if state is None else state.pulse_phase
        log_scale, shift, phase = self.source_affine(source, phase)
        return e * jnp.exp(log_scale) + shift, log_scale, shift, phase

    def _all_pole(self, u, source, state, plan=None):
        memory = None if state is None else state.filter_memory
        return lpc_lib.all_pole_filter(u, source.coefficients, self.hop_length, memory, plan)

    def flow_step(self, k: int, cache, x_prev, t, cond_kernel=None, cond_t=None):
        """Flow k's (shift, log-scale, cache) at step t from its input at t - 1, with the
        upsampled mel and speaker terms of step t (`cond_t`: (cond (B, C) or None,
        speaker_emb or None)); `cond_kernel` is `flow_conditioning_kernel(k)` if built ahead."""
        flow = self.flows[k]
        terms = flow.step_conditioning(*cond_t, cond_kernel) if cond_t is not None else None
        return flow.step(cache, x_prev, t, cond_terms=terms)

    def flow_conditioning_kernel(self, k: int):
        """Flow k's `pwavenet.models.stack.DilatedStack.conditioning_kernel`."""
        return self.flows[k].conditioning_kernel()


# ----------------------------------------------------------------------------- synthesis


def student_window(model: IAFStudent, variables, state: StudentState, window, *, chunk: int):
    """The student's window step (pwavenet.models.synthesis): (audio (B, chunk * hop), the
    state after it) for the piece of frames [keep, keep + chunk) of `window`."""
    source, plan = window_source(model, variables, window, chunk=chunk)
    e = window_flows(model, variables, window, chunk=chunk)
    if source is None:
        return e, state
    return model.apply(variables, e, source, state, plan, method=IAFStudent.excite)


def window_source(model: IAFStudent, variables, window, *, chunk: int):
    """The piece's `SourceFilter` and synthesis plan (None, None without a filter): a
    function of the mel only. A pulses student takes the window's `excitation` (its F0 and
    voicing contour over the piece) if given."""
    if not model.has_synthesis_filter:
        return None, None
    with synthesis.valid_frames_only(window.valid):
        source = model.apply(
            variables, window.mel, window.speaker, window.valid, method=IAFStudent.source_filter
        )
    source = source.frames(window.keep, chunk, model.hop_length)
    if window.excitation is not None:
        source = source._replace(f0=window.excitation[0], voicing=window.excitation[1])
    return source, lpc_lib.synthesis_plan(source.coefficients, model.hop_length)


def window_noise(model: IAFStudent, window, frames: int) -> Array:
    """The base noise of the whole window of `frames` frames (B, frames * frame): given, or
    drawn by frame."""
    if window.noise is not None:
        return window.noise.astype(jnp.float32)
    length = synthesis.frame_length(model)
    frames = window.start + jnp.arange(frames)
    z = synthesis.frame_noise(model.sample_base, window.keys, frames, length)
    return z.reshape(z.shape[0], -1)


def window_flows(model: IAFStudent, variables, window, *, chunk: int):
    """The flows' output e (B, chunk * frame) for the piece: the window's noise through the
    flows, conditioned on the window's mel, cut to the piece."""
    z = window_noise(model, window, chunk if window.mel is None else window.mel.shape[1])
    length = synthesis.frame_length(model)
    with synthesis.valid_frames_only(window.valid):
        mel_up, speaker_emb, _ = model.apply(
            variables, z.shape, window.mel, window.speaker, method=IAFStudent.conditioning_checked
        )
    e = windowed_flows(model, variables, z, mel_up, speaker_emb)[0]
    return lax.dynamic_slice_in_dim(e, window.keep * length, chunk * length, axis=1)


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


def _whole(model: IAFStudent, rng, mel, speaker, num_samples):
    """(the window that is the whole input, its frame count)."""
    batch = conditioning_lib.check_inputs(model, None, mel, speaker) or 1
    if mel is not None:
        frames = mel.shape[1]
    else:
        frames = -(-int(num_samples) // synthesis.frame_length(model))
    return synthesis.Window.whole(mel, speaker, synthesis.item_keys(rng, batch)), frames


def sample(model: IAFStudent, params, rng: Array, mel=None, speaker=None, num_samples=None):
    """Audio (B, T) from fresh base noise in one parallel pass: `student_window` over the
    whole mel, with item b's noise from fold_in(rng, b) (pwavenet.models.synthesis).

    `num_samples` (T) is needed only without a mel; with one, T = frames * hop.

    With a synthesis filter, the filters' design (Levinson per frame, impulse responses:
    `window_source`) needs only the mel, and the flows (`window_flows`) only the noise and
    the mel. Called outside a trace, the two run as separate programs on two threads at the
    same time, then the filter runs on both results: their loops are sequential, and each
    alone would leave a CPU core idle (docs/benchmarks.md has the measurements). The result
    is the one-program result; under a trace it is one program.
    """
    variables = placement.as_variables(params)
    window, frames = _whole(model, rng, mel, speaker, num_samples)
    traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves((params, rng, mel)))
    state = model.initial_state(window.keys.shape[0])
    if traced or not model.has_synthesis_filter:
        x = _window_jit(model, frames)(variables, state, window)[0]
    else:
        design = _design_pool().submit(
            lambda: jax.block_until_ready(_source_jit(model, frames)(variables, window))
        )
        e = _flows_jit(model, frames)(variables, window)
        x = _excite_jit(model)(variables, e, *design.result(), state)[0]
    if mel is not None:
        num_samples = frames * model.hop_length
    return x[:, :num_samples]


@functools.lru_cache(maxsize=1)
def _design_pool():
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pwavenet-filters")


@functools.lru_cache(maxsize=16)
def _window_jit(model, chunk):
    return jax.jit(functools.partial(student_window, model, chunk=chunk))


@functools.lru_cache(maxsize=16)
def _source_jit(model, chunk):
    return jax.jit(functools.partial(window_source, model, chunk=chunk))


@functools.lru_cache(maxsize=16)
def _flows_jit(model, chunk):
    return jax.jit(functools.partial(window_flows, model, chunk=chunk))


@functools.lru_cache(maxsize=16)
def _excite_jit(model):
    def excite(variables, e, source, plan, state):
        return model.apply(variables, e, source, state, plan, method=IAFStudent.excite)

    return jax.jit(excite)


def forward(model: IAFStudent, params, z: Array, mel=None, speaker=None, state=None):
    """`model.apply(params, z, mel, speaker)`, (x, mu_tot, log_s_tot), with the flows run in
    windows of model.synthesis_chunk samples (`windowed_flows`); `state` as in `transform`.
    Its x is `student_window`'s audio for the same noise."""
    variables = placement.as_variables(params)
    mel_up, speaker_emb, source = model.apply(
        variables, z.shape, mel, speaker, method=IAFStudent.conditioning_checked
    )
    flowed = windowed_flows(model, variables, z, mel_up, speaker_emb)
    return model.apply(variables, flowed, source, state, method=IAFStudent.filter_transform)


def chunk_context(model: IAFStudent) -> tuple[int, int]:
    """(left, right) mel frames a window needs around its piece to match the one-pass output
    exactly. Left: the flows' total receptive field in frames, plus the upsampler's reach;
    right: the upsampler's reach (each transposed-convolution stage's kernel spans
    kernel_multiple of its input steps, so a sample sees at most that many frames on either
    side per stage); each at least the learned pitch's context (`pitch_context`)."""
    reach = model.config.upsample_kernel_multiple * len(model.config.upsample_strides)
    if not model.config.n_mels:
        reach = 0
    left = -(-model.receptive_field // model.hop_length) + reach
    return max(left, model.pitch_context), max(reach, model.pitch_context)


# ----------------------------------------------------------------------------- inverse


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
    variables = placement.as_variables(params)
    x = x.astype(jnp.float32)
    mel_up, speaker_emb, source = model.apply(
        variables, x.shape, mel, speaker, method=IAFStudent.conditioning_checked
    )
    e, base_log_s = x, jnp.zeros_like(x)
    if source is not None:
        # Undo the synthesis filter in parallel, u = x - prediction(x), then the source's
        # affine map: e = (u - shift) exp(-log_scale).
        coefficients = jnp.repeat(source.coefficients, model.hop_length, axis=1)
        u = x - lpc_lib.predict(x, coefficients)
        base_log_s, shift, _ = model.apply(variables, source, method=IAFStudent.source_affine)
        e = (u - shift) * jnp.exp(-base_log_s)
    z, log_s = _invert_flows(model, variables, e, mel_up, speaker_emb)
    return z, log_s + base_log_s


def _invert_flows(model: IAFStudent, variables, e, mel_up, speaker_emb):
    """z and the flows' summed log-scale from their output e, one step at a time: flow k maps
    x^{k-1}_t to x^k_t with (mu, s) computed from x^{k-1}_<t, which its cache holds."""
    configs = flow_configs(model.config)
    batch, length = e.shape
    # Built once, outside the loop over time (see pwavenet.models.placement.loop_invariant).
    kernels = [
        model.apply(variables, k, method=IAFStudent.flow_conditioning_kernel)
        for k in range(len(configs))
    ]
    step_variables = placement.loop_invariant(variables)

    def one_step(carry, inputs):
        caches, prevs = carry
        t, y, cond_t = inputs
        caches, prevs, log_s_t = list(caches), list(prevs), jnp.zeros_like(y)
        variables_t = step_variables()
        for k in reversed(range(len(configs))):
            mu, log_s, caches[k] = model.apply(
                variables_t, k, caches[k], prevs[k], t, kernels[k], (cond_t, speaker_emb),
                method=IAFStudent.flow_step,
            )
            y = (y - mu) * jnp.exp(-log_s)
            prevs[k] = y
            log_s_t = log_s_t + log_s
        return (tuple(caches), tuple(prevs)), (y, log_s_t)

    caches = tuple(StackCache.zeros(fc, batch) for fc in configs)
    prevs = tuple(jnp.zeros((batch,), jnp.float32) for _ in configs)
    cond_steps = None if mel_up is None else jnp.swapaxes(mel_up, 0, 1)
    steps = (jnp.arange(length, dtype=jnp.int32), e.T, cond_steps)
    _, (z, log_s) = lax.scan(one_step, (caches, prevs), steps)
    return z.T, log_s.T


def log_prob(model: IAFStudent, params, x: Array, mel=None, speaker=None) -> Array:
    """log p_S(x) per utterance (B,), in nats, through the sequential inverse."""
    z, log_s = inverse(model, params, x, mel, speaker)
    return jnp.sum(model.base_log_prob(z) - log_s, axis=-1)
