"""Pure train and eval steps, `jax.pmap`ped over local devices with `axis_name='batch'`:
gradients and metrics averaged with `lax.pmean`, optionally in microbatches.

Randomness inside a step is one key per example, `fold_in(fold_in(state.rng, step), i)` for
the example's index i in the global batch: it does not depend on how the batch is split over
devices and hosts, so 8 devices draw what 1 device draws.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pwavenet.training.state import TrainState

__all__ = [
    "value_and_grad_in_microbatches",
    "make_train_step",
    "make_eval_step",
    "shard",
    "first_replica",
    "check_batch_size",
]


PyTree = Any
Batch = dict[str, np.ndarray]


def value_and_grad_in_microbatches(loss_fn: Callable, microbatch_size: int | None = None):
    """`jax.value_and_grad(loss_fn, has_aux=True)` for loss_fn(params, batch, rngs, *rest) ->
    (loss, metrics), computed `microbatch_size` examples at a time under a `lax.scan` (batch
    and rngs split along their leading axis, `rest` passed whole) and averaged over the
    microbatches: for a loss that is a mean over equal-sized examples, the batch's value and
    gradient, with the peak memory and the working set of one microbatch. Small microbatches
    can also be faster on a CPU, where each operation's arrays then fit in the last-level cache
    (docs/benchmarks.md). None or 0, or a size not below the batch: the whole batch at once."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def run(params, batch, rngs, *rest):
        size = rngs.shape[0]
        if not microbatch_size or microbatch_size >= size:
            return grad_fn(params, batch, rngs, *rest)
        if size % microbatch_size:
            raise ValueError(
                f"config.train.microbatch_size={microbatch_size} does not divide the batch "
                f"of {size} examples per device; use a divisor of it, or 0 for the whole batch."
            )
        count = size // microbatch_size
        split = lambda a: a.reshape(count, microbatch_size, *a.shape[1:])  # noqa: E731
        slices = (jax.tree.map(split, batch), split(rngs))
        first = jax.tree.map(lambda a: a[0], slices)
        total = jax.tree.map(
            lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(grad_fn, params, *first, *rest)
        )

        def add(total, microbatch):
            return jax.tree.map(jnp.add, total, grad_fn(params, *microbatch, *rest)), None

        total, _ = jax.lax.scan(add, total, slices)
        return jax.tree.map(lambda a: a / count, total)

    return run


def make_train_step(
    loss_fn: Callable,
    tx,
    schedule,
    ema_decay: float,
    *,
    pmap: bool = True,
    max_skipped_in_a_row: int = 10,
    with_frozen: bool = False,
    microbatch_size: int | None = None,
):
    """Builds the train step.

    A step whose loss or gradient is not finite is skipped (params, EMA and optimizer state
    unchanged) and counted; `skipped_in_a_row` stops counting, and stays, once it reaches
    `max_skipped_in_a_row`, so the loop sees the limit even between its log steps.

    loss_fn(params, batch, rngs) -> (loss, metrics dict), `rngs` holding one PRNG key per
    example of `batch` (see the module docstring). With `with_frozen` the step takes a third
    argument, a tree of frozen arrays (a distillation teacher's parameters), passed on as
    loss_fn(params, batch, rngs, frozen) and never differentiated. With pmap=True the step runs
    on every local device with the batch split along a leading device axis; pmap=False gives the
    same computation on one device (used to check the two agree). `microbatch_size` takes each
    device's batch that many examples at a time (`value_and_grad_in_microbatches`).
    """
    value_and_grad = value_and_grad_in_microbatches(loss_fn, microbatch_size)

    def step(state: TrainState, batch: Batch, frozen=None):
        rng = jax.random.fold_in(state.rng, state.step)
        local = jax.tree.leaves(batch)[0].shape[0]
        first = jax.lax.axis_index("batch") * local if pmap else 0
        rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(first + jnp.arange(local))
        args = (batch, rngs, frozen) if with_frozen else (batch, rngs)
        (loss, metrics), grads = value_and_grad(state.params, *args)
        if pmap:
            grads = jax.lax.pmean(grads, "batch")
            loss, metrics = jax.lax.pmean((loss, metrics), "batch")
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
        # Non-finite guard: a NaN/inf loss or gradient leaves params, EMA and optimizer state
        # exactly as they were; only the step and the skip counters move.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        skipped = 1 - finite.astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            ema_params=keep(ema_params, state.ema_params),
            opt_state=keep(opt_state, state.opt_state),
            skipped_in_a_row=jnp.where(
                state.skipped_in_a_row >= max_skipped_in_a_row,
                state.skipped_in_a_row,
                (state.skipped_in_a_row + 1) * skipped,
            ),
            skipped_total=state.skipped_total + skipped,
        )
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=grad_norm,
            learning_rate=schedule(state.step),
            skipped_in_a_row=new_state.skipped_in_a_row,
            skipped_total=new_state.skipped_total,
        )
        return new_state, metrics

    if pmap:
        return jax.pmap(step, axis_name="batch", donate_argnums=(0,))
    return jax.jit(step, donate_argnums=(0,))


def make_eval_step(metrics_fn: Callable):
    """metrics_fn(params, batch[, frozen]) -> metrics dict, averaged over devices."""

    def step(params, batch, *frozen):
        return jax.lax.pmean(metrics_fn(params, batch, *frozen), "batch")

    return jax.pmap(step, axis_name="batch")


def shard(batch: Batch) -> Batch:
    """(host_batch, ...) -> (local_devices, host_batch // local_devices, ...)."""
    n = jax.local_device_count()
    return jax.tree.map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)


def first_replica(tree: PyTree) -> PyTree:
    """One device's copy of a replicated tree, as numpy, without a cross-device gather."""
    # A pmapped array's shard keeps a leading axis of 1 on some versions; drop it by shape.
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree)


def check_batch_size(global_batch: int) -> int:
    """Returns the per-device batch; the global batch must split evenly over all devices."""
    devices = jax.device_count()
    if global_batch % devices:
        raise ValueError(
            f"config.train.batch_size={global_batch} must be divisible by the number of devices "
            f"({devices} = {jax.process_count()} processes x {jax.local_device_count()} local); "
            f"use a multiple of {devices}."
        )
    return global_batch // devices
