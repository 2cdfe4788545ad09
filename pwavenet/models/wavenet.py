"""The WaveNet teacher: p(x_t | x_<t, mel, speaker) for every t, and its one-step form.

`WaveNet(config)` is built from the `model` section of configs/teacher.py. With x (B, T) in
[-1, 1] it returns (B, T, P) parameters of p(x_t | x_<t, mel, speaker) for every t, in the
layout of the output family `distribution` (pwavenet.models.distributions): the dilated causal
stack (pwavenet.models.stack) on the upsampled mel and the speaker embedding, then a 1x1 to P.

Receptive field: output t depends on x_{t - R}, ..., x_{t - 1} and nothing else, with
R = `receptive_field` = (k - 1) * num_cycles * (2^layers_per_cycle - 1) + 1 = (k - 1) * sum of
dilations + 1; the "+ 1" is the newest sample x_{t - 1}, which the one-step shift moves into
the window in place of x_t.

Linear prediction (`model.lpc_order` = p > 0, pwavenet.audio.lpc): the mean of the output (each
MoL component's mean, the Gaussian's or logistic's) is sum_j a_j x_{t-1-j} plus the
network's output, with a fixed per-frame predictor a computed from the mel frame of sample t;
the network then models the excitation. Output t then also sees x_{t - p}, ..., x_{t - 1}.

The one-step form (`step`) carries a `TeacherState`; the generation loop over it is
pwavenet.models.generation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pwavenet import config_schema
from pwavenet.audio import lpc as lpc_lib
from pwavenet.models import distributions
from pwavenet.models.conditioning import (
    check_inputs,
    conditioning_layers,
    freeze_config,
    normalized_mel,
)
from pwavenet.models.layers import check_hop_length
from pwavenet.models.stack import DilatedStack, StackCache, check_stack_config, receptive_field

Array = jax.Array

__all__ = [
    "TeacherState",
    "WaveNet",
    "log_likelihood",
    "negative_log_likelihood",
]

OUTPUTS = ("mol", "gaussian", "logistic", "mulaw")


class TeacherState(NamedTuple):
    """Where cached generation stands before step t: the stack's ring buffers, the last
    lpc_order samples newest first ((B, 0) without linear prediction), and x_{t-1} (B,)."""

    cache: StackCache
    history: Array
    last: Array


def validate_config(c) -> None:
    if c.output not in OUTPUTS:
        raise ValueError(f"model.output={c.output!r}; expected one of {OUTPUTS}")
    check_stack_config(c)
    if c.n_mels < 0 or c.num_speakers < 0:
        raise ValueError(
            f"model.n_mels and model.num_speakers must be >= 0, got {c.n_mels} and {c.num_speakers}"
        )
    order = config_schema.setting(c, "model.lpc_order")
    if order:
        if c.output not in ("mol", "gaussian", "logistic"):
            raise ValueError(
                f"model.lpc_order={order} adds a linear prediction to the output's mean; "
                f"model.output={c.output!r} has none. Use mol, gaussian or logistic, or set "
                "model.lpc_order=0."
            )
        if not c.n_mels:
            raise ValueError("model.lpc_order > 0 computes the predictor from the mel: set n_mels.")
        if c.lpc_mel.n_mels != c.n_mels:
            raise ValueError(
                f"model.lpc_mel.n_mels={c.lpc_mel.n_mels} differs from model.n_mels={c.n_mels}; "
                "lpc_mel must describe the mel the model is conditioned on."
            )
    if c.n_mels and c.get("hop_length") is not None:
        check_hop_length(c.upsample_strides, c.hop_length)


class WaveNet(nn.Module):
    """WaveNet over raw audio with optional mel (local) and speaker (global) conditioning.

    Attributes:
      config: the `model` ConfigDict of configs/teacher.py (stored frozen, so the module is
        hashable and can be a static argument of `jax.jit`). An optional `hop_length` field, if
        present, is checked against prod(upsample_strides).

    Parameter subtrees: `upsampler` (n_mels > 0), `speaker_embedding` (num_speakers > 0), the
    stack's `input_conv`, `cycles/layer_<i>/...` (stacked over cycles) and `skip_out`, and the
    head `output`.
    """

    config: Any

    def __post_init__(self):
        object.__setattr__(self, "config", freeze_config(self.config))
        validate_config(self.config)
        super().__post_init__()

    @property
    def dilations(self) -> tuple[int, ...]:
        """Dilation of every residual layer, in order."""
        return tuple(2**i for i in range(self.config.layers_per_cycle)) * self.config.num_cycles

    @property
    def lpc_order(self) -> int:
        return int(config_schema.setting(self.config, "model.lpc_order"))

    @property
    def receptive_field(self) -> int:
        """Number of past samples each output depends on: output t sees exactly
        x_{t - receptive_field}, ..., x_{t - 1}. Equals (kernel_size - 1) * sum(dilations) + 1,
        or lpc_order if that is larger."""
        return max(receptive_field(self.config), self.lpc_order)

    @property
    def hop_length(self) -> int:
        """Samples per mel frame: prod(upsample_strides)."""
        return math.prod(self.config.upsample_strides)

    @property
    def distribution(self) -> distributions.Distribution:
        """The output family; P = distribution.num_params."""
        c = self.config
        if c.output == "mol":
            return distributions.get_distribution(
                "mol", num_mixtures=c.num_mixtures, log_scale_min=c.log_scale_min
            )
        if c.output == "mulaw":
            return distributions.get_distribution("mulaw", mu=255)
        return distributions.get_distribution(
            c.output,
            log_scale_min=c.log_scale_min,
            # (a teacher saved before the ceiling existed has none)
            log_scale_max=c.get("log_scale_max", math.inf),
        )

    def initial_state(self, batch: int) -> TeacherState:
        """The state generation starts from: zero caches and history, x_{-1} = 0."""
        return TeacherState(
            StackCache.zeros(self.config, batch),
            jnp.zeros((batch, self.lpc_order), jnp.float32),
            jnp.zeros((batch,), jnp.float32),
        )

    def setup(self):
        c = self.config
        upsampler, speaker_embedding = conditioning_layers(c)
        if upsampler is not None:
            self.upsampler = upsampler
        if speaker_embedding is not None:
            self.speaker_embedding = speaker_embedding
        self.stack = DilatedStack(c)
        nn.share_scope(self, self.stack)
        # In float32 even for bfloat16 models: 16-bit floats cannot place a mean within a
        # 16-bit audio bin.
        self.output = nn.Dense(self.distribution.num_params, dtype=jnp.float32)

    def __call__(self, x, mel=None, speaker=None, *, train: bool = False) -> Array:
        """Teacher-forced output parameters.

        Args:
          x: audio (B, T) in [-1, 1].
          mel: (B, frames, n_mels) with T = frames * hop_length; required iff n_mels > 0.
          speaker: int speaker ids (B,); required iff num_speakers > 0.
          train: accepted for a uniform training-loop signature; the network has no dropout.

        Returns:
          (B, T, P) float32 parameters of p(x_t | x_<t) for every t.
        """
        del train
        check_inputs(self, x.shape, mel, speaker)
        mel_up, speaker_emb = self.conditioning(mel, speaker)
        out = self.output(self.stack(x, mel_up, speaker_emb)).astype(jnp.float32)
        if self.lpc_order:
            coefficients = jnp.repeat(self.lpc(mel), self.hop_length, axis=1)
            out = self._add_to_means(out, lpc_lib.predict(x, coefficients))
        return out

    def lpc(self, mel: Array) -> Array:
        """The per-frame linear predictors (B, frames, lpc_order) of a mel (pwavenet.audio.lpc);
        a fixed function of the data, not differentiated."""
        return lpc_lib.lpc_from_log_mel(lax.stop_gradient(mel), self.config)

    def _add_to_means(self, out: Array, prediction: Array) -> Array:
        """Adds prediction (B, ...) to the mean(s) in output parameters (B, ..., P)."""
        if self.config.output == "mol":
            k = self.config.num_mixtures
            return out.at[..., k : 2 * k].add(prediction[..., None])
        return out.at[..., 0].add(prediction)

    def conditioning(self, mel, speaker) -> tuple[Array | None, Array | None]:
        """Upsampled mel (B, frames * hop, n_mels) and speaker embedding (B, E); None for each
        conditioning the model does not use."""
        mel_up = self.upsampler(normalized_mel(self.config, mel)) if self.config.n_mels else None
        speaker_emb = self.speaker_embedding(speaker) if self.config.num_speakers else None
        return mel_up, speaker_emb

    def conditioning_kernel(self) -> Array | None:
        """`pwavenet.models.stack.DilatedStack.conditioning_kernel`."""
        return self.stack.conditioning_kernel()

    def step_conditioning(self, mel_t, speaker_emb, kernel=None) -> Array | None:
        """`pwavenet.models.stack.DilatedStack.step_conditioning`."""
        return self.stack.step_conditioning(mel_t, speaker_emb, kernel)

    def step(self, state: TeacherState, t: Array, *, cond_terms=None, lpc_t=None):
        """The output parameters (B, P) for step t, and the state with the caches and the
        history advanced (its `last` is left to the sampler, which draws x_t).

        Args:
          state: the state before step t (`initial_state`, then what `step` returned).
          t: int scalar timestep.
          cond_terms: `step_conditioning` of the upsampled mel at t and the speaker embedding
            (None without conditioning).
          lpc_t: with lpc_order = p > 0, the predictor (B, p) of t's mel frame.
        """
        features, cache = self.stack.step(state.cache, state.last, t, cond_terms=cond_terms)
        out = self.output(features).astype(jnp.float32)
        history = state.history
        if self.lpc_order:
            newest = state.last[:, None].astype(history.dtype)
            history = jnp.concatenate([newest, history[:, :-1]], axis=1)
            prediction = jnp.sum(lpc_t.astype(jnp.float32) * history, axis=-1)
            out = self._add_to_means(out, prediction)
        return out, TeacherState(cache, history, state.last)


def negative_log_likelihood(
    outputs: Array, x: Array, distribution: distributions.Distribution
) -> Array:
    """Mean negative log-likelihood in nats per sample.

    Args:
      outputs: (B, T, P) from `WaveNet.__call__`.
      x: the audio (B, T) the outputs were computed on.
      distribution: `model.distribution`.

    Returns:
      Scalar. For 'mol' the probability of x's 16-bit bin (quantize=True), for 'mulaw' of its
      mu-law class, for 'gaussian'/'logistic' a density: the three scales are not comparable.
    """
    return -jnp.mean(log_likelihood(outputs, x, distribution))


def log_likelihood(outputs: Array, x: Array, distribution: distributions.Distribution) -> Array:
    """log p(x_t | x_<t) per sample, (B, T), on the scale `negative_log_likelihood` averages."""
    if isinstance(distribution, distributions.DiscretizedMixtureOfLogistics):
        return distribution.log_prob(outputs, x, quantize=True)
    return distribution.log_prob(outputs, x)
