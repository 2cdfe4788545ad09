"""Normalizing flows: affine, elementwise sigmoid and planar layers, chains, and flows.

Every layer is a Flax module with two methods over arrays whose last axis is the event
axis (any leading batch axes):

    forward_and_log_det(u) -> (x, log|det dx/du|)
    inverse_and_log_det(x) -> (u, log|det du/dx|)

`Flow(base, chain)` turns a chain into a density: x = chain(u), u ~ base, and

    log p(x) = log p_base(chain^-1(x)) + log|det d chain^-1(x) / dx|.

Maximum likelihood (density estimation) maximises E_data[log p(x)] and needs every layer's
inverse; reverse-KL fitting of an unnormalised target exp(-U(x)) minimises
E_u[log p_base(u) - log|det dx/du| + U(chain(u))] and needs only the forward pass.

The math, with the constraints that make each layer a bijection:

Affine, x = A u + b. A = P L (U + diag(exp s)) with P a fixed permutation, L unit lower
  triangular and U strictly upper triangular, so A is invertible by construction,
  log|det A| = sum(s) costs O(d), and the inverse is two triangular solves, O(d^2). With a
  Gaussian base u ~ N(mu, sigma^2 I), x ~ N(A mu + b, sigma^2 A A^T): the covariance is
  A A^T, not A.

Sigmoid, x = sigmoid(u) elementwise. Its image is the open cube (0, 1)^d, so data must lie
  strictly inside it: u = logit(x) and log|det du/dx| = -sum_i log(x_i (1 - x_i)). Data on or
  beyond the boundary has zero density under this flow; `inverse_and_log_det` raises a
  ValueError for it (when called outside jit). For data in a box [lo, hi]^d, end the chain
  with `ElementwiseAffine(dim, scale=hi - lo, shift=lo)` after the Sigmoid: the flow then
  maps onto the box and its log-density is in data units.

Planar, f(u) = u + r_hat tanh(w^T u + b). By the matrix determinant lemma
  det(I + h' r_hat w^T) = 1 + h' w^T r_hat, so the log-det is O(d) per layer (O(K d) for K
  layers), not O(d^2). Since 0 < h' <= 1, w^T r_hat > -1 makes a -> a + w^T r_hat tanh(a + b)
  strictly increasing, so f is invertible. It is enforced by
      r_hat = r + (m(w^T r) - w^T r) w / ||w||^2,   m(a) = -1 + softplus(a),
  (note the squared norm: then w^T r_hat = m(w^T r) exactly). The inverse has no closed form:
  a = w^T u solves the monotone scalar equation w^T x = a + w^T r_hat tanh(a + b), which we
  bracket in [w^T x - |w^T r_hat|, w^T x + |w^T r_hat|], bisect and polish with safeguarded
  Newton steps, all vectorised; then u = x - r_hat tanh(a + b). Gradients of the inverse are
  exact implicit-function gradients (one differentiable Newton step at the root).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_unit_cube",
    "Affine",
    "ElementwiseAffine",
    "Sigmoid",
    "constrained_direction",
    "Planar",
    "Chain",
    "GaussianBase",
    "Flow",
]


Array = jax.Array


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_unit_cube(x, where: str = "Sigmoid flow") -> None:
    """Raises ValueError unless every entry of x lies strictly inside (0, 1)."""
    x = np.asarray(x)
    bad = ~((x > 0) & (x < 1))
    if bad.any():
        raise ValueError(
            f"{where}: the sigmoid flow's image is the open unit cube (0, 1)^d, but "
            f"{int(bad.sum())} of {x.size} values lie outside it (min {np.nanmin(x):.6g}, "
            f"max {np.nanmax(x):.6g}). Rescale the data strictly inside (0, 1), or end the "
            "chain with ElementwiseAffine(dim, scale=hi - lo, shift=lo) after the Sigmoid so the "
            "flow maps onto the data's box [lo, hi]."
        )


class Affine(nn.Module):
    """x = A u + b with A = P L (U + diag(exp s)), invertible by construction.

    Attributes:
      dim: event size d.
      permutation_seed: if set, P is a fixed random permutation drawn from this seed (it is
        not trained); otherwise P = I.
      init_scale: standard deviation of the off-diagonal entries of L and U at init.
    """

    dim: int
    permutation_seed: int | None = None
    init_scale: float = 0.1

    def setup(self):
        d = self.dim
        off_diag = nn.initializers.normal(self.init_scale / math.sqrt(max(d, 1)))
        self.lower_raw = self.param("lower", off_diag, (d, d))
        self.upper_raw = self.param("upper", off_diag, (d, d))
        self.log_diag = self.param("log_diag", nn.initializers.zeros, (d,))
        self.shift = self.param("shift", nn.initializers.zeros, (d,))
        if self.permutation_seed is None:
            self.perm = np.arange(d)
        else:
            self.perm = np.random.RandomState(self.permutation_seed).permutation(d)

    def _factors(self):
        d = self.dim
        lower = jnp.tril(self.lower_raw, -1) + jnp.eye(d, dtype=self.lower_raw.dtype)
        upper = jnp.triu(self.upper_raw, 1) + jnp.diag(jnp.exp(self.log_diag))
        return lower, upper

    def matrix(self) -> Array:
        """A, shape (d, d)."""
        lower, upper = self._factors()
        return (lower @ upper)[self.perm]

    def forward_and_log_det(self, u: Array):
        """u: (..., d) -> x = A u + b: (..., d), log|det A| broadcast to (...)."""
        x = u @ self.matrix().T + self.shift
        return x, jnp.broadcast_to(jnp.sum(self.log_diag), x.shape[:-1])

    def inverse_and_log_det(self, x: Array):
        """x: (..., d) -> u = U^-1 L^-1 P^T (x - b), -log|det A|."""
        lower, upper = self._factors()
        batch_shape = x.shape[:-1]
        y = (x - self.shift).reshape(-1, self.dim)
        y = y[:, np.argsort(self.perm)].T  # P^T (x - b), one column per example
        y = jax.scipy.linalg.solve_triangular(lower, y, lower=True, unit_diagonal=True)
        u = jax.scipy.linalg.solve_triangular(upper, y, lower=False)
        u = u.T.reshape(*batch_shape, self.dim)
        return u, jnp.broadcast_to(-jnp.sum(self.log_diag), batch_shape)

    def __call__(self, u):
        return self.forward_and_log_det(u)


class ElementwiseAffine(nn.Module):
    """x = u * scale + shift per coordinate; learnable (log-scale) unless scale/shift given.

    With fixed `scale = hi - lo` and `shift = lo` after a Sigmoid it maps (0, 1)^d onto the
    box [lo, hi], so a sigmoid-terminated chain models data in its own units.
    """

    dim: int
    scale: Sequence[float] | None = None
    shift: Sequence[float] | None = None

    def setup(self):
        if (self.scale is None) != (self.shift is None):
            raise ValueError(
                "ElementwiseAffine: give both scale and shift (fixed) or neither (learnable)."
            )
        if self.scale is None:
            self.log_scale = self.param("log_scale", nn.initializers.zeros, (self.dim,))
            self.offset = self.param("shift", nn.initializers.zeros, (self.dim,))
        else:
            scale = np.asarray(self.scale, np.float32)
            if scale.shape != (self.dim,) or np.any(scale <= 0):
                raise ValueError(
                    f"ElementwiseAffine: fixed scale must be {self.dim} positive numbers, got {scale}."
                )
            self.log_scale = jnp.log(scale)
            self.offset = jnp.asarray(self.shift, jnp.float32)

    def forward_and_log_det(self, u):
        x = u * jnp.exp(self.log_scale) + self.offset
        return x, jnp.broadcast_to(jnp.sum(self.log_scale), x.shape[:-1])

    def inverse_and_log_det(self, x):
        u = (x - self.offset) * jnp.exp(-self.log_scale)
        return u, jnp.broadcast_to(-jnp.sum(self.log_scale), x.shape[:-1])

    def __call__(self, u):
        return self.forward_and_log_det(u)


class Sigmoid(nn.Module):
    """x = sigmoid(u) elementwise; defined for data strictly inside (0, 1)^d."""

    def forward_and_log_det(self, u):
        # log sigmoid'(u) = log sigmoid(u) + log sigmoid(-u), stable for any finite u.
        log_det = jnp.sum(jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u), axis=-1)
        return jax.nn.sigmoid(u), log_det

    def inverse_and_log_det(self, x):
        if _is_concrete(x):
            check_unit_cube(x)
        log_x, log_1mx = jnp.log(x), jnp.log1p(-x)
        return log_x - log_1mx, -jnp.sum(log_x + log_1mx, axis=-1)

    def __call__(self, u):
        return self.forward_and_log_det(u)


def constrained_direction(w: Array, r: Array) -> Array:
    """r_hat with w^T r_hat = -1 + softplus(w^T r) > -1 (note the squared norm)."""
    wr = jnp.dot(w, r)
    return r + (jax.nn.softplus(wr) - 1.0 - wr) * w / jnp.sum(w * w)


class Planar(nn.Module):
    """f(u) = u + r_hat tanh(w^T u + b), invertible through the w^T r_hat > -1 constraint.

    Attributes:
      dim: event size d.
      bisection_steps: bisection iterations of the inverse before Newton polishing (each halves
        the bracket of width 2 |w^T r_hat|; 40 reach float32 resolution from any bracket).
      newton_steps: safeguarded Newton iterations after bisection.
    """

    dim: int
    init_scale: float = 0.1
    bisection_steps: int = 40
    newton_steps: int = 4

    def setup(self):
        init = nn.initializers.normal(self.init_scale)
        self.w = self.param("w", init, (self.dim,))
        self.r = self.param("r", init, (self.dim,))
        self.b = self.param("b", nn.initializers.zeros, ())

    def _log_det_at(self, pre_activation, wr):
        # 1 + h' w^T r_hat with w^T r_hat = -1 + softplus(wr) and h' = 1 - tanh^2 equals
        # tanh^2 + (1 - tanh^2) softplus(wr): a sum of non-negative terms, so no cancellation
        # even when softplus(wr) is tiny (raw w^T r far below -1).
        t2 = jnp.square(jnp.tanh(pre_activation))
        return jnp.log(t2 + (1.0 - t2) * jax.nn.softplus(wr))

    def forward_and_log_det(self, u):
        r_hat = constrained_direction(self.w, self.r)
        pre = u @ self.w + self.b
        x = u + r_hat * jnp.tanh(pre)[..., None]
        return x, self._log_det_at(pre, jnp.dot(self.w, self.r))

    def inverse_and_log_det(self, x):
        w, b = self.w, self.b
        r_hat = constrained_direction(w, self.r)
        c = jnp.dot(w, r_hat)
        target = x @ w  # w^T x = a + c tanh(a + b)

        def residual(a):
            return a + c * jnp.tanh(a + b) - target

        # The root is found on constants; gradients come from the Newton step below instead of
        # from differentiating through the iterations.
        c_, b_, t_ = (jax.lax.stop_gradient(v) for v in (c, b, target))
        a_star = _solve_monotone(
            lambda a: a + c_ * jnp.tanh(a + b_) - t_,
            lambda a: 1.0 + c_ * (1.0 - jnp.square(jnp.tanh(a + b_))),
            t_ - jnp.abs(c_),
            t_ + jnp.abs(c_),
            self.bisection_steps,
            self.newton_steps,
        )
        slope_at_root = 1.0 + c_ * (1.0 - jnp.square(jnp.tanh(a_star + b_)))
        # One differentiable Newton step at the root: its value is a_star (residual ~ 0) and its
        # derivative is the implicit-function derivative -(dg/dtheta) / g'(a_star).
        a = a_star - residual(a_star) / jnp.maximum(slope_at_root, 1e-12)
        pre = a + b
        u = x - r_hat * jnp.tanh(pre)[..., None]
        return u, -self._log_det_at(pre, jnp.dot(w, self.r))

    def __call__(self, u):
        return self.forward_and_log_det(u)


def _solve_monotone(residual, slope, lo, hi, bisection_steps, newton_steps):
    """Root of an increasing scalar function, elementwise, known to lie in [lo, hi]."""
    # Widen by a relative epsilon so rounding in the bracket never excludes the root.
    pad = 1e-6 * (1.0 + jnp.abs(lo) + jnp.abs(hi))
    lo, hi = lo - pad, hi + pad

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = residual(mid) > 0
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, bisection_steps, bisect, (lo, hi))

    def newton(_, state):
        a, lo, hi = state
        g = residual(a)
        lo, hi = jnp.where(g > 0, lo, a), jnp.where(g > 0, a, hi)
        step = a - g / jnp.maximum(slope(a), 1e-12)
        # Stay inside the bracket; fall back to its midpoint where Newton would leave it.
        a = jnp.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
        return a, lo, hi

    a, _, _ = jax.lax.fori_loop(0, newton_steps, newton, (0.5 * (lo + hi), lo, hi))
    return a


class Chain(nn.Module):
    """Composition x = f_K(...f_1(u)); log-dets add, the inverse runs in reverse order."""

    layers: Sequence[nn.Module]

    def forward_and_log_det(self, u):
        log_det = jnp.zeros(u.shape[:-1], u.dtype)
        for layer in self.layers:
            u, ld = layer.forward_and_log_det(u)
            log_det = log_det + ld
        return u, log_det

    def inverse_and_log_det(self, x):
        log_det = jnp.zeros(x.shape[:-1], x.dtype)
        for layer in reversed(self.layers):
            x, ld = layer.inverse_and_log_det(x)
            log_det = log_det + ld
        return x, log_det

    def __call__(self, u):
        return self.forward_and_log_det(u)


class GaussianBase(nn.Module):
    """Isotropic Gaussian N(loc, sigma^2 I), learnable or fixed at N(0, I)."""

    dim: int
    learnable: bool = True

    def setup(self):
        if self.learnable:
            self.loc = self.param("loc", nn.initializers.zeros, (self.dim,))
            self.log_sigma = self.param("log_sigma", nn.initializers.zeros, ())
        else:
            self.loc = jnp.zeros((self.dim,))
            self.log_sigma = jnp.zeros(())

    def log_prob(self, u):
        """u: (..., d) -> (...)."""
        z = (u - self.loc) * jnp.exp(-self.log_sigma)
        return jnp.sum(-0.5 * jnp.square(z) - 0.5 * math.log(2 * math.pi), axis=-1) - (
            self.dim * self.log_sigma
        )

    def sample(self, rng, n: int):
        """(n, d) draws."""
        eps = jax.random.normal(rng, (n, self.dim))
        return self.loc + jnp.exp(self.log_sigma) * eps

    def __call__(self, u):
        return self.log_prob(u)


class Flow(nn.Module):
    """A density p(x) = p_base(u) |det du/dx| with x = chain(u)."""

    base: GaussianBase
    chain: Chain

    def log_prob(self, x):
        """x: (..., d) -> log p(x): (...). Needs every layer's inverse."""
        u, log_det = self.chain.inverse_and_log_det(x)
        return self.base.log_prob(u) + log_det

    def sample(self, rng, n: int):
        """(n, d) samples; forward pass only."""
        x, _ = self.sample_and_log_prob(rng, n)
        return x

    def sample_and_log_prob(self, rng, n: int):
        """(n, d) samples with their log-density, from the forward pass alone (reverse KL)."""
        u = self.base.sample(rng, n)
        x, log_det = self.chain.forward_and_log_det(u)
        return x, self.base.log_prob(u) - log_det

    def __call__(self, x):
        return self.log_prob(x)
