"""Building blocks shared by the WaveNet teacher and the IAF student.

`CausalConv`: a causal dilated 1-D convolution with a one-step form for cached generation.
  Sequence form: (batch, time, in) -> (batch, time, features); output t is a function of the
  inputs at t - (k - 1) d, ..., t - d, t only (zeros before the start).
  One-step form (`step`): the k taps (batch, k, in) -> (batch, features), one matmul with the
  same kernel, so a sampler that keeps the past layer inputs (a ring buffer) produces output t
  at a cost independent of the dilation.

  The one-step form is one matmul over the k taps. The sequence form's arithmetic is the same
  product with the k shifted views of the left-padded input stacked along channels (`_taps`),
  which is how it runs on accelerators (matmuls are what they do best). On a CPU it runs as
  XLA's dilated convolution instead, which skips materializing the stacked views. Its
  derivatives stay matmuls over the taps (a custom JVP, so forward and reverse mode both
  work): XLA:CPU's own convolution gradients cost more than the taps' product, most of all
  inside `lax.scan`, which is how the WaveNet stacks its cycles. docs/benchmarks.md has the
  measurements.

`gated_tanh(filt, gate)`: WaveNet's gated activation tanh(filt) * sigmoid(gate), with a JVP
  written in two coefficients, so that training keeps two of the gate's arrays per layer for
  its backward pass where autodiff of the expression keeps four (see its docstring).

`ConditioningUpsampler`: (batch, frames, n_mels) -> (batch, frames * hop, features), one
  transposed convolution along time per stride (kernel `kernel_multiple * stride`, cropped so
  each stage multiplies the length exactly by its stride), each followed by a leaky ReLU. Its
  own module with its own parameter subtree, so the student can share the teacher's.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

__all__ = ["CausalConv", "ConditioningUpsampler", "check_hop_length", "gated_tanh"]


class CausalConv(nn.Module):
    """Causal dilated convolution over time.

    Attributes:
      features: output channels F.
      kernel_size: taps k (>= 1).
      dilation: spacing d between taps (>= 1).
      use_bias: add a learned bias.
      dtype: compute dtype; parameters are `param_dtype` (float32).

    Parameters: `kernel` (k, in, F), tap j multiplying the input at t - (k - 1 - j) d (so the
    last tap is the current input), and `bias` (F,).
    """

    features: int
    kernel_size: int
    dilation: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    def __post_init__(self):
        if self.kernel_size < 1 or self.dilation < 1:
            raise ValueError(
                f"CausalConv needs kernel_size >= 1 and dilation >= 1, got "
                f"kernel_size={self.kernel_size}, dilation={self.dilation}"
            )
        super().__post_init__()

    @property
    def context(self) -> int:
        """Past inputs an output sees besides the current one: (k - 1) d."""
        return (self.kernel_size - 1) * self.dilation

    @nn.compact
    def __call__(self, x: Array, *, one_step: bool = False) -> Array:
        """Causal convolution.

        Args:
          x: (batch, time, in); with `one_step`, the k taps (batch, k, in), oldest first (the
            inputs at t - (k - 1) d, ..., t - d, t).
          one_step: compute the single output for the last tap's timestep.

        Returns:
          (batch, time, F); with `one_step`, (batch, F).
        """
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, x.shape[-1], self.features), self.param_dtype
        )
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if one_step:
            if x.ndim != 3 or x.shape[1] != k:
                raise ValueError(
                    f"CausalConv.step expects taps of shape (batch, {k}, channels), got {x.shape}"
                )
            # The k taps side by side on the channel axis meet the kernel in one matmul.
            y = x.reshape(x.shape[0], -1) @ kernel.reshape(-1, self.features)
        else:
            if x.ndim != 3:
                raise ValueError(f"CausalConv expects (batch, time, channels), got {x.shape}")
            if jax.default_backend() == "cpu":
                y = _dilated_conv(x, kernel, self.dilation)
            else:
                y = _taps(x, k, self.dilation) @ kernel.reshape(-1, self.features)
        if self.use_bias:
            y = y + self.param(
                "bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype
            ).astype(self.dtype)
        return y

    def step(self, window: Array) -> Array:
        """One output timestep from its inputs.

        Args:
          window: either the k taps (batch, k, in), oldest first, or the last (k - 1) d + 1
            inputs (batch, (k - 1) d + 1, in) ending at the current step (every d-th is used).

        Returns:
          (batch, F), equal to the sequence form's output at the window's last timestep.
        """
        if window.ndim == 3 and window.shape[1] == self.context + 1:
            window = window[:, :: self.dilation]
        return self(window, one_step=True)


def _taps(x: Array, k: int, dilation: int) -> Array:
    """The k dilated views of the left-padded x (batch, time, in) stacked on the channel
    axis, oldest first: (batch, time, k * in)."""
    length = x.shape[1]
    padded = jnp.pad(x, ((0, 0), ((k - 1) * dilation, 0), (0, 0)))
    return jnp.concatenate(
        [padded[:, j * dilation : j * dilation + length] for j in range(k)], axis=-1
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _dilated_conv(x: Array, kernel: Array, dilation: int) -> Array:
    """The causal dilated convolution of x (batch, time, in) with kernel (k, in, F) by XLA's
    convolution; equal to `_taps(x, k, dilation) @ kernel.reshape(-1, F)`."""
    k = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=[((k - 1) * dilation, 0)],
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
    )


def _dilated_conv_jvp(dilation, primals, tangents):
    # Bilinear: the tangent is the convolution of each tangent with the other primal, both
    # written as products over the taps, so reverse mode transposes them into the taps'
    # matmuls. The kernel's term is rematerialized: reverse mode keeps x and restacks its
    # taps in the backward pass rather than holding k times x's memory from the forward.
    # Zero tangents stay symbolic: a frozen network (distillation's teacher) differentiated
    # in its input only would otherwise multiply its stacked taps by a zero kernel tangent.
    x, kernel = primals
    dx, dkernel = tangents
    k, _, features = kernel.shape
    y = _dilated_conv(x, kernel, dilation)
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        terms.append(_taps(dx, k, dilation) @ kernel.reshape(-1, features))
    if not isinstance(dkernel, jax.custom_derivatives.SymbolicZero):
        through_kernel = jax.checkpoint(
            lambda x, dk: _taps(x, k, dilation) @ dk.reshape(-1, features)
        )
        terms.append(through_kernel(x, dkernel))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_dilated_conv.defjvp(_dilated_conv_jvp, symbolic_zeros=True)


@jax.custom_jvp
def gated_tanh(filt: Array, gate: Array) -> Array:
    """tanh(filt) * sigmoid(gate), elementwise.

    The derivatives are those of the expression, written as two coefficients:
    d out = d filt * (1 - t^2) s + d gate * t s (1 - s), with t = tanh(filt) and
    s = sigmoid(gate). Linearized for reverse mode, that leaves the two coefficient arrays
    for the backward pass. Autodiff of the expression itself leaves four (1 - t^2, s (1 - s),
    and t and s for the product), so a WaveNet training step stored six arrays of the gate's
    shape per layer (with the layer's input and its gated output) between its forward and
    backward passes, and now stores four: less memory, and less memory traffic where a step
    waits on memory (docs/benchmarks.md has the measurements).
    """
    return jnp.tanh(filt) * jax.nn.sigmoid(gate)


@gated_tanh.defjvp
def _gated_tanh_jvp(primals, tangents):
    filt, gate = primals
    d_filt, d_gate = tangents
    t = jnp.tanh(filt)
    s = jax.nn.sigmoid(gate)
    out = t * s
    return out, d_filt * ((1 - t * t) * s) + d_gate * (out * (1 - s))


def check_hop_length(strides: Sequence[int], hop_length: int) -> None:
    """Raises ValueError unless prod(strides) == hop_length."""
    product = math.prod(strides)
    if product != hop_length:
        raise ValueError(
            f"upsample strides {tuple(strides)} multiply to {product}, but the mel "
            f"hop length is {hop_length}; their product must equal the hop."
        )


def _interpolation_init(kernel_multiple: int):
    """Starts each stage as a box interpolation when channels are kept: every output sample
    is the mean of the `kernel_multiple` frames overlapping it, so conditioning reaches the
    network from the first step. Other shapes get lecun normal."""
    fallback = nn.initializers.lecun_normal()

    def init(rng, shape, dtype=jnp.float32):
        taps, c_in, c_out = shape
        if c_in != c_out:
            return fallback(rng, shape, dtype)
        return jnp.broadcast_to(jnp.eye(c_in, dtype=dtype) / kernel_multiple, shape)

    return init


class _TimeTransposedConv(nn.Module):
    """Transposed convolution along time: (B, F, C) -> (B, F * stride, features).

    Each input frame writes a kernel of `kernel_multiple * stride` samples starting at
    frame * stride; the overlapping writes are summed (overlap-add), and the
    (kernel_multiple - 1) * stride extra samples of the full output are cropped half on each
    side ('SAME'-like), so frame f is centred on the block [f * stride, (f + 1) * stride).
    Written as one matmul plus overlap-add rather than a convolution over a zero-stuffed input,
    which would spend `stride` times the FLOPs on zeros.
    """

    features: int
    stride: int
    kernel_multiple: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, frames, channels = x.shape
        m, s = self.kernel_multiple, self.stride
        kernel = self.param(
            "kernel", _interpolation_init(m), (m * s, channels, self.features), self.param_dtype
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        x = x.astype(self.dtype)
        y = jnp.einsum("bfc,kcd->bfkd", x, kernel.astype(self.dtype))
        y = y.reshape(batch, frames, m, s, self.features)
        # Tap block i of frame f lands in output block f + i.
        full = sum(jnp.pad(y[:, :, i], ((0, 0), (i, m - 1 - i), (0, 0), (0, 0))) for i in range(m))
        full = full.reshape(batch, (frames + m - 1) * s, self.features)
        left = (m - 1) * s // 2
        return full[:, left : left + frames * s] + bias.astype(self.dtype)


class ConditioningUpsampler(nn.Module):
    """Mel frames to per-sample conditioning: (batch, frames, n_mels) -> (batch, frames * hop, C).

    Attributes:
      strides: one transposed convolution per stride; hop = prod(strides).
      kernel_multiple: each stage's kernel is `kernel_multiple * stride` samples (>= 1).
      features: channels C of every stage; None keeps the input's channel count.
      negative_slope: of the leaky ReLU after each stage. Leaky ReLU, not tanh: tanh saturates
        and conditioning collapses (published distillation experience); 0.4 follows ClariNet.
      hop_length: if given, prod(strides) must equal it (checked at construction).

    Parameters: `stage_<i>/kernel` (kernel_multiple * stride_i, in, C) and `stage_<i>/bias`.
    """

    strides: Sequence[int]
    kernel_multiple: int = 2
    features: int | None = None
    negative_slope: float = 0.4
    hop_length: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if not self.strides or any(s < 1 for s in self.strides):
            raise ValueError(
                f"upsample strides must be a non-empty tuple of positive integers, "
                f"got {self.strides}"
            )
        if self.kernel_multiple < 1:
            raise ValueError(f"kernel_multiple must be >= 1, got {self.kernel_multiple}")
        if self.hop_length is not None:
            check_hop_length(self.strides, self.hop_length)
        super().__post_init__()

    @property
    def hop(self) -> int:
        """Output samples per input frame: prod(strides)."""
        return math.prod(self.strides)

    @nn.compact
    def __call__(self, mel: Array, valid_frames: Array | int | None = None) -> Array:
        """mel: (batch, frames, n_mels) -> (batch, frames * hop, features).

        valid_frames (optional, may be traced): the frames from it on are padding, treated as
        absent. They and every stage's output past them are zeroed, so the first
        valid_frames * hop samples equal the upsampling of mel[:, :valid_frames] alone: inputs
        padded to one length (one compiled program) upsample as the unpadded ones would.
        """
        if mel.ndim != 3:
            raise ValueError(
                f"ConditioningUpsampler expects (batch, frames, n_mels), got {mel.shape}"
            )
        x = mel
        if valid_frames is not None:
            x = _zero_from(x, valid_frames)
        upsampled = 1
        for i, stride in enumerate(self.strides):
            x = _TimeTransposedConv(
                self.features or x.shape[-1],
                stride,
                self.kernel_multiple,
                self.dtype,
                self.param_dtype,
                name=f"stage_{i}",
            )(x)
            x = nn.leaky_relu(x, self.negative_slope)
            upsampled *= stride
            if valid_frames is not None:
                x = _zero_from(x, valid_frames * upsampled)
        return x


def _zero_from(x: Array, length: Array | int) -> Array:
    """x (batch, time, channels) with the steps from `length` on set to zero."""
    keep = jnp.arange(x.shape[1]) < length
    return jnp.where(keep[None, :, None], x, jnp.zeros((), x.dtype))
