"""The WaveNet teacher and its cached autoregressive sampler.

`WaveNet(config)` is built from the `model` section of configs/teacher.py. With x (B, T) in
[-1, 1] it returns (B, T, P) parameters of p(x_t | x_<t, mel, speaker) for every t, in the
layout of the output family `distribution` (pwavenet.models.distributions).

Network, on the input shifted right by one step (x_{-1} = 0) so output t never sees x_t:

  input     1x1 conv from the scalar sample to R = residual_channels
  layers    num_cycles x layers_per_cycle residual layers, dilation 2^i for the i-th layer
            of a cycle, each:
              z      = causal dilated conv (kernel k, R -> G = gate_channels)
                       + 1x1 of the upsampled mel + 1x1 of the speaker embedding
              gated  = tanh(z[:G/2]) * sigmoid(z[G/2:])            (G/2 channels)
              [res | skip] = one fused 1x1, G/2 -> R + S            (S = skip_channels)
              h_next = (h + res) * sqrt(1/2),   skip_sum += skip
  head      relu -> 1x1 (S -> S) -> relu -> 1x1 (S -> P)

gate_channels is the conv's output width and is split in half for the tanh and the sigmoid
(so it must be even). The layers of one cycle are unrolled and the cycles are one `nn.scan`
(parameters stacked on a leading cycle axis), so compile time grows with layers_per_cycle
only. `remat` rematerialises each residual layer in the backward pass.

Receptive field: output t depends on x_{t - R}, ..., x_{t - 1} and nothing else, with
R = `receptive_field` = (k - 1) * num_cycles * (2^layers_per_cycle - 1) + 1 = (k - 1) * sum of
dilations + 1; the "+ 1" is the newest sample x_{t - 1}, which the one-step shift moves into
the window in place of x_t.

Linear prediction (`model.lpc_order` = p > 0, pwavenet.audio.lpc): the mean of the output (each
MoL component's mean, the Gaussian's or logistic's) is sum_j a_j x_{t-1-j} plus the
network's output, with a fixed per-frame predictor a computed from the mel frame of sample t;
the network then models the excitation. Output t then also sees x_{t - p}, ..., x_{t - 1}.

Sampling (`generate`) uses the one-step form of every convolution: each layer keeps a ring
buffer of its last (k - 1) d inputs, and a `lax.scan` over time computes all layers for one
new sample, so the cost per sample does not grow with the receptive field. A step computes all
layers' conditioning terms in one matmul (`WaveNet.step_conditioning`); the loop runs in
blocks of one mel frame, each drawing its steps' noise in one call. A batch is spread over
this process's local devices (`spread_devices`): its streams are independent, so each device
runs the loop for its share with no communication (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pwavenet.audio import lpc as lpc_lib
from pwavenet.models import distributions
from pwavenet.models.layers import CausalConv, ConditioningUpsampler, check_hop_length, gated_tanh
from pwavenet import config_schema

Array = jax.Array

__all__ = [
    "ResidualLayer",
    "WaveNet",
    "generate",
    "log_likelihood",
    "negative_log_likelihood",
]

_OUTPUTS = ("mol", "gaussian", "logistic", "mulaw", "affine")


class ResidualLayer(nn.Module):
    """One gated residual layer; the same parameters serve the sequence and one-step forms.

    Parameters: `dilated_conv` (k, R, G), `mel_proj` (n_mels, G), `speaker_proj` (E, G), both
    projections without bias, and `res_skip` (G/2, R + S) with bias.
    """

    dilation: int
    kernel_size: int
    residual_channels: int
    gate_channels: int
    skip_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        h: Array,
        mel: Array | None,
        speaker: Array | None,
        one_step: bool = False,
        cond: Array | None = None,
    ) -> tuple[Array, Array]:
        """Applies the layer.

        Args:
          h: layer input (B, T, R); with `one_step`, its k taps (B, k, R) ending at the step.
          mel: upsampled mel (B, T, C), or (B, C) with `one_step`; None when unconditioned.
          speaker: speaker embedding (B, E) or None.
          one_step: compute the output for one timestep from its taps.
          cond: with `one_step`, this layer's conditioning term (B, G) computed ahead
            (`WaveNet.step_conditioning`: the two projections below, summed); it replaces
            `mel` and `speaker`.

        Returns:
          (next layer's input, skip): (B, T, R) and (B, T, S), or (B, R) and (B, S).
        """
        conv = CausalConv(
            self.gate_channels,
            self.kernel_size,
            self.dilation,
            dtype=self.dtype,
            name="dilated_conv",
        )
        z = conv(h, one_step=one_step)
        current = h[:, -1] if one_step else h
        if cond is not None:
            z = z + cond.astype(z.dtype)
            mel = speaker = None
        if mel is not None:
            z = z + nn.Dense(self.gate_channels, use_bias=False, dtype=self.dtype, name="mel_proj")(
                mel
            )
        if speaker is not None:
            s = nn.Dense(self.gate_channels, use_bias=False, dtype=self.dtype, name="speaker_proj")(
                speaker
            )
            z = z + (s if one_step else s[:, None])
        filt, gate = jnp.split(z, 2, axis=-1)
        gated = gated_tanh(filt, gate)
        res_skip = nn.Dense(
            self.residual_channels + self.skip_channels, dtype=self.dtype, name="res_skip"
        )(gated)
        res = res_skip[..., : self.residual_channels]
        skip = res_skip[..., self.residual_channels :]
        # sqrt(1/2) keeps the residual stream's variance from growing with depth.
        return ((current + res) * math.sqrt(0.5)).astype(current.dtype), skip


class _Cycle(nn.Module):
    """layers_per_cycle residual layers with dilations 1, 2, ..., 2^(L-1), unrolled.

    Scanned over cycles. The carry is (h, skip_sum); in the one-step form `past` holds each
    layer's k - 1 earlier taps (L, B, k - 1, R) and its conditioning term (L, B, G) or None,
    and the layer inputs of this step (L, B, R) are returned for the caller's ring buffers.
    """

    config: ml_collections.FrozenConfigDict

    @nn.compact
    def __call__(self, carry, past, mel, speaker, one_step: bool):
        c = self.config
        h, skip_sum = carry
        layer_inputs = []
        for i in range(c.layers_per_cycle):
            layer_type = nn.remat(ResidualLayer) if c.remat and not one_step else ResidualLayer
            layer = layer_type(
                dilation=2**i,
                kernel_size=c.kernel_size,
                residual_channels=c.residual_channels,
                gate_channels=c.gate_channels,
                skip_channels=c.skip_channels,
                dtype=jnp.dtype(c.dtype),
                name=f"layer_{i}",
            )
            if one_step:
                layer_inputs.append(h)
                taps, cond = past
                h, skip = layer(
                    jnp.concatenate([taps[i], h[:, None]], axis=1),
                    mel,
                    speaker,
                    True,
                    None if cond is None else cond[i],
                )
            else:
                h, skip = layer(h, mel, speaker)
            # Accumulated in float32: a bfloat16 sum of 30 terms would lose the small ones.
            skip_sum = skip_sum + skip.astype(skip_sum.dtype)
        return (h, skip_sum), (jnp.stack(layer_inputs) if one_step else None)


def freeze_config(config) -> ml_collections.FrozenConfigDict:
    if isinstance(config, ml_collections.FrozenConfigDict):
        return config
    if isinstance(config, ml_collections.ConfigDict):
        return ml_collections.FrozenConfigDict(config)
    return ml_collections.FrozenConfigDict(dict(config))


def validate_config(c: ml_collections.FrozenConfigDict) -> None:
    if c.output not in _OUTPUTS:
        raise ValueError(f"model.output={c.output!r}; expected one of {_OUTPUTS}")
    if c.kernel_size < 2:
        raise ValueError(f"model.kernel_size must be >= 2, got {c.kernel_size}")
    if c.num_cycles < 1 or c.layers_per_cycle < 1:
        raise ValueError(
            f"model.num_cycles and model.layers_per_cycle must be >= 1, got "
            f"{c.num_cycles} and {c.layers_per_cycle}"
        )
    if c.gate_channels < 2 or c.gate_channels % 2:
        raise ValueError(
            f"model.gate_channels must be even (split in half for tanh and sigmoid),"
            f" got {c.gate_channels}"
        )
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
    jnp.dtype(c.dtype)  # raises for an unknown dtype name


class WaveNet(nn.Module):
    """WaveNet over raw audio with optional mel (local) and speaker (global) conditioning.

    Attributes:
      config: the `model` ConfigDict of configs/teacher.py (stored frozen, so the module is
        hashable and can be a static argument of `jax.jit`). An optional `hop_length` field, if
        present, is checked against prod(upsample_strides).

    Parameter subtrees: `upsampler` (n_mels > 0), `speaker_embedding` (num_speakers > 0),
    `input_conv`, `cycles/layer_<i>/...` (stacked over cycles), `skip_out`, `output`.
    """

    config: Any

    def __post_init__(self):
        object.__setattr__(self, "config", freeze_config(self.config))
        validate_config(self.config)
        super().__post_init__()

    # ------------------------------------------------------------------ properties

    @property
    def dilations(self) -> tuple[int, ...]:
        """Dilation of every residual layer, in order."""
        return tuple(2**i for i in range(self.config.layers_per_cycle)) * self.config.num_cycles

    @property
    def receptive_field(self) -> int:
        """Number of past samples each output depends on: output t sees exactly
        x_{t - receptive_field}, ..., x_{t - 1}. Equals (kernel_size - 1) * sum(dilations) + 1,
        or lpc_order if that is larger."""
        network = (self.config.kernel_size - 1) * sum(self.dilations) + 1
        return max(network, config_schema.setting(self.config, "model.lpc_order"))

    @property
    def hop_length(self) -> int:
        """Samples per mel frame: prod(upsample_strides)."""
        return math.prod(self.config.upsample_strides)

    @property
    def num_outputs(self) -> int:
        """P: output parameters per step. 2 for 'affine', the IAF flow's (shift, raw log-scale),
        which is a transform rather than a distribution (pwavenet.models.iaf)."""
        return 2 if self.config.output == "affine" else self.distribution.num_params

    @property
    def distribution(self) -> distributions.Distribution:
        """The output family; P = distribution.num_params."""
        c = self.config
        if c.output == "affine":
            raise ValueError("an 'affine' WaveNet (an IAF flow) has no output distribution")
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

    # ----------------------------------------------------------------------- layers

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        upsampler, speaker_embedding = conditioning_layers(c)
        if upsampler is not None:
            self.upsampler = upsampler
        if speaker_embedding is not None:
            self.speaker_embedding = speaker_embedding
        self.input_conv = CausalConv(c.residual_channels, kernel_size=1, dtype=dtype)
        self.cycles = nn.scan(
            _Cycle,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
            length=c.num_cycles,
            # XLA's cost analysis counts a loop body once; the benchmark unrolls the cycles
            # (model.scan_unroll = num_cycles) to count every layer's FLOPs.
            unroll=c.get("scan_unroll", 1),
        )(config=c)
        self.skip_out = nn.Dense(c.skip_channels, dtype=dtype)
        # The output layer runs in float32 even for bfloat16 models: 16-bit floats cannot place
        # a mean within a 16-bit audio bin.
        # An IAF flow starts close to a fixed affine map: a small output kernel
        # (model.output_init_scale) keeps every flow's shift and scale nearly constant at first.
        init_scale = c.get("output_init_scale")
        kernel_init = (
            nn.initializers.normal(init_scale)
            if init_scale is not None
            else nn.initializers.lecun_normal()
        )
        self.output = nn.Dense(self.num_outputs, dtype=jnp.float32, kernel_init=kernel_init)

    def _head(self, skip_sum: Array) -> Array:
        h = self.skip_out(nn.relu(skip_sum).astype(jnp.dtype(self.config.dtype)))
        return self.output(nn.relu(h)).astype(jnp.float32)

    # ------------------------------------------------------------------ public API

    def __call__(
        self,
        x: Array,
        mel: Array | None = None,
        speaker: Array | None = None,
        *,
        train: bool = False,
    ) -> Array:
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
        out = self.network(x, mel_up, speaker_emb)
        if config_schema.setting(self.config, "model.lpc_order"):
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

    def network(self, x: Array, mel_up: Array | None, speaker_emb: Array | None) -> Array:
        """`__call__` after the conditioning: x (B, T), mel_up (B, T, C) and speaker_emb (B, E)
        as `conditioning` returns them (or computed elsewhere: IAF flows receive the student's
        shared upsampled mel). Returns (B, T, P)."""
        c = self.config
        dtype = jnp.dtype(c.dtype)
        shifted = jnp.pad(x, ((0, 0), (1, 0)))[:, :-1]  # x_{t-1} at position t, x_{-1} = 0
        h = self.input_conv(shifted[..., None].astype(dtype))
        skip_sum = jnp.zeros((*x.shape, c.skip_channels), jnp.float32)
        (_, skip_sum), _ = self.cycles((h, skip_sum), None, mel_up, speaker_emb, False)
        return self._head(skip_sum)

    def conditioning(
        self, mel: Array | None, speaker: Array | None
    ) -> tuple[Array | None, Array | None]:
        """Upsampled mel (B, frames * hop, n_mels) and speaker embedding (B, E); None for each
        conditioning the model does not use."""
        mel_up = self.upsampler(normalized_mel(self.config, mel)) if self.config.n_mels else None
        speaker_emb = self.speaker_embedding(speaker) if self.config.num_speakers else None
        return mel_up, speaker_emb

    def conditioning_kernel(self) -> Array | None:
        """Every layer's conditioning 1x1s stacked, (num_cycles, layers_per_cycle, G, C + E)
        in the compute dtype (the mel's C input channels, then the speaker embedding's E), or
        None without conditioning: the right-hand side of `step_conditioning`'s one matmul.
        It does not depend on the step; a generation loop builds it once, outside the loop,
        and in this layout, the one XLA:CPU's matmul reads it in: in any other, every step
        began with a transposed copy of it (1 MB for the benchmark teacher)."""
        c = self.config
        layers = self.variables["params"]["cycles"]
        kernels = [
            jnp.stack([layers[f"layer_{i}"][name]["kernel"] for i in range(c.layers_per_cycle)])
            for name in ("mel_proj", "speaker_proj")
            if name in layers["layer_0"]  # (an IAF flow's config has neither, but its layers may)
        ]  # each (L, num_cycles, in, G)
        if not kernels:
            return None
        return jnp.concatenate(kernels, axis=2).transpose(1, 0, 3, 2).astype(jnp.dtype(c.dtype))

    def step_conditioning(
        self, mel_t: Array | None, speaker_emb: Array | None, kernel: Array | None = None
    ) -> Array | None:
        """Every layer's conditioning term at some steps, (..., num_cycles, layers_per_cycle,
        B, G) in the compute dtype (None without conditioning): the upsampled mel at the steps
        (..., B, C) and the speaker embedding (B, E) through each layer's own 1x1s, summed, as
        one matmul of [mel_t | speaker_emb] with `kernel` (`conditioning_kernel()` if None).
        At batch 1 these projections are about 15% of a step's multiply-adds; as 2 x 24 small
        matmuls they cost more than that."""
        inputs = []
        if mel_t is not None and speaker_emb is not None:  # the speaker's at every step
            speaker_emb = jnp.broadcast_to(speaker_emb, (*mel_t.shape[:-1], speaker_emb.shape[-1]))
        for x in (mel_t, speaker_emb):
            if x is not None:
                inputs.append(x.astype(jnp.dtype(self.config.dtype)))
        if not inputs:
            return None
        if kernel is None:
            kernel = self.conditioning_kernel()
        return jnp.einsum("...bc,nlgc->...nlbg", jnp.concatenate(inputs, -1), kernel)

    def step(
        self,
        cache: tuple[Array, ...],
        x_prev: Array,
        mel_t: Array | None,
        speaker_emb: Array | None,
        t: Array,
        lpc_t: Array | None = None,
        cond_t: Array | None = None,
        cond_kernel: Array | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """The output for timestep t from the previous sample and the layer caches.

        Args:
          cache: per layer of a cycle, a ring buffer (W_i, num_cycles, B, R) of the layer's past
            inputs, W_i = (k - 1) 2^i: slot s holds the input at the latest time before t that
            is congruent to s mod W_i, or zeros (the sequence form's padding) if there is none.
          x_prev: the sample x_{t-1} (B,) (zeros at t = 0).
          mel_t: upsampled mel at t (B, C), or None.
          speaker_emb: (B, E) or None.
          t: int scalar timestep.
          lpc_t: with lpc_order = p > 0, the predictor (B, p) of t's mel frame; the cache then
            ends with the last p samples (B, p), newest first.
          cond_t: `step_conditioning(mel_t, speaker_emb)` if computed ahead; then mel_t and
            speaker_emb are not used.
          cond_kernel: `conditioning_kernel()` if built ahead (outside a generation loop).

        Returns:
          (B, P) float32 parameters of p(x_t | x_<t) and the updated cache.
        """
        c = self.config
        k = c.kernel_size
        history = None
        if config_schema.setting(c, "model.lpc_order"):
            cache, history = cache[:-1], cache[-1]
            history = jnp.concatenate([x_prev[:, None].astype(history.dtype), history[:, :-1]], 1)
        h = self.input_conv.step(x_prev.reshape(-1, 1, 1))
        past = []
        for i, buffer in enumerate(cache):
            slots = (t - (2**i) * jnp.arange(k - 1, 0, -1)) % buffer.shape[0]  # oldest first
            past.append(jnp.take(buffer, slots, axis=0))  # (k - 1, cycles, B, R)
        past = jnp.stack(past).transpose(2, 0, 3, 1, 4)  # (cycles, L, B, k - 1, R)
        skip_sum = jnp.zeros((x_prev.shape[0], c.skip_channels), jnp.float32)
        if cond_t is None:
            cond_t = self.step_conditioning(mel_t, speaker_emb, cond_kernel)
        (_, skip_sum), inputs = self.cycles((h, skip_sum), (past, cond_t), None, None, True)
        # inputs: (cycles, L, B, R). Writing after reading lets a buffer of (k - 1) d slots
        # serve: the slot overwritten held t - (k - 1) d, just read for the last time.
        cache = tuple(
            lax.dynamic_update_index_in_dim(
                buffer, inputs[:, i].astype(buffer.dtype), t % buffer.shape[0], axis=0
            )
            for i, buffer in enumerate(cache)
        )
        out = self._head(skip_sum)
        if history is not None:
            prediction = jnp.sum(lpc_t.astype(jnp.float32) * history, axis=-1)
            out, cache = self._add_to_means(out, prediction), cache + (history,)
        return out, cache


def conditioning_layers(c) -> tuple[nn.Module | None, nn.Module | None]:
    """(mel upsampler, speaker embedding) of a model config, None for each it does not use.

    Shared by the WaveNet and the IAF student, so their `upsampler` subtrees have one layout
    (the distillation job copies the teacher's into the student)."""
    dtype = jnp.dtype(c.dtype)
    upsampler = (
        ConditioningUpsampler(
            strides=tuple(c.upsample_strides),
            kernel_multiple=c.upsample_kernel_multiple,
            dtype=dtype,
        )
        if c.n_mels
        else None
    )
    speaker_embedding = (
        nn.Embed(c.num_speakers, c.speaker_embedding_dim, dtype=dtype) if c.num_speakers else None
    )
    return upsampler, speaker_embedding


def normalized_mel(c, mel: Array) -> Array:
    """The conditioning network's input: (mel - model.mel_mean) / model.mel_scale per band when
    the config holds the training split's statistics (mel.normalization='meanvar'), else the
    log-mel itself. Only the network sees it; linear prediction and pitch read the log-mel."""
    mean, scale = c.get("mel_mean", ()), c.get("mel_scale", ())
    if not len(mean):
        return mel
    if len(mean) != mel.shape[-1] or len(scale) != len(mean):
        raise ValueError(
            f"model.mel_mean and model.mel_scale hold {len(mean)} and {len(scale)} values for a "
            f"mel of {mel.shape[-1]} bands; they must hold one per band."
        )
    return (mel - jnp.asarray(mean, mel.dtype)) / jnp.asarray(scale, mel.dtype)


def check_inputs(model: WaveNet, x_shape: tuple[int, ...] | None, mel, speaker) -> int | None:
    """Checks the conditioning against the config; returns the batch size (None if unknown).

    x_shape (B, T) or None (generation, where T follows from the mel).
    """
    c = model.config
    batch = None
    if x_shape is not None:
        if len(x_shape) != 2:
            raise ValueError(f"WaveNet expects audio of shape (batch, time), got {tuple(x_shape)}")
        batch = x_shape[0]
    if c.n_mels:
        if mel is None:
            raise ValueError(
                f"this WaveNet is conditioned on mel spectrograms (n_mels={c.n_mels}): "
                f"pass mel of shape (batch, frames, {c.n_mels})"
            )
        if mel.ndim != 3 or mel.shape[-1] != c.n_mels:
            raise ValueError(
                f"mel must have shape (batch, frames, n_mels={c.n_mels}), got {mel.shape}"
            )
        if x_shape is not None and x_shape[1] != mel.shape[1] * model.hop_length:
            raise ValueError(
                f"audio of shape {tuple(x_shape)} has {x_shape[1]} samples, but mel of shape "
                f"{tuple(mel.shape)} has {mel.shape[1]} frames x hop {model.hop_length} = "
                f"{mel.shape[1] * model.hop_length} samples; they must be equal"
            )
        if batch is not None and mel.shape[0] != batch:
            raise ValueError(
                f"mel of shape {mel.shape} and audio of shape {tuple(x_shape)} differ in batch size"
            )
        batch = mel.shape[0]
    elif mel is not None:
        raise ValueError(
            f"this WaveNet has no local conditioning (n_mels=0) but a mel of shape "
            f"{mel.shape} was given"
        )
    if c.num_speakers:
        if speaker is None:
            raise ValueError(
                f"this WaveNet is conditioned on speakers (num_speakers="
                f"{c.num_speakers}): pass speaker ids of shape (batch,)"
            )
        if speaker.ndim != 1 or (batch is not None and speaker.shape[0] != batch):
            raise ValueError(
                f"speaker must have shape ({batch if batch is not None else 'batch'},),"
                f" got {speaker.shape}"
            )
        if not jnp.issubdtype(speaker.dtype, jnp.integer):
            raise ValueError(f"speaker ids must be integers, got dtype {speaker.dtype}")
        batch = speaker.shape[0]
    elif speaker is not None:
        raise ValueError(
            f"this WaveNet has no speaker conditioning (num_speakers=0) but speaker "
            f"ids of shape {speaker.shape} were given"
        )
    return batch


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


def zero_cache(config, batch: int) -> tuple[Array, ...]:
    """Per layer of a cycle: (W_i, num_cycles, batch, R) zeros, W_i = (k - 1) 2^i; with
    lpc_order = p > 0, then the sample history (batch, p)."""
    dtype = jnp.dtype(config.dtype)
    order = config_schema.setting(config, "model.lpc_order")
    history = (jnp.zeros((batch, order), jnp.float32),) if order else ()
    layers = tuple(
        jnp.zeros(
            ((config.kernel_size - 1) * 2**i, config.num_cycles, batch, config.residual_channels),
            dtype,
        )
        for i in range(config.layers_per_cycle)
    )
    return layers + history


def generation_carry(model: WaveNet, batch: int) -> tuple[tuple[Array, ...], Array]:
    """The state cached generation starts from: (the layer caches (and sample history) of
    `WaveNet.step`, all zeros, and x_{-1} = 0 (batch,)). A generation cut into pieces
    (pwavenet.vocoder) carries it from one piece to the next."""
    return zero_cache(model.config, batch), jnp.zeros((batch,), jnp.float32)


def as_variables(params) -> dict:
    """Accepts a parameter tree or a full variables dict {'params': ...}."""
    # No submodule is named 'params', so a tree whose only key is 'params' is a variables dict.
    if isinstance(params, Mapping) and set(params.keys()) == {"params"}:
        return params
    return {"params": params}


# Cached generation computes a block's conditioning terms ahead when they take at most this.
AHEAD_BYTES = 4 * 2**20


def _unrolled_cycles(model: WaveNet) -> WaveNet:
    """The model with its cycle scan unrolled (same parameters): inside a time loop, a loop
    over 4 cycles cost about a fifth of a generation step at batch 1."""
    config = model.config.to_dict()
    config["scan_unroll"] = model.config.num_cycles
    return WaveNet(config)


def loop_invariant(variables) -> Callable[[], dict]:
    """`variables` for use inside a loop body (a generation or inversion loop over time): call
    the result inside the body.

    A model with stacked cycle parameters slices one cycle's kernels out of each stacked
    array at every step, and XLA does not hoist these slices out of the loop: on a CPU, each
    step of the benchmark teacher copied all its kernels (3.1 MB) before using them. Here
    every `cycles` subtree is split into per-cycle arrays once, outside the loop, and stacked
    again inside it, where XLA folds each slice of the stack back to the per-cycle array it
    came from."""

    def split(tree):
        if not isinstance(tree, Mapping):
            return tree
        return {k: _unstack(v) if k == "cycles" else split(v) for k, v in tree.items()}

    def stack(tree):
        if not isinstance(tree, Mapping):
            return tree
        return {
            k: jax.tree.map(lambda *a: jnp.stack(a), *v) if k == "cycles" else stack(v)
            for k, v in tree.items()
        }

    split_variables = split(variables)
    return lambda: stack(split_variables)


def _unstack(tree) -> tuple:
    """A tree of arrays stacked on a leading axis as a tuple of trees, one per index."""
    length = jax.tree.leaves(tree)[0].shape[0]
    return tuple(jax.tree.map(lambda a, i=i: a[i], tree) for i in range(length))


def spread_devices(batch: int, *inputs) -> Mesh | None:
    """The mesh ('batch' axis) of local devices a generation of `batch` streams spreads over:
    the most of `jax.local_devices()` that divide the batch, or None (one device: run where
    the inputs are) when that is one, when any input is a tracer (generation traced inside
    a caller's `jit`, which places the computation itself) or when any is an array spanning
    other processes' devices."""
    for a in jax.tree.leaves(inputs):
        if isinstance(a, jax.core.Tracer) or (
            isinstance(a, jax.Array) and not a.is_fully_addressable
        ):
            return None
    devices = jax.local_devices()
    count = max(n for n in range(1, len(devices) + 1) if batch % n == 0)
    return Mesh(np.asarray(devices[:count]), ("batch",)) if count > 1 else None


def _place(mesh: Mesh | None, x, batch_axis: int | None):
    """x sharded along `batch_axis` (replicated if None) over `mesh`, inside or outside a jit;
    x itself without a mesh."""
    if mesh is None or x is None:
        return x
    spec = PartitionSpec() if batch_axis is None else PartitionSpec(*[None] * batch_axis, "batch")
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), x)


