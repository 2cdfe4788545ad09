"""The synthesis contract every model follows: a typed state and one window step.

A model synthesizes a piece of `chunk` mel frames with one call

    audio, state = window_step(model, variables, state, window, chunk=chunk)

where `state` is the model's own NamedTuple (`model.initial_state(batch)` to start: the
teacher's generation caches and last sample, `pwavenet.models.wavenet.TeacherState`; the
student's synthesis-filter memory, `pwavenet.models.iaf.StudentState`) and `window` a
`Window`: the mel frames around the piece and where the piece lies in them. The teacher's step
is `pwavenet.models.generation.teacher_window`, the student's `pwavenet.models.iaf.student_window`.
Whole-utterance synthesis (`generation.generate`, `iaf.sample`) is one step over one window
that is the whole mel; `pwavenet.vocoder` loops over fixed-shape windows for bounded memory
and streaming. The results agree sample for sample because every path draws the same noise:

Noise. The noise of global frame f of item b is drawn from `fold_in(keys[b], f)`
(`frame_noise`), for the student its (hop,) base noise, for the teacher its hop steps'
`distribution.noise`. It depends on neither the window nor the batch. Whole-utterance
functions taking one PRNG key give item b the key `fold_in(rng, b)` (`item_keys`); the vocoder
gives item b `PRNGKey(seed + b)`, so a batch equals its items vocoded one by one.
Without a mel, a frame is UNCONDITIONED_FRAME samples.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from pwavenet.models.layers import ConditioningUpsampler

Array = jax.Array

__all__ = ["UNCONDITIONED_FRAME", "Window", "frame_length", "frame_noise", "item_keys"]

# Samples per noise frame (and per generation block) of a model without mel conditioning.
UNCONDITIONED_FRAME = 256


class Window(NamedTuple):
    """One piece's inputs.

    Attributes:
      mel: (B, W, n_mels) mel frames around the piece (None without mel conditioning); frames
        from `valid` on are padding, masked out of the upsampler, so they change nothing.
      valid: int32 scalar, the window's real frames (None: all of them).
      start: int32 scalar, the global index of the window's first frame.
      keep: int32 scalar, the piece's first frame within the window.
      speaker: (B,) int speaker ids, or None.
      keys: (B, key) one PRNG key per item (`frame_noise`).
      noise: the student's base noise of the whole window (B, W * hop), given instead of
        drawn from `keys` (an exported synthesis takes its noise as an input), or None.
      excitation: a pulses student's (pulses, voicing) for the piece's samples, computed over
        the whole mel (its pitch estimate reads the whole utterance), or None.
    """

    mel: Array | None
    valid: Array | None
    start: Array
    keep: Array
    speaker: Array | None
    keys: Array | None
    noise: Array | None = None
    excitation: Any = None

    @classmethod
    def whole(cls, mel, speaker, keys, noise=None) -> Window:
        """The window that is a whole utterance."""
        zero = jnp.int32(0)
        return cls(mel, None, zero, zero, speaker, keys, noise)


def frame_length(model) -> int:
    """Samples per frame: the hop with a mel, UNCONDITIONED_FRAME without one."""
    return model.hop_length if model.config.n_mels else UNCONDITIONED_FRAME


def item_keys(rng: Array, batch: int) -> Array:
    """(batch, key): item b's key fold_in(rng, b)."""
    return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(batch))


def frame_noise(draw, keys: Array, frames: Array, length: int):
    """Noise of the given global frames: every leaf (B, F, length, ...), frame f of item b
    drawn as draw(fold_in(keys[b], f), (length,))."""
    return jax.vmap(
        lambda key: jax.vmap(lambda f: draw(jax.random.fold_in(key, f), (length,)))(frames)
    )(keys)


def valid_frames_only(valid):
    """An `nn.intercept_methods` interceptor that passes `valid_frames=valid` to every
    `ConditioningUpsampler` call, so that a model's own conditioning upsamples a padded
    window as it would its first `valid` frames alone; no interceptor for None (all
    frames are real)."""
    if valid is None:
        return contextlib.nullcontext()

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, ConditioningUpsampler) and context.method_name == "__call__":
            kwargs = dict(kwargs, valid_frames=valid)
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)
