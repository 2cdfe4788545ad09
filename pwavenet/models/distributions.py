"""Output distributions over audio samples.

Used by the WaveNet teacher (one distribution per timestep, parameterised by the
network's output head), by the IAF student (whose per-timestep output is a
logistic or Gaussian) and by the distillation loss (which scores continuous student
samples under the teacher and needs closed-form entropies and KL divergences).

Every family is a frozen dataclass with

* ``num_params``: parameters per timestep, ``P``;
* ``log_prob(params, x)``: ``params`` of shape ``(..., P)``, ``x`` of shape ``(...)``,
  returns ``(...)`` log probabilities (log densities for continuous families), in nats;
* ``sample(rng, params)``: ``(...)`` samples; it is ``sample_from_noise(params,
  noise(rng, shape))``: the randomness alone (``noise``, a pytree of arrays with leading
  axes ``shape``) can be drawn ahead for many steps at once, as cached generation does.

All functions are jit-able and vectorised over arbitrary leading axes; the public
methods are themselves jitted with the family as a static argument, and parameters
in 16-bit floats are promoted to float32 before use. For every
finite parameter value and every x in [-1, 1], ``log_prob`` and its gradients (with
respect to ``params``, and to ``x`` where the family is continuous in x) are finite:
all terms are computed in log space with ``log_sigmoid``/``softplus``/``logsumexp``
and never as a log of a difference of probabilities.

Scales are parameterised by a raw log-scale and floored: ``log_s = max(raw, floor)``
(:func:`clamp_log_scale`, default floor -9.0, i.e. s >= 1.2e-4, about four 16-bit
bins). Below the floor the gradient with respect to ``raw`` is zero, above it is one.

Families (``s = exp(log_s)``, ``z = (x - m) / s``)
-----------------------------------------------
``MuLawCategorical(mu)`` (name ``'mulaw'``), ``P = mu + 1`` logits ``l``:
    log p(x) = log_softmax(l)[mulaw_encode(x)]
    sample   = mulaw_decode(c),  c ~ Categorical(softmax(l))

``DiscretizedMixtureOfLogistics(K, num_bins, log_scale_min)`` (name ``'mol'``),
``P = 3K`` laid out as ``[logit_probs (K) | means m (K) | raw log-scales (K)]``.
Bins have width ``w = 2 / (num_bins - 1)`` and centres ``c_k = -1 + k w``. With
``sigma`` the logistic sigmoid and ``a = (c - w/2 - m) / s``, ``b = (c + w/2 - m) / s``,
the mass of the bin centred at ``c`` under one component is
    lowest bin  (k = 0):             sigma(b)                 (whole left tail)
    highest bin (k = num_bins - 1):  1 - sigma(a) = sigma(-a) (whole right tail)
    interior:                        sigma(b) - sigma(a) = sigma(b) sigma(-a) (1 - exp(-w / s))
and ``log p(x) = logsumexp_j(log_softmax(logit_probs)_j + log mass_j)``. The product
form of the interior difference has no cancellation: each factor is a log-sigmoid
and ``log(1 - exp(-d))`` is evaluated from ``log d = log w - log_s``, so it stays
finite when the bin mass underflows float32 (no separate density fallback is needed).
``log_prob(..., quantize=True)`` first rounds x to its nearest bin centre;
``quantize=False`` centres the bin at x itself, which makes the result
differentiable in x (distillation scores continuous student samples this way).
In both cases the edge-bin formulas apply when x's nearest centre is -1 or 1.
Over all ``num_bins`` centres the probabilities sum to one up to float32 rounding.

``Gaussian(log_scale_min)`` (name ``'gaussian'``), ``P = 2`` = ``[m, raw log-scale]``:
    log p(x) = -z^2 / 2 - log_s - log(2 pi) / 2,   entropy = log_s + log(2 pi e) / 2

``Logistic(log_scale_min)`` (name ``'logistic'``), ``P = 2`` = ``[m, raw log-scale]``:
    log p(x) = -z - log_s - 2 softplus(-z) = log_sigmoid(z) + log_sigmoid(-z) - log_s,
    entropy = log_s + 2

Closed forms shared with the distillation loss: :func:`logistic_entropy`,
:func:`gaussian_entropy`, :func:`gaussian_kl`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from pwavenet import audio

__all__ = [
    "DEFAULT_LOG_SCALE_MIN",
    "DiscretizedMixtureOfLogistics",
    "Distribution",
    "Gaussian",
    "Logistic",
    "MuLawCategorical",
    "clamp_log_scale",
    "gaussian_entropy",
    "gaussian_kl",
    "get_distribution",
    "logistic_entropy",
]

DEFAULT_LOG_SCALE_MIN: float = -9.0

# Standardised values are clipped to this magnitude so that absurd but finite
# parameters (|mean| ~ 1e38) cannot overflow float32 (z^2 stays below 1e37). No
# realistic input comes within many orders of magnitude of it.
_MAX_ABS_Z = 3e18

# Uniforms for inverse-CDF sampling are kept in [eps, 1 - eps] so log(u) and
# log(1 - u) are finite; this truncates logistic tails beyond |z| ~ 13.8, which
# carry 2e-6 of the mass.
_UNIFORM_EPS = 1e-6

# Sampling caps the MoL scale at exp(30): any larger scale puts all but O(e^-30) of
# the mass in the two edge bins anyway, and the cap keeps m + s * z finite.
_MAX_SAMPLE_LOG_SCALE = 30.0

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# Public methods are jitted with the (frozen, hashable) family as a static argument:
# inside a caller's jit this is a no-op, and eager calls compile once instead of
# dispatching op by op.
_jit_method = functools.partial(jax.jit, static_argnums=0)
_jit_method_q = functools.partial(jax.jit, static_argnums=0, static_argnames="quantize")


# ------------------------------------------------------------------------- helpers


def clamp_log_scale(raw: ArrayLike, minimum: float = DEFAULT_LOG_SCALE_MIN) -> Array:
    """Floors a raw log-scale: ``max(raw, minimum)``.

    A hard floor (as in PixelCNN++ / Parallel WaveNet): values are exactly those of
    ``max``, the gradient is 1 above the floor, 0 below it (1/2 exactly at it) and
    finite everywhere, so a head that undershoots is not pushed further down.

    Args:
      raw: raw log-scales, any shape.
      minimum: the floor.

    Returns:
      Array of the same shape.
    """
    return jnp.maximum(jnp.asarray(raw), minimum)


def logistic_entropy(log_scale: ArrayLike) -> Array:
    """Entropy in nats of a logistic with log-scale ``log_scale``: ``log_scale + 2``."""
    return jnp.asarray(log_scale) + 2.0


def gaussian_entropy(log_scale: ArrayLike) -> Array:
    """Entropy in nats of a Gaussian with log-std ``log_scale``: ``log_scale + log(2 pi e) / 2``."""
    return jnp.asarray(log_scale) + 0.5 * math.log(2.0 * math.pi * math.e)


def gaussian_kl(mu_q: ArrayLike, log_s_q: ArrayLike, mu_p: ArrayLike, log_s_p: ArrayLike) -> Array:
    """Elementwise ``KL(N(mu_q, s_q^2) || N(mu_p, s_p^2))`` in nats.

    ``= log s_p - log s_q + (s_q^2 + (mu_q - mu_p)^2) / (2 s_p^2) - 1/2``, evaluated as
    ``-delta + expm1(2 delta) / 2 + ((mu_q - mu_p) / s_p)^2 / 2`` with
    ``delta = log_s_q - log_s_p``: only log-scale differences are exponentiated, and
    ``expm1`` keeps the result accurate (and >= 0) when q and p are close.
    Log-scales are used as given (no floor). Inputs broadcast against each other.
    """
    delta = jnp.asarray(log_s_q) - jnp.asarray(log_s_p)
    dz = (jnp.asarray(mu_q) - jnp.asarray(mu_p)) * jnp.exp(-jnp.asarray(log_s_p))
    return -delta + 0.5 * jnp.expm1(2.0 * delta) + 0.5 * jnp.square(dz)


def _standardize(x: Array, mean: Array, log_scale: Array) -> Array:
    """``(x - mean) / exp(log_scale)``, clipped to +-_MAX_ABS_Z (multiplies by exp(-log_s)
    so a huge log-scale gives 0 instead of inf / inf)."""
    return jnp.clip((x - mean) * jnp.exp(-log_scale), -_MAX_ABS_Z, _MAX_ABS_Z)


def _log1mexp_from_log(log_d: Array) -> Array:
    """``log(1 - exp(-d))`` for ``d = exp(log_d) > 0``, finite (with finite gradient)
    for every finite ``log_d``.

    Small d (including d that underflows to 0): ``log d + log((1 - e^-d) / d)`` with
    the series ``-d/2 + d^2/24`` (error < d^4 / 2880). Otherwise ``log(-expm1(-d))``,
    with d capped at 30 where the value is -e^-30, i.e. 0 in float32.
    """
    d = jnp.exp(jnp.minimum(log_d, math.log(30.0)))
    small = d < 1e-3
    series = log_d - 0.5 * d + jnp.square(d) / 24.0
    # Double where: the unused branch must see a safe d, or its -inf / NaN gradient
    # would leak through jnp.where into the result.
    d_large = jnp.where(small, 1.0, d)
    large = jnp.log(-jnp.expm1(-d_large))
    return jnp.where(small, series, large)


def _as_params(params: ArrayLike, num_params: int, name: str) -> Array:
    """Checks the trailing axis and promotes to at least float32: 16-bit floats cannot
    resolve 16-bit audio bins, so bf16 heads are scored in float32."""
    params = jnp.asarray(params)
    if params.ndim < 1 or params.shape[-1] != num_params:
        raise ValueError(f"{name} expects params of shape (..., {num_params}), got {params.shape}")
    return params.astype(jnp.promote_types(params.dtype, jnp.float32))


def _check_log_scale_min(log_scale_min: float) -> None:
    # exp(-log_scale) must stay finite in float32 (and far from overflow).
    if not -80.0 <= log_scale_min < math.inf:
        raise ValueError(f"log_scale_min must be finite and >= -80, got {log_scale_min}")


def _uniform(rng: Array, shape: tuple[int, ...]) -> Array:
    return jax.random.uniform(rng, shape, minval=_UNIFORM_EPS, maxval=1.0 - _UNIFORM_EPS)


def _logistic_noise(rng: Array, shape: tuple[int, ...]) -> Array:
    """Standard logistic draws by inverse CDF, ``log u - log(1 - u)``."""
    u = _uniform(rng, shape)
    return jnp.log(u) - jnp.log1p(-u)


@runtime_checkable
class Distribution(Protocol):
    """What the model heads and losses rely on."""

    @property
    def num_params(self) -> int: ...

    def log_prob(self, params: ArrayLike, x: ArrayLike) -> Array: ...

    def sample(self, rng: Array, params: ArrayLike) -> Array: ...

    def noise(self, rng: Array, shape: tuple[int, ...]) -> Any: ...

    def sample_from_noise(self, params: ArrayLike, noise: Any) -> Array: ...


# ------------------------------------------------------------------------ families


@dataclasses.dataclass(frozen=True)
class MuLawCategorical:
    """Categorical over the ``mu + 1`` mu-law classes of :mod:`pwavenet.audio`.

    params: ``(..., mu + 1)`` unnormalised logits.
    """

    mu: int = audio.MULAW_MU

    def __post_init__(self) -> None:
        if self.mu < 1:
            raise ValueError(f"mu must be >= 1, got {self.mu}")

    @property
    def num_params(self) -> int:
        return self.mu + 1

    @_jit_method
    def log_probs(self, params: ArrayLike) -> Array:
        """Normalised log probabilities of all classes, ``(..., mu + 1)``."""
        params = _as_params(params, self.num_params, type(self).__name__)
        return jax.nn.log_softmax(params, axis=-1)

    @_jit_method
    def log_prob_classes(self, params: ArrayLike, classes: ArrayLike) -> Array:
        """Log probability of integer targets.

        Args:
          params: logits ``(..., mu + 1)``.
          classes: int ``(...)`` in {0, ..., mu}.

        Returns:
          ``(...)`` log probabilities.
        """
        log_p = self.log_probs(params)
        classes = jnp.asarray(classes, dtype=jnp.int32)
        shape = jnp.broadcast_shapes(log_p.shape[:-1], classes.shape)
        log_p = jnp.broadcast_to(log_p, (*shape, log_p.shape[-1]))
        classes = jnp.broadcast_to(classes, shape)
        return jnp.take_along_axis(log_p, classes[..., None], axis=-1)[..., 0]

    @_jit_method
    def log_prob(self, params: ArrayLike, x: ArrayLike) -> Array:
        """Log probability of the mu-law class of waveform values ``x`` ``(...)``."""
        return self.log_prob_classes(params, audio.mulaw_encode(x, self.mu))

    @_jit_method
    def sample_classes(self, rng: Array, params: ArrayLike) -> Array:
        """int32 classes ``(...)`` drawn from the logits ``(..., mu + 1)``."""
        return self._classes(params, self.noise(rng, jnp.shape(params)[:-1]))

    def _classes(self, params: ArrayLike, gumbel: Array) -> Array:
        logits = _as_params(params, self.num_params, type(self).__name__)
        return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)  # Gumbel-max

    def noise(self, rng: Array, shape: tuple[int, ...]) -> Array:
        """Gumbel noise ``(*shape, mu + 1)``, one draw per class."""
        return jax.random.gumbel(rng, (*shape, self.num_params))

    @_jit_method
    def sample_from_noise(self, params: ArrayLike, noise: Array) -> Array:
        return audio.mulaw_decode(self._classes(params, noise), self.mu)

    @_jit_method
    def sample(self, rng: Array, params: ArrayLike) -> Array:
        """Waveform values ``(...)`` in [-1, 1]: decoded class samples."""
        return self.sample_from_noise(params, self.noise(rng, jnp.shape(params)[:-1]))


@dataclasses.dataclass(frozen=True)
class DiscretizedMixtureOfLogistics:
    """Mixture of ``num_mixtures`` logistics discretised to ``num_bins`` uniform bins.

    params: ``(..., 3 K)`` = ``[logit_probs (K) | means (K) | raw log-scales (K)]``.
    See the module docstring for the bin masses.
    """

    num_mixtures: int = 10
    num_bins: int = audio.NUM_16BIT_BINS
    log_scale_min: float = DEFAULT_LOG_SCALE_MIN

    def __post_init__(self) -> None:
        if self.num_mixtures < 1:
            raise ValueError(f"num_mixtures must be >= 1, got {self.num_mixtures}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        _check_log_scale_min(self.log_scale_min)

    @property
    def num_params(self) -> int:
        return 3 * self.num_mixtures

    @property
    def bin_width(self) -> float:
        """``2 / (num_bins - 1)``."""
        return audio.bin_width(self.num_bins)

    def bin_centers(self) -> Array:
        """All bin centres ``-1 + 2 k / (num_bins - 1)``, shape ``(num_bins,)``."""
        return audio.bin_center(jnp.arange(self.num_bins), self.num_bins)

    def split_params(self, params: ArrayLike) -> tuple[Array, Array, Array]:
        """``(log mixture weights, means, floored log-scales)``, each ``(..., K)``."""
        params = _as_params(params, self.num_params, type(self).__name__)
        k = self.num_mixtures
        logit_probs = params[..., :k]
        means = params[..., k : 2 * k]
        log_scales = clamp_log_scale(params[..., 2 * k :], self.log_scale_min)
        return jax.nn.log_softmax(logit_probs, axis=-1), means, log_scales

    @_jit_method_q
    def component_log_probs(self, params: ArrayLike, x: ArrayLike, quantize: bool = True) -> Array:
        """Log mass of x's bin under each component (unweighted), ``(..., K)``."""
        _, means, log_scales = self.split_params(params)
        return self._component_log_probs(means, log_scales, x, quantize)

    def _component_log_probs(
        self, means: Array, log_scales: Array, x: ArrayLike, quantize: bool
    ) -> Array:
        x = jnp.asarray(x, dtype=means.dtype)
        index = audio.bin_index(x, self.num_bins)
        center = audio.bin_center(index, self.num_bins) if quantize else x
        index, center = index[..., None], center[..., None]

        z = _standardize(center, means, log_scales)
        # Standardised bin width d = w / s, kept in log form so it never underflows.
        log_d = math.log(self.bin_width) - log_scales
        half_d = 0.5 * jnp.exp(jnp.minimum(log_d, math.log(1e30)))
        a = z - half_d  # standardised lower edge
        b = z + half_d  # standardised upper edge
        log_cdf_upper = jax.nn.log_sigmoid(b)  # log P(X < upper edge)
        log_sf_lower = jax.nn.log_sigmoid(-a)  # log P(X > lower edge)
        # sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - exp(-(b - a))).
        log_interior = log_cdf_upper + log_sf_lower + _log1mexp_from_log(log_d)
        # All three branches are finite with finite gradients, so a plain where is safe.
        return jnp.where(
            index == 0,
            log_cdf_upper,
            jnp.where(index == self.num_bins - 1, log_sf_lower, log_interior),
        )

    @_jit_method_q
    def log_prob(self, params: ArrayLike, x: ArrayLike, quantize: bool = True) -> Array:
        """Log probability of the bin containing ``x``.

        Args:
          params: ``(..., 3 K)``.
          x: ``(...)`` waveform values (broadcastable to ``params.shape[:-1]``).
          quantize: True rounds ``x`` to its nearest bin centre (the probability of
            the 16-bit value); False centres a width-``w`` bin at ``x`` itself, which
            is differentiable in ``x``.

        Returns:
          ``(...)`` log probabilities (<= 0).
        """
        log_weights, means, log_scales = self.split_params(params)
        log_mass = self._component_log_probs(means, log_scales, x, quantize)
        return jax.nn.logsumexp(log_weights + log_mass, axis=-1)

    @_jit_method
    def sample(self, rng: Array, params: ArrayLike) -> Array:
        """Bin-centre samples ``(...)`` in [-1, 1].

        Picks a component from the mixture weights, draws a logistic with its mean
        and (floored) scale by inverse CDF, clips to [-1, 1] (which is what gives the
        edge bins their tail mass) and rounds to the nearest bin centre.
        """
        return self.sample_from_noise(params, self.noise(rng, jnp.shape(params)[:-1]))

    def noise(self, rng: Array, shape: tuple[int, ...]) -> tuple[Array, Array]:
        """(Gumbel noise ``(*shape, K)`` that picks the component, standard logistic noise
        ``shape`` for its value)."""
        rng_component, rng_value = jax.random.split(rng)
        return (
            jax.random.gumbel(rng_component, (*shape, self.num_mixtures)),
            _logistic_noise(rng_value, shape),
        )

    @_jit_method
    def sample_from_noise(self, params: ArrayLike, noise: tuple[Array, Array]) -> Array:
        gumbel, logistic = noise
        log_weights, means, log_scales = self.split_params(params)
        component = jnp.argmax(log_weights + gumbel, axis=-1)[..., None]  # Gumbel-max
        mean = jnp.take_along_axis(means, component, axis=-1)[..., 0]
        log_scale = jnp.take_along_axis(log_scales, component, axis=-1)[..., 0]
        scale = jnp.exp(jnp.minimum(log_scale, _MAX_SAMPLE_LOG_SCALE))
        x = mean + scale * logistic
        return audio.quantize(jnp.clip(x, -1.0, 1.0), self.num_bins)


