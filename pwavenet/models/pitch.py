"""A learned pitch predictor: voicing and F0 of every mel frame from the log-mel and speaker.

A vocoder gets only the mel, and the mel's low bands resolve the harmonics of most voices
only partly, so F0 must be inferred. Hand-made template matching (pwavenet.audio.excitation)
makes octave errors the mel cannot settle locally and reads a prior over the whole utterance,
which streaming cannot have. This network learns the map from labels instead: WORLD's harvest
F0 and voicing of the training audio (`harvest_frames`), on the mel frames' centres.

Network: a 1x1 projection of the log-mel (plus the speaker's embedding), residual blocks of
non-causal dilated convolutions (kernel 3, GELU), and a head with one voicing logit and one
logit per pitch class: CLASS_CENTS-wide classes on a log scale over F0_RANGE_HZ, as in CREPE.
The context is bounded, `context_frames` on either side, so a stream of frames can be
predicted with that much look-ahead and gives what one pass over the whole mel gives.

Loss per frame: binary cross-entropy of the voicing, plus, on frames harvest calls voiced,
the cross-entropy of the class distribution against a Gaussian-blurred one-hot target
(sigma TARGET_SIGMA_CENTS), which makes neighbouring classes nearly right rather than wrong.
Decoding (`decode`): the probability-weighted mean log F0 over the classes within
DECODE_RADIUS of the most probable one (CREPE's local average): resolution finer than a class.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from pwavenet.audio.excitation import F0_RANGE_HZ  # the hand-made estimator's range too

Array = jax.Array

__all__ = [
    "F0_RANGE_HZ",
    "PitchPredictor",
    "class_log_f0",
    "decode",
    "harvest_frames",
    "loss",
    "read_params",
    "targets",
]

PARAMS_FILE = "pitch_params.msgpack"  # in a fit's workdir, beside its config.json
CLASS_CENTS = 20.0
TARGET_SIGMA_CENTS = 25.0
DECODE_RADIUS = 4  # classes either side of the most probable in the local average


def class_log_f0() -> np.ndarray:
    """The classes' log F0 (natural log of Hz), CLASS_CENTS apart from F0_RANGE_HZ[0] to the
    first class at or above F0_RANGE_HZ[1]: (classes,)."""
    lo, hi = F0_RANGE_HZ
    count = int(math.ceil(1200.0 * math.log2(hi / lo) / CLASS_CENTS)) + 1
    return math.log(lo) + np.arange(count) * (CLASS_CENTS / 1200.0 * math.log(2.0))


class PitchPredictor(nn.Module):
    """(voicing logit (..., frames), class logits (..., frames, classes)) from a log-mel
    (..., frames, n_mels) and speaker ids (...) (when num_speakers > 0).

    Fields: channels, dilations (one residual block each), num_speakers, speaker_dim.
    """

    channels: int = 64
    dilations: Sequence[int] = (1, 2, 4, 8, 1)
    num_speakers: int = 0
    speaker_dim: int = 16

    @property
    def context_frames(self) -> int:
        """Frames on either side that a frame's prediction reads (kernel 3 per block)."""
        return int(sum(self.dilations))

    @nn.compact
    def __call__(
        self, log_mel: Array, speaker: Array | None = None, valid_frames=None
    ) -> tuple[Array, Array]:
        """`valid_frames` (optional, may be traced): the frames from it on are padding; the
        convolutions read zeros there, as at the end of an unpadded input, so the outputs of
        the first valid_frames frames equal those of log_mel[..., :valid_frames, :] alone."""
        # A fixed affine map of the log-mel to about unit range (natural-log mels of speech
        # lie in about -11..2); nothing computed over the utterance, so streaming stays exact.
        h = nn.Dense(self.channels, name="input")((log_mel.astype(jnp.float32) + 5.0) / 3.0)
        if self.num_speakers:
            if speaker is None:
                raise ValueError("This pitch predictor was trained with speakers; pass speaker.")
            embedding = nn.Embed(self.num_speakers, self.speaker_dim, name="speaker")(speaker)
            h = h + nn.Dense(self.channels, name="speaker_proj")(embedding)[..., None, :]
        keep = None
        if valid_frames is not None:
            keep = (jnp.arange(log_mel.shape[-2]) < valid_frames)[:, None]
        for i, d in enumerate(self.dilations):
            inputs = nn.gelu(h) if keep is None else jnp.where(keep, nn.gelu(h), 0.0)
            y = nn.Conv(
                self.channels, (3,), kernel_dilation=(d,), padding="SAME", name=f"conv_{i}"
            )(inputs)
            h = h + nn.Dense(self.channels, name=f"mix_{i}")(nn.gelu(y))
        out = nn.Dense(1 + len(class_log_f0()), name="head")(nn.gelu(h))
        return out[..., 0], out[..., 1:]


