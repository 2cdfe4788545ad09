"""The train state and its optimizer: params, EMA params, optimizer state, step, RNG."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pwavenet import config_schema

__all__ = [
    "TrainState",
    "create_optimizer",
    "create_train_state",
]


PyTree = Any
Batch = dict[str, np.ndarray]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: PyTree
    ema_params: PyTree
    opt_state: PyTree
    rng: jax.Array
    # Non-finite guard: updates skipped in a row now, and in all.
    skipped_in_a_row: jax.Array
    skipped_total: jax.Array


def create_optimizer(train_config: ml_collections.ConfigDict):
    """Adam with linear warmup, cosine decay and global-norm clipping; returns (tx, schedule).

    The schedule spans train.decay_steps (0: train.steps) and holds its end value after it, so
    a run whose train.steps is raised on resume keeps the learning rates it already used when
    decay_steps is set.
    """
    peak = train_config.learning_rate
    decay_steps = config_schema.setting(train_config, "train.decay_steps") or train_config.steps
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        peak,
        train_config.warmup_steps,
        max(decay_steps, train_config.warmup_steps + 1),
        end_value=peak * train_config.end_learning_rate_fraction,
    )
    tx = optax.chain(optax.clip_by_global_norm(train_config.grad_clip), optax.adam(schedule))
    return tx, schedule


def create_train_state(rng: jax.Array, params: PyTree, tx) -> TrainState:
    # The EMA starts as a copy: the step donates the state, and two leaves sharing one buffer
    # cannot both be donated.
    return TrainState(
        skipped_in_a_row=jnp.zeros((), jnp.int32),
        skipped_total=jnp.zeros((), jnp.int32),
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=rng,
    )