@dataclasses.dataclass(frozen=True)
class _LocationScale:
    """Shared parameter handling for the continuous families: params ``(..., 2)``."""

    log_scale_min: float = DEFAULT_LOG_SCALE_MIN
    # A ceiling on the log-scale (inf: none). Audio lies in [-1, 1], so a scale above 1 is
    # never right; a teacher's generation feeds each sample back, and a ceiling keeps one
    # wild step from drawing a sample far out of range.
    log_scale_max: float = math.inf

    def __post_init__(self) -> None:
        _check_log_scale_min(self.log_scale_min)
        if not self.log_scale_min < self.log_scale_max:
            raise ValueError(
                f"log_scale_max ({self.log_scale_max}) must exceed log_scale_min "
                f"({self.log_scale_min})"
            )

    @property
    def num_params(self) -> int:
        return 2

    def split_params(self, params: ArrayLike) -> tuple[Array, Array]:
        """``(mean, log-scale floored at log_scale_min and capped at log_scale_max)``, each
        ``(...)``."""
        params = _as_params(params, self.num_params, type(self).__name__)
        log_scale = clamp_log_scale(params[..., 1], self.log_scale_min)
        if math.isfinite(self.log_scale_max):
            log_scale = jnp.minimum(log_scale, self.log_scale_max)
        return params[..., 0], log_scale

    @_jit_method
    def sample(self, rng: Array, params: ArrayLike) -> Array:
        """Samples ``(...)``: ``m + s * noise`` with the family's standard noise."""
        return self.sample_from_noise(params, self.noise(rng, jnp.shape(params)[:-1]))

    @_jit_method
    def sample_from_noise(self, params: ArrayLike, noise: Array) -> Array:
        mean, log_scale = self.split_params(params)
        return mean + jnp.exp(log_scale) * noise


