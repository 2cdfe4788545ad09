"""Two-dimensional benchmarks for the flow toolkit.

Data sets for maximum-likelihood density estimation (generated in code from a seed, so a run
is reproducible with nothing downloaded) and the four unnormalised energies U1..U4 of
Rezende and Mohamed (2015, Table 1) for reverse-KL fitting.

U2, U3 and U4 are constant along z1 outside their wiggles, so exp(-U) has infinite mass on
R^2. Every energy here is therefore confined by a quadratic wall that is exactly zero inside
the plotting window [-4, 4]^2 (where the paper draws them) and grows as
0.5 * (distance outside / 0.1)^2 beyond it. Inside the window the targets are the paper's; the
wall makes log Z finite, so the reported KL(q || p) is a true divergence (>= 0).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

DATASETS = ("moons", "rings", "gmm", "checkerboard")
ENERGIES = ("U1", "U2", "U3", "U4")
WINDOW = 4.0  # the energies' plotting window is [-WINDOW, WINDOW]^2
WALL_WIDTH = 0.1


def sample_dataset(name: str, n: int, seed: int) -> np.ndarray:
    """n points of a named 2-D data set, float32 (n, 2), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    if name == "moons":
        upper = rng.random(n) < 0.5
        t = rng.uniform(0.0, math.pi, n)
        x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        pts = np.stack([x - 0.5, y - 0.25], -1) + 0.08 * rng.standard_normal((n, 2))
    elif name == "rings":
        radius = rng.choice([1.0, 2.0, 3.0], n, p=[1 / 6, 2 / 6, 3 / 6])  # uniform per unit length
        angle = rng.uniform(0.0, 2 * math.pi, n)
        pts = radius[:, None] * np.stack(
            [np.cos(angle), np.sin(angle)], -1
        ) + 0.08 * rng.standard_normal((n, 2))
    elif name == "gmm":
        k = rng.integers(0, 8, n)
        centers = 2.5 * np.stack([np.cos(k * math.pi / 4), np.sin(k * math.pi / 4)], -1)
        pts = centers + 0.25 * rng.standard_normal((n, 2))
    elif name == "checkerboard":
        # Uniform on the dark squares of a 4 x 4 board covering [-2, 2]^2.
        col = rng.integers(0, 4, n)
        row = 2 * rng.integers(0, 2, n) + (col % 2)
        pts = np.stack([col + rng.random(n), row + rng.random(n)], -1) - 2.0
    else:
        raise ValueError(f"Unknown data set {name!r}: config.data.name must be one of {DATASETS}.")
    return pts.astype(np.float32)


def _w1(z):
    return jnp.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z):
    return 3 * jnp.exp(-0.5 * jnp.square((z[..., 0] - 1) / 0.6))


def _w3(z):
    return 3 * jax.nn.sigmoid((z[..., 0] - 1) / 0.3)


def _u1(z):
    radial = 0.5 * jnp.square((jnp.linalg.norm(z, axis=-1) - 2) / 0.4)
    modes = jnp.logaddexp(
        -0.5 * jnp.square((z[..., 0] - 2) / 0.6), -0.5 * jnp.square((z[..., 0] + 2) / 0.6)
    )
    return radial - modes


def _u2(z):
    return 0.5 * jnp.square((z[..., 1] - _w1(z)) / 0.4)


def _u3(z):
    a = z[..., 1] - _w1(z)
    return -jnp.logaddexp(-0.5 * jnp.square(a / 0.35), -0.5 * jnp.square((a + _w2(z)) / 0.35))


def _u4(z):
    a = z[..., 1] - _w1(z)
    return -jnp.logaddexp(-0.5 * jnp.square(a / 0.4), -0.5 * jnp.square((a + _w3(z)) / 0.35))


_PAPER_ENERGIES = {"U1": _u1, "U2": _u2, "U3": _u3, "U4": _u4}


def energy(name: str) -> Callable[[jax.Array], jax.Array]:
    """U(z) for z: (..., 2) -> (...), the paper's energy plus the confining wall."""
    if name not in _PAPER_ENERGIES:
        raise ValueError(f"Unknown energy {name!r}: config.energy.name must be one of {ENERGIES}.")
    paper = _PAPER_ENERGIES[name]

    def confined(z):
        outside = jnp.maximum(jnp.abs(z) - WINDOW, 0.0)
        return paper(z) + 0.5 * jnp.sum(jnp.square(outside / WALL_WIDTH), axis=-1)

    return confined


def log_normalizer(name: str, cells: int = 1600) -> float:
    """log Z = log of the integral of exp(-U) over R^2, by the midpoint rule.

    The wall makes exp(-U) negligible beyond WINDOW + 1 (it is below exp(-50) there), so the
    integral runs over [-(WINDOW + 1), WINDOW + 1]^2. With 1600 cells a side (h = 0.00625) the
    rule's relative error on these smooth targets is far below the Monte Carlo error of any KL
    estimate reported against it.
    """
    u = energy(name)
    half = WINDOW + 1.0
    h = 2 * half / cells
    centers = -half + h * (np.arange(cells) + 0.5)
    total = -np.inf
    # Row blocks keep memory small.
    for start in range(0, cells, 200):
        xx, yy = np.meshgrid(centers[start : start + 200], centers, indexing="ij")
        neg_u = -np.asarray(u(jnp.asarray(np.stack([xx, yy], -1), jnp.float32)), np.float64)
        total = np.logaddexp(total, _logsumexp(neg_u))
    return float(total + 2 * math.log(h))


def _logsumexp(a: np.ndarray) -> float:
    m = np.max(a)
    return float(m + np.log(np.sum(np.exp(a - m))))
