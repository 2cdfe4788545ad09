"""The teacher's cached autoregressive generation: its window step and `generate`.

`teacher_window` is the teacher's step of the synthesis contract (pwavenet.models.synthesis):
from a `TeacherState` it generates a piece of `chunk` frames, one sample at a time. Each step
runs every layer once for the new sample (`WaveNet.step`, ring buffers per layer, so the cost
per sample does not grow with the receptive field), draws x_t from the output distribution
with the frame's noise (`synthesis.frame_noise`), clips it to [-1, 1] (an unbounded draw fed
back through a high-order predictor can run away) and feeds it back. It samples exactly the
distribution teacher forcing scores: `model.apply(variables, samples, mel, speaker)` gives the
parameters each step used.

The loop is a scan over frames (which draws a frame's noise in one call) of a scan over the
frame's steps. When a frame's conditioning terms (`WaveNet.step_conditioning`) fit in cache
(AHEAD_BYTES), the frame computes them for all its steps in one matmul, and a step reads its
terms instead of all the projection kernels: at batch 1, 12 KB instead of 1 MB per step for
the benchmark teacher; at batch 16 the terms would take 50 MB a frame, more than the kernels,
and each step computes its own.

`generate` is one step over the whole mel. Called outside a jit, it spreads the batch's streams
over this process's local devices (`placement.spread_devices`): they are independent, so each
device runs the loop for its share with no communication.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from pwavenet.models import placement, synthesis
from pwavenet.models.conditioning import check_inputs
from pwavenet.models.wavenet import TeacherState, WaveNet

Array = jax.Array

__all__ = ["AHEAD_BYTES", "generate", "teacher_window"]

# A frame's conditioning terms are computed ahead when they take at most this.
AHEAD_BYTES = 4 * 2**20


def _unrolled_cycles(model: WaveNet) -> WaveNet:
    """The model with its cycle scan unrolled (same parameters): inside a time loop, a loop
    over 4 cycles cost about a fifth of a generation step at batch 1."""
    config = model.config.to_dict()
    config["scan_unroll"] = model.config.num_cycles
    return WaveNet(config)


def teacher_window(model: WaveNet, variables, state: TeacherState, window, *, chunk: int):
    """The teacher's window step: (audio (B, chunk * frame), the state after it).

    The piece is frames [keep, keep + chunk) of `window` (a `synthesis.Window`); the state
    continues the generation from the piece's first sample."""
    model = _unrolled_cycles(model)
    length = synthesis.frame_length(model)
    batch = window.keys.shape[0]
    with synthesis.valid_frames_only(window.valid):
        mel_up, speaker_emb = model.apply(
            variables, window.mel, window.speaker, method=WaveNet.conditioning
        )
    mel_steps = None
    if mel_up is not None:  # (chunk, frame, B, C)
        mel_up = lax.dynamic_slice_in_dim(mel_up, window.keep * length, chunk * length, axis=1)
        mel_steps = jnp.swapaxes(mel_up, 0, 1).reshape(chunk, length, batch, -1)
    lpc_frames = None
    if model.lpc_order:
        lpc = model.apply(variables, window.mel, method=WaveNet.lpc)
        lpc_frames = jnp.swapaxes(lax.dynamic_slice_in_dim(lpc, window.keep, chunk, axis=1), 0, 1)
    frames = window.start + window.keep + jnp.arange(chunk)
    noise = synthesis.frame_noise(model.distribution.noise, window.keys, frames, length)
    noise = jax.tree.map(lambda a: jnp.moveaxis(a, 0, 2), noise)  # (chunk, frame, B, ...)
    steps = (frames[:, None] * length + jnp.arange(length)).astype(jnp.int32)
    frame_loop = _FrameLoop(model, variables, speaker_emb, batch, length)
    state, x = lax.scan(frame_loop, state, (steps, mel_steps, lpc_frames, noise))
    return x.reshape(chunk * length, batch).T, state


class _FrameLoop:
    """The body of the scan over frames: one frame's steps from the state before it."""

    def __init__(self, model: WaveNet, variables, speaker_emb, batch: int, length: int):
        c = model.config
        self.model = model
        self.speaker_emb = speaker_emb
        self.kernel = model.apply(variables, method=WaveNet.conditioning_kernel)
        self.step_variables = placement.loop_invariant(variables)
        ahead_bytes = (
            length * batch * len(model.dilations) * c.gate_channels * jnp.dtype(c.dtype).itemsize
        )
        self.ahead = bool(c.n_mels) and ahead_bytes <= AHEAD_BYTES

    def conditioning(self, variables, mel_t):
        return self.model.apply(
            variables, mel_t, self.speaker_emb, self.kernel, method=WaveNet.step_conditioning
        )

    def __call__(self, state: TeacherState, inputs):
        t_frame, mel_frame, lpc_f, noise_frame = inputs
        ahead = self.conditioning(self.step_variables(), mel_frame) if self.ahead else None
        distribution = self.model.distribution

        def one_sample(state, inputs):
            t, mel_t, cond_t, noise_t = inputs
            variables = self.step_variables()
            if cond_t is None:
                cond_t = self.conditioning(variables, mel_t)
            params_t, state = self.model.apply(
                variables, state, t, cond_terms=cond_t, lpc_t=lpc_f, method=WaveNet.step
            )
            x_t = distribution.sample_from_noise(params_t, noise_t)
            x_t = jnp.clip(x_t, -1.0, 1.0).astype(jnp.float32)
            return state._replace(last=x_t), x_t

        return lax.scan(one_sample, state, (t_frame, mel_frame, ahead, noise_frame))


@functools.partial(jax.jit, static_argnames=("model", "chunk"))
def _generate(model, variables, state, window, *, chunk):
    return teacher_window(model, variables, state, window, chunk=chunk)[0]


def generate(model: WaveNet, params, rng: Array, *, mel=None, speaker=None, num_samples=None):
    """Samples audio autoregressively: `teacher_window` over the whole mel.

    Args:
      model: a WaveNet (static: a new model compiles anew).
      params: its parameter tree, or a variables dict {'params': ...}.
      rng: PRNG key; item b's noise comes from fold_in(rng, b) (`synthesis.item_keys`).
      mel: (B, frames, n_mels), required iff n_mels > 0; then T = frames * hop_length.
      speaker: int (B,), required iff num_speakers > 0.
      num_samples: T; required without a mel, and must equal frames * hop_length with one.

    Returns:
      (B, T) float32 samples in [-1, 1]; B = 1 when neither mel nor speaker gives a batch.
      Called outside a jit, the batch's streams run spread over the local devices and the
      samples come back sharded along the batch over them; each stream draws the same noise
      as on one device.
    """
    batch = check_inputs(model, None, mel, speaker) or 1
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
    frames = -(-int(num_samples) // synthesis.frame_length(model))
    variables = placement.as_variables(params)
    mesh = placement.spread_devices(batch, variables, rng, mel, speaker)
    state = jax.tree.map(
        lambda a: placement.place(mesh, a, 2 if a.ndim == 4 else 0), model.initial_state(batch)
    )
    keys = synthesis.item_keys(rng, batch)
    window = synthesis.Window.whole(
        placement.place(mesh, mel, 0),
        placement.place(mesh, speaker, 0),
        placement.place(mesh, keys, 0),
    )
    x = _generate(model, placement.place(mesh, variables, None), state, window, chunk=frames)
    return x[:, : int(num_samples)]