def read_params(workdir: str, expected=None):
    """The fitted parameters in `workdir` (launch.fit_pitch); with `expected` (a parameter
    tree of the predictor that will use them), refused unless every array's shape matches."""
    path = os.path.join(workdir, PARAMS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: pass the --workdir of a finished pitch fit "
            "(python -m launch.fit_pitch) as pitch_workdir."
        )
    with open(path, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    if expected is not None:
        got = jax.tree.map(np.shape, params)
        want = jax.tree.map(np.shape, expected)
        if got != want:
            raise ValueError(
                f"the pitch predictor in {path} has another architecture than the student's "
                "model.pitch_channels, model.pitch_dilations, model.pitch_speaker_dim and "
                "model.num_speakers describe: set them to its config's pitch section "
                f"(config.json beside it). Shapes there: {got}; expected: {want}."
            )
    return jax.tree.map(jnp.asarray, params)


def targets(log_f0: Array) -> Array:
    """Gaussian-blurred class targets (..., classes) for log F0 (..., ), each summing to 1."""
    classes = jnp.asarray(class_log_f0(), jnp.float32)
    sigma = TARGET_SIGMA_CENTS / 1200.0 * math.log(2.0)
    weights = jnp.exp(-0.5 * jnp.square((log_f0[..., None] - classes) / sigma))
    return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-12)


def loss(
    voicing_logit: Array, class_logits: Array, f0: Array, voiced: Array, mask: Array
) -> tuple[Array, dict[str, Array]]:
    """Mean voicing BCE over `mask`ed frames plus mean class cross-entropy over the masked
    frames harvest calls voiced; f0 in Hz (any value where unvoiced), voiced and mask 0/1,
    each (..., frames). Returns (loss, {'voicing_bce', 'pitch_ce'})."""
    mask = mask.astype(jnp.float32)
    voiced = voiced.astype(jnp.float32)
    bce = optax.losses.sigmoid_binary_cross_entropy(voicing_logit, voiced)
    bce = jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    log_f0 = jnp.log(jnp.clip(f0, *F0_RANGE_HZ))
    ce = optax.losses.softmax_cross_entropy(class_logits, targets(log_f0))
    pitched = mask * voiced
    ce = jnp.sum(ce * pitched) / jnp.maximum(jnp.sum(pitched), 1.0)
    return bce + ce, {"voicing_bce": bce, "pitch_ce": ce}


def decode(voicing_logit: Array, class_logits: Array) -> tuple[Array, Array]:
    """(F0 in Hz, voicing probability), each (..., frames): the local probability-weighted
    mean log F0 around the most probable class (module docstring)."""
    classes = jnp.asarray(class_log_f0(), jnp.float32)
    probs = jax.nn.softmax(class_logits, axis=-1)
    best = jnp.argmax(class_logits, axis=-1)
    near = jnp.abs(jnp.arange(classes.shape[0]) - best[..., None]) <= DECODE_RADIUS
    weights = probs * near
    log_f0 = jnp.sum(weights * classes, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), 1e-12)
    return jnp.exp(log_f0), jax.nn.sigmoid(voicing_logit)


def harvest_frames(audio: np.ndarray, sample_rate: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(F0 in Hz, voiced 0/1), each (len(audio) // hop,): WORLD's harvest (1 ms frames, over
    F0_RANGE_HZ) read at each mel frame's centre, (i + 1/2) hop; F0 is 0 where unvoiced."""
    # Imported here: pyworld warns on import (it reads pkg_resources), and a student with a
    # learned pitch imports this module for the network alone.
    import pyworld

    x = np.ascontiguousarray(audio, np.float64)
    f0, times = pyworld.harvest(
        x, sample_rate, f0_floor=F0_RANGE_HZ[0], f0_ceil=F0_RANGE_HZ[1], frame_period=1.0
    )
    frames = len(x) // hop
    centres = (np.arange(frames) + 0.5) * hop / sample_rate
    nearest = np.clip(np.rint(centres / 1e-3).astype(np.int64), 0, len(f0) - 1)
    f0 = f0[nearest]
    return f0, (f0 > 0).astype(np.float32)
