"""The dilated causal stack: the network core of the WaveNet teacher and of each IAF flow.

`DilatedStack(config)` maps a signal x (B, T) to features (B, T, S) where features t depend on
x_{t - R}, ..., x_{t - 1} only (the input is shifted right by one step, x_{-1} = 0), and on the
conditioning at t. Its owner adds a head: the teacher a 1x1 to its output distribution's
parameters (pwavenet.models.wavenet), a flow a 1x1 to its shift and log-scale
(pwavenet.models.iaf).

  input     1x1 conv from the scalar sample to R = residual_channels
  layers    num_cycles x layers_per_cycle residual layers, dilation 2^i for the i-th layer
            of a cycle, each:
              z      = causal dilated conv (kernel k, R -> G = gate_channels)
                       + 1x1 of the conditioning + 1x1 of the speaker embedding
              gated  = tanh(z[:G/2]) * sigmoid(z[G/2:])            (G/2 channels)
              [res | skip] = one fused 1x1, G/2 -> R + S            (S = skip_channels)
              h_next = (h + res) * sqrt(1/2),   skip_sum += skip
  features  relu -> 1x1 (S -> S) -> relu

gate_channels is the conv's output width, split in half for the tanh and the sigmoid. The
layers of one cycle are unrolled and the cycles are one `nn.scan` (parameters stacked on a
leading cycle axis), so compile time grows with layers_per_cycle only. `remat` rematerialises
each residual layer in the backward pass.

One-step form (`step`): each layer keeps a ring buffer of its last (k - 1) d inputs
(`StackCache`), so the cost of a step does not grow with the receptive field. All layers'
conditioning terms are one matmul (`step_conditioning`) against a kernel built once outside a
time loop (`conditioning_kernel`).

The owner shares its scope with the stack (`nn.share_scope`): the parameters `input_conv`,
`cycles/layer_<i>/...` and `skip_out` sit at the owner's top level, beside its head.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pwavenet.models.layers import CausalConv, gated_tanh

Array = jax.Array

__all__ = ["DilatedStack", "ResidualLayer", "StackCache", "check_stack_config", "receptive_field"]


class ResidualLayer(nn.Module):
    """One gated residual layer; the same parameters serve the sequence and one-step forms.

    Parameters: `dilated_conv` (k, R, G), `mel_proj` (C, G), `speaker_proj` (E, G), both
    projections without bias, and `res_skip` (G/2, R + S) with bias.
    """

    dilation: int
    kernel_size: int
    residual_channels: int
    gate_channels: int
    skip_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, mel=None, speaker=None, *, one_step=False, cond=None):
        """Applies the layer.

        Args:
          h: layer input (B, T, R); with `one_step`, its k taps (B, k, R) ending at the step.
          mel: conditioning (B, T, C), or (B, C) with `one_step`; None when unconditioned.
          speaker: speaker embedding (B, E) or None.
          one_step: compute the output for one timestep from its taps.
          cond: with `one_step`, this layer's conditioning term (B, G) computed ahead
            (`DilatedStack.step_conditioning`); it replaces `mel` and `speaker`.

        Returns:
          (next layer's input, skip): (B, T, R) and (B, T, S), or (B, R) and (B, S).
        """
        conv = CausalConv(
            self.gate_channels, self.kernel_size, self.dilation, dtype=self.dtype,
            name="dilated_conv",
        )
        z = conv(h, one_step=one_step)
        current = h[:, -1] if one_step else h
        if cond is not None:
            z = z + cond.astype(z.dtype)
            mel = speaker = None
        if mel is not None:
            proj = nn.Dense(self.gate_channels, use_bias=False, dtype=self.dtype, name="mel_proj")
            z = z + proj(mel)
        if speaker is not None:
            proj = nn.Dense(
                self.gate_channels, use_bias=False, dtype=self.dtype, name="speaker_proj"
            )
            s = proj(speaker)
            z = z + (s if one_step else s[:, None])
        filt, gate = jnp.split(z, 2, axis=-1)
        res_skip = nn.Dense(
            self.residual_channels + self.skip_channels, dtype=self.dtype, name="res_skip"
        )(gated_tanh(filt, gate))
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

    config: Any

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
                window = jnp.concatenate([taps[i], h[:, None]], axis=1)
                h, skip = layer(window, one_step=True, cond=None if cond is None else cond[i])
            else:
                h, skip = layer(h, mel, speaker)
            # Accumulated in float32: a bfloat16 sum of 30 terms would lose the small ones.
            skip_sum = skip_sum + skip.astype(skip_sum.dtype)
        return (h, skip_sum), (jnp.stack(layer_inputs) if one_step else None)


class StackCache(NamedTuple):
    """The one-step form's state: per layer of a cycle, a ring buffer (W_i, num_cycles, B, R)
    of the layer's past inputs, W_i = (k - 1) 2^i. Slot s holds the input at the latest time
    before t congruent to s mod W_i, or zeros (the sequence form's padding) if there is none."""

    rings: tuple[Array, ...]

    @classmethod
    def zeros(cls, config, batch: int) -> StackCache:
        dtype = jnp.dtype(config.dtype)
        return cls(
            tuple(
                jnp.zeros(
                    (
                        (config.kernel_size - 1) * 2**i,
                        config.num_cycles,
                        batch,
                        config.residual_channels,
                    ),
                    dtype,
                )
                for i in range(config.layers_per_cycle)
            )
        )


def receptive_field(config) -> int:
    """R: the stack's features at t depend on x_{t - R}, ..., x_{t - 1}: (k - 1) times the sum
    of the dilations, + 1 for the newest sample, which the one-step shift moves in."""
    dilations = sum(2**i for i in range(config.layers_per_cycle)) * config.num_cycles
    return (config.kernel_size - 1) * dilations + 1


def check_stack_config(c, where: str = "model") -> None:
    """Refuses stack settings no network can have, naming the config field."""
    if c.kernel_size < 2:
        raise ValueError(f"{where}.kernel_size must be >= 2, got {c.kernel_size}")
    if c.num_cycles < 1 or c.layers_per_cycle < 1:
        raise ValueError(
            f"{where}.num_cycles and {where}.layers_per_cycle must be >= 1, got "
            f"{c.num_cycles} and {c.layers_per_cycle}"
        )
    if c.gate_channels < 2 or c.gate_channels % 2:
        raise ValueError(
            f"{where}.gate_channels must be even (split in half for tanh and sigmoid),"
            f" got {c.gate_channels}"
        )
    jnp.dtype(c.dtype)  # raises for an unknown dtype name


class DilatedStack(nn.Module):
    """The causal stack; see the module docstring. `config` holds kernel_size, num_cycles,
    layers_per_cycle, residual/gate/skip_channels, dtype, remat and optionally scan_unroll."""

    config: Any

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
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

    def _features(self, skip_sum: Array) -> Array:
        h = self.skip_out(nn.relu(skip_sum).astype(jnp.dtype(self.config.dtype)))
        return nn.relu(h)

    def __call__(self, x: Array, cond: Array | None, speaker_emb: Array | None) -> Array:
        """Features (B, T, S) of x (B, T), conditioning cond (B, T, C) and speaker_emb (B, E)."""
        c = self.config
        shifted = jnp.pad(x, ((0, 0), (1, 0)))[:, :-1]  # x_{t-1} at position t, x_{-1} = 0
        h = self.input_conv(shifted[..., None].astype(jnp.dtype(c.dtype)))
        skip_sum = jnp.zeros((*x.shape, c.skip_channels), jnp.float32)
        (_, skip_sum), _ = self.cycles((h, skip_sum), None, cond, speaker_emb, False)
        return self._features(skip_sum)

    def conditioning_kernel(self) -> Array | None:
        """Every layer's conditioning 1x1s stacked, (num_cycles, layers_per_cycle, G, C + E)
        in the compute dtype (C conditioning channels, then the speaker embedding's E), or
        None without conditioning: the right-hand side of `step_conditioning`'s one matmul.
        A generation loop builds it once, outside the loop, and in this layout, the one
        XLA:CPU's matmul reads it in: in any other, every step began with a transposed copy
        of it (1 MB for the benchmark teacher)."""
        c = self.config
        layers = self.variables["params"]["cycles"]
        kernels = [
            jnp.stack([layers[f"layer_{i}"][name]["kernel"] for i in range(c.layers_per_cycle)])
            for name in ("mel_proj", "speaker_proj")
            if name in layers["layer_0"]
        ]  # each (L, num_cycles, in, G)
        if not kernels:
            return None
        return jnp.concatenate(kernels, axis=2).transpose(1, 0, 3, 2).astype(jnp.dtype(c.dtype))

    def step_conditioning(self, cond_t, speaker_emb, kernel=None) -> Array | None:
        """Every layer's conditioning term at some steps, (..., num_cycles, layers_per_cycle,
        B, G) in the compute dtype (None without conditioning): the conditioning at the steps
        (..., B, C) and the speaker embedding (B, E) through each layer's own 1x1s, summed, as
        one matmul with `kernel` (`conditioning_kernel()` if None). At batch 1 these
        projections are about 15% of a step's multiply-adds; as 2 x 24 small matmuls they
        cost more than that."""
        inputs = []
        if cond_t is not None and speaker_emb is not None:  # the speaker's at every step
            speaker_emb = jnp.broadcast_to(speaker_emb, (*cond_t.shape[:-1], speaker_emb.shape[-1]))
        for x in (cond_t, speaker_emb):
            if x is not None:
                inputs.append(x.astype(jnp.dtype(self.config.dtype)))
        if not inputs:
            return None
        if kernel is None:
            kernel = self.conditioning_kernel()
        return jnp.einsum("...bc,nlgc->...nlbg", jnp.concatenate(inputs, -1), kernel)

    def step(self, cache: StackCache, x_prev: Array, t: Array, *, cond_terms=None):
        """The features (B, S) at step t from x_{t-1} (B,) and the cache; `cond_terms` is
        `step_conditioning` at t (or None without conditioning). Returns (features, cache)."""
        c = self.config
        k = c.kernel_size
        h = self.input_conv.step(x_prev.reshape(-1, 1, 1))
        past = []
        for i, ring in enumerate(cache.rings):
            slots = (t - (2**i) * jnp.arange(k - 1, 0, -1)) % ring.shape[0]  # oldest first
            past.append(jnp.take(ring, slots, axis=0))  # (k - 1, cycles, B, R)
        past = jnp.stack(past).transpose(2, 0, 3, 1, 4)  # (cycles, L, B, k - 1, R)
        skip_sum = jnp.zeros((x_prev.shape[0], c.skip_channels), jnp.float32)
        (_, skip_sum), inputs = self.cycles((h, skip_sum), (past, cond_terms), None, None, True)
        # inputs: (cycles, L, B, R). Writing after reading lets a ring of (k - 1) d slots
        # serve: the slot overwritten held t - (k - 1) d, just read for the last time.
        rings = tuple(
            lax.dynamic_update_index_in_dim(
                ring, inputs[:, i].astype(ring.dtype), t % ring.shape[0], axis=0
            )
            for i, ring in enumerate(cache.rings)
        )
        return self._features(skip_sum), StackCache(rings)
