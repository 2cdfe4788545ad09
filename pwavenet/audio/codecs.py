"""Audio transforms: the one place where waveform values are companded and quantized.

Every other part of the package (data pipeline, teacher and student heads, losses,
synthesis) calls into this module instead of re-deriving a formula, so that the
encoder used to build training targets and the decoder used to turn model output
back into audio can never drift apart. The mel features follow the same rule in
`pwavenet.audio.mel`.

Conventions
-----------
* Waveforms are floats in [-1, 1]. Functions accept jax or numpy arrays of any shape
  and return jax arrays of the same shape; all of them are jit-able.
* Integer outputs are ``int32``. ``mu`` and ``num_bins`` are static (python ints).
* Values that must be exact (bin centres at +-1, decoded end classes) are pinned
  explicitly and everything else is clipped to [-1, 1]: a compiler may fuse
  ``k * w - 1`` into an FMA, or divide by multiplying with a rounded reciprocal,
  either of which can land one ulp beyond +-1.

Mu-law (ITU-T G.711 style companding, continuous form)
------------------------------------------------------
    compress:  f(x) = sign(x) * ln(1 + mu |x|) / ln(1 + mu),        f: [-1, 1] -> [-1, 1]
    expand:    g(y) = sign(y) * ((1 + mu)^|y| - 1) / mu = f^{-1}(y)
    encode:    c(x) = round((f(clip(x, -1, 1)) + 1) / 2 * mu)  in {0, ..., mu}
    decode:    d(c) = g(2 c / mu - 1)

``round`` is round-half-to-even (``jnp.round``). The only exact tie that matters in
practice is x = 0: (0 + 1) / 2 * 255 = 127.5, which rounds to class 128, so
``mulaw_encode(0.0) == 128``, ``mulaw_encode(-1.0) == 0`` and ``mulaw_encode(1.0) == 255``.
Classes 0 and mu cover half as much of the compressed axis as the others (the grid
of class centres includes both end points).

Uniform quantization (``num_bins`` levels, 65536 for 16-bit audio)
-----------------------------------------------------------------
Bin k in {0, ..., num_bins - 1} has centre ``-1 + 2 k / (num_bins - 1)``; the bin
width is ``2 / (num_bins - 1)``, so the centres include -1 and 1 exactly and the
two edge bins stick out half a bin past [-1, 1].

16-bit PCM storage
------------------
Data sets store int16 samples ``s``; the model sees ``x = (2 s + 1) / 65535``, the centre of
16-bit bin ``k = s + 32768`` above, so ``bin_index(pcm16_to_float(s)) == s + 32768`` exactly
and every training sample sits on a bin centre of the 16-bit likelihoods. The price
is a DC offset of half a level (1.5e-5, -96 dBFS): digital silence maps to 1/65535, not 0,
which shows in its log-mel in the lowest band only (about -5.6 instead of the floor's -11.5
with the default features; real recordings' noise floor hides it).

"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import soundfile
from jax import Array
from jax.typing import ArrayLike

from pwavenet.audio.tensorflow_import import import_tensorflow, is_tf_tensor

__all__ = [
    "MULAW_MU",
    "NUM_16BIT_BINS",
    "bin_center",
    "bin_index",
    "bin_width",
    "pcm16_to_float",
    "quantize",
    "mulaw_compress",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_expand",
    "write_wav",
]


MULAW_MU: int = 255
NUM_16BIT_BINS: int = 65536


def _as_float(x: ArrayLike) -> Array:
    """Returns ``x`` as a jax array with an inexact dtype (the default float for ints)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


