"""Every variant of every config under configs/ builds its model and one training step, as
shapes only (`jax.eval_shape`: traced, never computed), so a broken full-size config fails
here rather than on the accelerator it was written for.

The variants are read from each config's own error for an unknown one ("use one of ..."),
so a variant added there is tested without a change here."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import flows as flows_config
from configs import student as student_config
from configs import teacher as teacher_config
from pwavenet.models import builders, losses
from pwavenet import distillation
from pwavenet.jobs import student as student_job
from pwavenet import training
from pwavenet.flows import fitting
from pwavenet.flows import toy2d


def _variants(config_module) -> list[str]:
    with pytest.raises(ValueError, match="use one of") as info:
        config_module.get_config("no-such-variant")
    names = re.search(r"use one of (.*?)\.?$", str(info.value)).group(1).split(", ")
    assert names and all(names)
    return names


def _batch(config):
    """Shapes of one global batch: audio (B, T), mel (B, T / hop, n_mels), speaker (B,)."""
    b, t, hop = config.train.batch_size, config.data.crop_samples, config.mel.hop_length
    assert t % hop == 0, "crop_samples must be a multiple of the hop"
    return {
        "audio": jax.ShapeDtypeStruct((b, t), jnp.float32),
        "mel": jax.ShapeDtypeStruct((b, t // hop, config.mel.n_mels), jnp.float32),
        "speaker": jax.ShapeDtypeStruct((b,), jnp.int32),
    }


def _step_shapes(config, loss_fn, params, *frozen):
    """(state before, state after, metrics) of one train step of `loss_fn`, as shapes."""
    tx, schedule = training.create_optimizer(config.train)
    step = training.make_train_step(
        loss_fn,
        tx,
        schedule,
        config.train.ema_decay,
        pmap=False,
        with_frozen=bool(frozen),
        microbatch_size=config.train.microbatch_size,
    )
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    state = jax.eval_shape(lambda k, p: training.create_train_state(k, p, tx), key, params)
    new_state, metrics = jax.eval_shape(step, state, _batch(config), *frozen)
    return state, new_state, metrics


def _check_step(state, new_state, metrics):
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state) == jax.tree.map(
        lambda a: (a.shape, a.dtype), state
    )
    assert metrics["loss"].shape == () and metrics["grad_norm"].shape == ()


# Parameters per step of each teacher output family, from the families' definitions.
OUTPUT_PARAMS = {
    "gaussian": lambda c: 2,
    "mulaw": lambda c: 256,
    "mol": lambda c: 3 * c.num_mixtures,
}


def _teacher(variant):
    config = teacher_config.get_config(variant)
    model = builders.build_teacher(config)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    params = jax.eval_shape(lambda k: builders.init_teacher_params(model, config, k), key)
    return config, model, params


@pytest.mark.parametrize("variant", _variants(teacher_config))
def test_every_teacher_variant_builds_its_model_and_training_step(variant):
    config, model, params = _teacher(variant)
    batch = _batch(config)
    outputs = jax.eval_shape(
        lambda p, b: model.apply({"params": p}, b["audio"], *builders.model_inputs(config, b)),
        params,
        batch,
    )
    b, t = batch["audio"].shape
    assert outputs.shape == (b, t, OUTPUT_PARAMS[config.model.output](config.model))
    c = config.model
    layers = (c.kernel_size - 1) * c.num_cycles * (2**c.layers_per_cycle - 1) + 1
    assert model.receptive_field == max(layers, c.lpc_order)

    def loss_fn(params, batch, rngs):
        return losses.nll_metrics(model, config, params, batch)

    _check_step(*_step_shapes(config, loss_fn, params))


@pytest.mark.parametrize("variant", _variants(student_config))
def test_every_student_variant_builds_against_its_teacher_and_distills(variant):
    config = student_config.get_config(variant)
    tconfig, tmodel, tparams = _teacher(variant)
    teacher = training.Teacher(tconfig, tmodel, tparams, 0, "")
    student_job.check_teacher(config, teacher)  # the pair the docstring promises matches
    student = builders.build_student(config)
    assert student.num_flows == len(config.model.flow_layers)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    params = jax.eval_shape(
        lambda k, tp: builders.init_student_params(student, config, k, tp), key, tparams
    )
    distiller = distillation.make_distiller(config, student, teacher)
    batch = _batch(config)
    b, t = batch["audio"].shape
    x, mu, log_s = jax.eval_shape(
        lambda p, z, m, s: student.apply({"params": p}, z, m, s),
        params,
        batch["audio"],
        batch["mel"] if config.model.n_mels else None,
        batch["speaker"] if config.model.num_speakers else None,
    )
    assert x.shape == mu.shape == log_s.shape == (b, t)

    def loss_fn(params, batch, rngs, teacher_params):
        return distiller.losses(params, teacher_params, batch, rngs)

    _check_step(*_step_shapes(config, loss_fn, params, tparams))


def test_every_student_variant_and_no_teacher_variant_is_a_students_config():
    for variant in _variants(student_config):
        assert training.is_student_config(student_config.get_config(variant)), variant
    for variant in _variants(teacher_config):
        assert not training.is_student_config(teacher_config.get_config(variant)), variant


@pytest.mark.parametrize("variant", _variants(flows_config))
def test_every_flows_variant_builds_its_flow_and_training_step(variant):
    config = flows_config.get_config(variant)
    box = (np.full(2, -toy2d.WINDOW, np.float32), np.full(2, toy2d.WINDOW, np.float32))
    flow = fitting.build_flow(config, box)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    params = jax.eval_shape(lambda k: flow.init(k, jnp.zeros((1, 2))), key)
    n = config.train.batch_size
    if config.task == "density":
        toy2d.sample_dataset(config.data.name, 4, 0)  # the data set exists

        def loss_fn(params, x):
            return -jnp.mean(flow.apply(params, x, method=flow.log_prob))

        data = jax.ShapeDtypeStruct((n, 2), jnp.float32)
    else:
        energy = toy2d.energy(config.energy.name)

        def loss_fn(params, rng):
            x, log_q = flow.apply(params, rng, n, method=flow.sample_and_log_prob)
            return jnp.mean(log_q + energy(x))

        data = key
    optimizer = optax.adam(config.train.learning_rate)
    opt_state = jax.eval_shape(optimizer.init, params)

    def step(params, opt_state, data):
        loss, grads = jax.value_and_grad(loss_fn)(params, data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    new_params, _, loss = jax.eval_shape(step, params, opt_state, data)
    assert jax.tree.map(lambda a: a.shape, new_params) == jax.tree.map(lambda a: a.shape, params)
    assert loss.shape == ()
