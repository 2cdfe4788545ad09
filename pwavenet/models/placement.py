"""Where and how a synthesis loop runs: the parameter tree as a variables dict, the cycles'
kernels made loop-invariant for XLA, and the spread of a batch's streams over local devices."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Array = jax.Array

__all__ = ["as_variables", "loop_invariant", "place", "spread_devices"]


def as_variables(params) -> dict:
    """Accepts a parameter tree or a full variables dict {'params': ...}."""
    # No submodule is named 'params', so a tree whose only key is 'params' is a variables dict.
    if isinstance(params, Mapping) and set(params.keys()) == {"params"}:
        return params
    return {"params": params}


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


def place(mesh: Mesh | None, x, batch_axis: int | None):
    """x sharded along `batch_axis` (replicated if None) over `mesh`, inside or outside a jit;
    x itself without a mesh."""
    if mesh is None or x is None:
        return x
    spec = PartitionSpec() if batch_axis is None else PartitionSpec(*[None] * batch_axis, "batch")
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), x)