def scan_block(
    model: WaveNet,
    step_variables,
    carry,
    t,
    mel_steps,
    speaker_emb,
    lpc_f,
    cond,
    cond_kernel,
    noise,
):
    """Cached generation of one block of steps: ((cache, last sample), samples (steps, B)).

    `carry` is (the layers' cache, the previous sample (B,)); t (steps,) are the global step
    indices; mel_steps (steps, B, C) the upsampled mel (or None); lpc_f the block's linear
    predictor (B, p) (or None); cond the block's precomputed conditioning terms
    (`WaveNet.step_conditioning`, or None to compute them per step); noise the block's
    `distribution.noise`, steps first. `step_variables` is `loop_invariant(variables)`. Shared
    by `generate` and the vocoder's pieces (pwavenet.vocoder), so both sample alike.
    """
    distribution = model.distribution

    def one_sample(carry, inputs):
        cache, x_prev = carry
        t_i, mel_t, cond_t, noise_t = inputs
        params_t, cache = model.apply(
            step_variables(),
            cache,
            x_prev,
            mel_t,
            speaker_emb,
            t_i,
            lpc_f,
            cond_t,
            cond_kernel,
            method=WaveNet.step,
        )
        # Bounded as the audio it was trained on: an unbounded draw fed back through a
        # high-order predictor can run away.
        x_t = jnp.clip(distribution.sample_from_noise(params_t, noise_t), -1.0, 1.0)
        x_t = x_t.astype(jnp.float32)
        return (cache, x_t), x_t

    return lax.scan(one_sample, carry, (t, mel_steps, cond, noise))


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "batch", "mesh"))
def _sample(
    model: WaveNet,
    variables,
    rng,
    mel,
    speaker,
    *,
    num_samples: int,
    batch: int,
    mesh: Mesh | None = None,
):
    """Two nested scans: over blocks of `block` steps (a mel frame, or 256 steps without a
    mel), which draw the block's noise in one call, and over the block's steps, which run the
    cached network. When the block's conditioning terms (`WaveNet.step_conditioning`) fit
    in cache (AHEAD_BYTES), the block computes them for all its steps in one matmul, and a
    step reads its terms instead of all the projection kernels: at batch 1, 12 KB instead
    of 1 MB per step for the benchmark teacher. At batch 16 the terms would take 50 MB a
    block, more than the kernels, and each step computes its own. With a `mesh`, the
    streams' state and noise are split along the batch over it (`spread_devices`)."""
    model = _unrolled_cycles(model)
    distribution = model.distribution
    mel_up, speaker_emb = model.apply(variables, mel, speaker, method=WaveNet.conditioning)
    block = model.hop_length if mel is not None else min(num_samples, 256)
    c = model.config
    ahead_bytes = (
        block * batch * len(model.dilations) * c.gate_channels * jnp.dtype(c.dtype).itemsize
    )
    ahead = mel is not None and ahead_bytes <= AHEAD_BYTES
    blocks = -(-num_samples // block)
    # The steps past num_samples (without a mel) are computed and dropped: they only follow.
    steps = jnp.arange(blocks * block, dtype=jnp.int32).reshape(blocks, block)
    mel_blocks = None
    if mel_up is not None:  # (blocks, block, B, C)
        mel_blocks = jnp.swapaxes(mel_up, 0, 1).reshape(blocks, block, batch, -1)
        mel_blocks = _place(mesh, mel_blocks, 2)
    # Per-frame linear predictors (frames, B, p): one per block.
    lpc_frames = (
        jnp.swapaxes(model.apply(variables, mel, method=WaveNet.lpc), 0, 1)
        if config_schema.setting(model.config, "model.lpc_order")
        else None
    )

    cond_kernel = model.apply(variables, method=WaveNet.conditioning_kernel)
    step_variables = loop_invariant(variables)

    def one_block(carry, inputs):
        t_block, mel_block, lpc_f = inputs
        cond = None
        if ahead:
            cond = model.apply(
                variables, mel_block, speaker_emb, cond_kernel, method=WaveNet.step_conditioning
            )
        noise = distribution.noise(jax.random.fold_in(rng, t_block[0]), (block, batch))
        noise = _place(mesh, noise, 1)

        return scan_block(
            model,
            step_variables,
            carry,
            t_block,
            mel_block,
            speaker_emb,
            lpc_f,
            cond,
            cond_kernel,
            noise,
        )

    cache = zero_cache(model.config, batch)
    carry = (
        tuple(_place(mesh, a, 2 if a.ndim == 4 else 0) for a in cache),  # rings, then history
        _place(mesh, jnp.zeros((batch,), jnp.float32), 0),
    )
    _, samples = lax.scan(one_block, carry, (steps, mel_blocks, lpc_frames))
    return samples.reshape(blocks * block, batch)[:num_samples].T


def generate(
    model: WaveNet,
    params,
    rng: Array,
    *,
    mel: Array | None = None,
    speaker: Array | None = None,
    num_samples: int | None = None,
) -> Array:
    """Samples audio autoregressively with the cached one-step network.

    A `lax.scan` over time, in blocks of one mel frame (256 steps without a mel); each step
    runs every layer once for the new sample (per-sample cost independent of the receptive
    field), draws x_t from the output distribution with noise drawn for the block from
    `fold_in(rng, first step of the block)`, and feeds it back. It samples exactly the
    distribution that teacher forcing scores: `model.apply(variables, samples, mel, speaker)`
    gives the parameters each step used.

    Args:
      model: a WaveNet (static: a new model compiles anew).
      params: its parameter tree, or a variables dict {'params': ...}.
      rng: PRNG key.
      mel: (B, frames, n_mels), required iff n_mels > 0; then T = frames * hop_length.
      speaker: int (B,), required iff num_speakers > 0.
      num_samples: T; required without a mel, and must equal frames * hop_length with one.

    Returns:
      (B, T) float32 samples in [-1, 1] (Gaussian and logistic draws are clipped to it before
      they are fed back); B = 1 when neither mel nor speaker gives a batch. Called
      outside a jit, the batch's streams run spread over the local devices (`spread_devices`)
      and the samples come back sharded along the batch over them; each stream draws the
      same noise as on one device.
    """
    batch = check_inputs(model, None, mel, speaker)
    if mel is not None:
        length = mel.shape[1] * model.hop_length
        if num_samples is not None and num_samples != length:
            raise ValueError(
                f"num_samples={num_samples} but mel of shape {mel.shape} gives "
                f"{mel.shape[1]} frames x hop {model.hop_length} = {length} samples"
            )
        num_samples = length
    if num_samples is None or num_samples < 1:
        raise ValueError(f"unconditional generation needs num_samples >= 1, got {num_samples}")
    if batch is None:
        batch = 1
    variables = as_variables(params)
    mesh = spread_devices(batch, variables, rng, mel, speaker)
    return _sample(
        model,
        _place(mesh, variables, None),
        _place(mesh, rng, None),
        _place(mesh, mel, 0),
        _place(mesh, speaker, 0),
        num_samples=int(num_samples),
        batch=int(batch),
        mesh=mesh,
    )