@dataclasses.dataclass(frozen=True)
class Gaussian(_LocationScale):
    """Continuous Gaussian; params ``(..., 2)`` = ``[mean, raw log-std]``.

    ``sample`` returns ``m + s * eps`` unbounded; it is finite while
    ``exp(log_scale)`` is (log_scale below ~88).
    """

    @_jit_method
    def log_prob(self, params: ArrayLike, x: ArrayLike) -> Array:
        """Log density ``(...)`` at ``x`` ``(...)``."""
        mean, log_scale = self.split_params(params)
        z = _standardize(jnp.asarray(x, dtype=mean.dtype), mean, log_scale)
        return -0.5 * jnp.square(z) - log_scale - _HALF_LOG_2PI

    def noise(self, rng: Array, shape: tuple[int, ...]) -> Array:
        """Standard normal noise ``shape``."""
        return jax.random.normal(rng, shape)

    def entropy(self, params: ArrayLike) -> Array:
        """Entropy in nats ``(...)``."""
        return gaussian_entropy(self.split_params(params)[1])


@dataclasses.dataclass(frozen=True)
class Logistic(_LocationScale):
    """Continuous logistic; params ``(..., 2)`` = ``[mean, raw log-scale]``.

    ``sample`` uses the inverse CDF ``m + s (log u - log(1 - u))`` with
    ``u ~ U[1e-6, 1 - 1e-6]``; it is finite while ``exp(log_scale)`` is.
    """

    @_jit_method
    def log_prob(self, params: ArrayLike, x: ArrayLike) -> Array:
        """Log density ``(...)`` at ``x`` ``(...)``."""
        mean, log_scale = self.split_params(params)
        z = _standardize(jnp.asarray(x, dtype=mean.dtype), mean, log_scale)
        # Symmetric form of -z - log s - 2 softplus(-z); finite for any finite z.
        return jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z) - log_scale

    def noise(self, rng: Array, shape: tuple[int, ...]) -> Array:
        """Standard logistic noise ``shape``."""
        return _logistic_noise(rng, shape)

    def entropy(self, params: ArrayLike) -> Array:
        """Entropy in nats ``(...)``."""
        return logistic_entropy(self.split_params(params)[1])


# ------------------------------------------------------------------------- factory

_FAMILIES: dict[str, type] = {
    "mulaw": MuLawCategorical,
    "mol": DiscretizedMixtureOfLogistics,
    "gaussian": Gaussian,
    "logistic": Logistic,
}


def get_distribution(name: str, **kwargs) -> Distribution:
    """Builds a family by name: ``'mulaw'``, ``'mol'``, ``'gaussian'`` or ``'logistic'``.

    ``kwargs`` go to the family's constructor (e.g. ``num_mixtures=10`` for ``'mol'``).

    Raises:
      ValueError: for any other name; the message lists the valid ones.
    """
    try:
        family = _FAMILIES[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in _FAMILIES)
        raise ValueError(f"unknown distribution {name!r}; valid names are {valid}") from None
    return family(**kwargs)
