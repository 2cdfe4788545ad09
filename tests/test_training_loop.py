"""The shared loop's non-finite guard, on a linear model small enough to check by hand."""

import itertools

from flax import jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pwavenet import training


def _loss(params, batch, rng):
    del rng
    pred = batch["x"] @ params["w"]
    # `poison` turns the loss (and so every gradient) into NaN for that batch.
    loss = jnp.mean((pred - batch["y"]) ** 2) * jnp.where(
        jnp.any(batch["poison"] > 0), jnp.nan, 1.0
    )
    return loss, {}


def _train_config(**overrides):
    c = ml_collections.ConfigDict(
        dict(
            batch_size=8,
            steps=12,
            learning_rate=0.1,
            warmup_steps=0,
            end_learning_rate_fraction=1.0,
            grad_clip=10.0,
            ema_decay=0.5,
            log_every=1,
            eval_every=1000,
            checkpoint_every=4,
            keep_checkpoints=5,
            audio_every=1000,
            max_skipped_in_a_row=3,
        )
    )
    c.update(overrides)
    return c


def _batch(poison, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    return {
        "x": x,
        "y": (x @ np.array([1.0, -2.0, 0.5], np.float32)),
        "poison": np.full((8,), float(poison), np.float32),
    }


def test_a_non_finite_step_leaves_the_state_untouched_and_is_counted():
    config = _train_config()
    tx, schedule = training.create_optimizer(config)
    state = training.create_train_state(jax.random.PRNGKey(0), {"w": jnp.zeros(3)}, tx)
    step = training.make_train_step(_loss, tx, schedule, config.ema_decay, max_skipped_in_a_row=3)
    state = jax_utils.replicate(state)
    state, _ = step(state, training.shard(_batch(0)))  # one real update first: Adam state non-zero
    before = training.first_replica(state)

    state, metrics = step(state, training.shard(_batch(1)))
    after = training.first_replica(state)
    assert not np.isfinite(training.first_replica(metrics)["loss"])
    for name in ("params", "ema_params", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(after, name), getattr(before, name))
    assert (after.step, after.skipped_in_a_row, after.skipped_total) == (2, 1, 1)

    state, _ = step(state, training.shard(_batch(0, seed=1)))
    recovered = training.first_replica(state)
    assert (recovered.skipped_in_a_row, recovered.skipped_total) == (0, 1)
    assert not np.array_equal(recovered.params["w"], after.params["w"])

    # The run counter saturates at the limit instead of resetting, so a loop that only looks
    # every few steps still sees that the limit was reached.
    for _ in range(5):
        state, _ = step(state, training.shard(_batch(1)))
    assert training.first_replica(state).skipped_in_a_row == 3
    state, _ = step(state, training.shard(_batch(0)))
    assert training.first_replica(state).skipped_in_a_row == 3


def test_the_loop_stops_after_too_many_non_finite_steps_and_keeps_finite_checkpoints(tmp_path):
    # Clean for 5 steps (a checkpoint at step 4), then poisoned for good.
    batches = itertools.chain([_batch(0, s) for s in range(5)], itertools.repeat(_batch(1)))
    config = ml_collections.ConfigDict({"seed": 0, "train": _train_config(log_every=4)})
    job = training.Job(
        init_params=lambda rng: {"w": jnp.zeros(3)}, loss_fn=_loss, train_batches=batches
    )
    with pytest.raises(FloatingPointError, match=r"3 training steps in a row .*\(latest: step 4\)"):
        training.fit(config, str(tmp_path), job)
    params, step = training.restore_params(str(tmp_path), ema=False)
    assert step == 4 and np.all(np.isfinite(params["w"])) and np.any(params["w"] != 0)


def _noisy_loss(params, batch, rngs, scale):
    """A mean over examples that uses each example's key and a passed-through argument."""
    noise = jax.vmap(lambda k: jax.random.normal(k, (3,)))(rngs)
    pred = jnp.tanh((batch["x"] + 0.1 * noise) @ params["w"]) * scale
    per_example = (pred - batch["y"]) ** 2
    return jnp.mean(per_example), {"mean_pred": jnp.mean(pred)}


@pytest.mark.parametrize("microbatch_size", [1, 2, 4])
def test_microbatches_give_the_batchs_loss_metrics_and_gradient(microbatch_size):
    batch = {k: jnp.asarray(v) for k, v in _batch(0).items()}
    rngs = jax.random.split(jax.random.PRNGKey(3), 8)
    params = {"w": jnp.asarray([0.3, -0.2, 0.7])}
    whole = jax.value_and_grad(_noisy_loss, has_aux=True)(params, batch, rngs, 1.5)
    split = jax.jit(training.value_and_grad_in_microbatches(_noisy_loss, microbatch_size))(
        params, batch, rngs, 1.5
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), split, whole)
    assert float(jnp.abs(whole[1]["w"]).sum()) > 0


def test_microbatch_sizes_that_do_not_divide_the_batch_are_refused():
    batch = {k: jnp.asarray(v) for k, v in _batch(0).items()}
    rngs = jax.random.split(jax.random.PRNGKey(3), 8)
    run = training.value_and_grad_in_microbatches(_noisy_loss, 3)
    with pytest.raises(ValueError, match=r"microbatch_size=3 does not divide the batch of 8"):
        run({"w": jnp.zeros(3)}, batch, rngs, 1.0)
    # 0, None and sizes of at least the batch take it whole.
    for size in (0, None, 8, 16):
        out = training.value_and_grad_in_microbatches(_noisy_loss, size)(
            {"w": jnp.ones(3)}, batch, rngs, 1.0
        )
        expected = jax.value_and_grad(_noisy_loss, has_aux=True)(
            {"w": jnp.ones(3)}, batch, rngs, 1.0
        )
        jax.tree.map(np.testing.assert_array_equal, out, expected)


def test_the_loop_refuses_a_microbatch_size_that_does_not_divide_a_devices_batch(tmp_path):
    # 32 examples over the 8 test devices: 4 per device, which 3 does not divide.
    workdir = tmp_path / "run"
    config = ml_collections.ConfigDict(
        {"seed": 0, "train": _train_config(batch_size=32, microbatch_size=3)}
    )
    job = training.Job(init_params=lambda rng: {"w": jnp.zeros(3)}, loss_fn=_loss, train_batches=[])
    with pytest.raises(ValueError, match=r"microbatch_size=3 must divide the batch of 4 exa"):
        training.fit(config, str(workdir), job)
    assert not workdir.exists()  # refused before anything was written