# --------------------------------------------------------------------------- mu-law


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_compress(x: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Continuous mu-law compression ``sign(x) ln(1 + mu|x|) / ln(1 + mu)``.

    Args:
      x: waveform, any shape, values in [-1, 1] (not clipped here, so that
        ``mulaw_expand`` stays its exact inverse on all reals).
      mu: companding parameter.

    Returns:
      Array of the same shape; inputs in [-1, 1] map into [-1, 1] (up to rounding).
    """
    x = _as_float(x)
    # log1p keeps full relative precision for the many samples near zero.
    return jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / math.log1p(mu)


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_expand(y: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Inverse of :func:`mulaw_compress`: ``sign(y) ((1 + mu)^|y| - 1) / mu``.

    Args:
      y: compressed values, any shape, in [-1, 1].
      mu: companding parameter.

    Returns:
      Array of the same shape; inputs in [-1, 1] map into [-1, 1] (up to rounding).
    """
    y = _as_float(y)
    # (1 + mu)^|y| - 1 == expm1(|y| ln(1 + mu)); expm1 avoids cancellation near 0.
    return jnp.sign(y) * jnp.expm1(jnp.abs(y) * math.log1p(mu)) / mu


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_encode(x: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Mu-law class of each sample: ``round((f(clip(x)) + 1) / 2 * mu)``.

    Args:
      x: waveform, any shape; values outside [-1, 1] are clipped first.
      mu: companding parameter; there are ``mu + 1`` classes.

    Returns:
      int32 array of the same shape with values in {0, ..., mu}; monotone
      non-decreasing in ``x``. Ties round half to even; for odd ``mu``, x = 0
      sits exactly on the tie ``mu / 2`` and for mu = 255 it goes to class 128.
    """
    y = mulaw_compress(jnp.clip(_as_float(x), -1.0, 1.0), mu)
    classes = jnp.round((y + 1.0) * (0.5 * mu))
    return jnp.clip(classes, 0, mu).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="mu")
def mulaw_decode(classes: ArrayLike, mu: int = MULAW_MU) -> Array:
    """Waveform value of each mu-law class: ``g(2 c / mu - 1)``.

    Args:
      classes: integer classes in {0, ..., mu}, any shape.
      mu: companding parameter.

    Returns:
      Float array of the same shape with values in [-1, 1]; classes 0 and mu give
      exactly -1 and 1.
    """
    classes = jnp.asarray(classes)
    y = _as_float(2 * classes - mu) / mu
    x = jnp.clip(mulaw_expand(y, mu), -1.0, 1.0)
    x = jnp.where(classes >= mu, 1.0, x)
    return jnp.where(classes <= 0, -1.0, x)


# ------------------------------------------------------------ uniform quantization


def bin_width(num_bins: int = NUM_16BIT_BINS) -> float:
    """Width ``2 / (num_bins - 1)`` of one uniform bin (python float)."""
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return 2.0 / (num_bins - 1)


@functools.partial(jax.jit, static_argnames="num_bins")
def bin_index(x: ArrayLike, num_bins: int = NUM_16BIT_BINS) -> Array:
    """Index of the nearest bin centre: ``round((clip(x) + 1) / 2 * (num_bins - 1))``.

    Args:
      x: waveform, any shape; clipped to [-1, 1] first.
      num_bins: number of uniform levels.

    Returns:
      int32 array of the same shape with values in {0, ..., num_bins - 1}.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    x = jnp.clip(_as_float(x), -1.0, 1.0)
    index = jnp.round((x + 1.0) * (0.5 * (num_bins - 1)))
    return jnp.clip(index, 0, num_bins - 1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="num_bins")
def bin_center(index: ArrayLike, num_bins: int = NUM_16BIT_BINS) -> Array:
    """Centre ``-1 + 2 k / (num_bins - 1)`` of bin ``k`` (float, same shape as ``index``).

    Computed as ``(2 k - (num_bins - 1)) / (num_bins - 1)`` (symmetric about 0),
    clipped to [-1, 1], with bins 0 and ``num_bins - 1`` pinned to exactly -1 and 1.
    """
    bin_width(num_bins)  # validates num_bins
    index = jnp.asarray(index)
    numerator = _as_float(2 * index - (num_bins - 1))
    center = jnp.clip(numerator / (num_bins - 1), -1.0, 1.0)
    center = jnp.where(index >= num_bins - 1, 1.0, center)
    return jnp.where(index <= 0, -1.0, center)


@functools.partial(jax.jit, static_argnames="num_bins")
def quantize(x: ArrayLike, num_bins: int = NUM_16BIT_BINS) -> Array:
    """Rounds ``x`` (clipped to [-1, 1]) to its nearest bin centre; same shape, float."""
    return bin_center(bin_index(x, num_bins), num_bins)


# ------------------------------------------------------------------- 16-bit PCM


def pcm16_to_float(samples: Any) -> Any:
    """int16 samples ``s`` -> float32 ``(2 s + 1) / 65535`` in [-1, 1] (16-bit bin centres).

    Accepts numpy (returns numpy) or tf tensors (returns a tf tensor, usable in tf.data).
    """
    if is_tf_tensor(samples):
        tf = import_tensorflow()
        return (tf.cast(samples, tf.float32) * 2.0 + 1.0) / 65535.0
    return ((np.asarray(samples, np.float64) * 2.0 + 1.0) / 65535.0).astype(np.float32)


def write_wav(path: str, audio: Any, sample_rate: int) -> None:
    """Writes a waveform (T,) as a 16-bit PCM wav at `sample_rate`, values past full scale
    clipped to [-1, 1]. Every wav the package writes goes through here."""
    soundfile.write(path, np.clip(np.asarray(audio), -1.0, 1.0), sample_rate, subtype="PCM_16")
