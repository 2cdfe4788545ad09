"""Shared by tests/test_vocoder.py, tests/test_synthesize.py and tests/test_export.py: the tiny
configs' models with random weights, and workdirs written as the training jobs write them."""

import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from configs import student as student_config_lib
from pwavenet import training
from pwavenet import vocoder as vocoder_lib
import student_helpers

N_MELS = 16  # the tiny configs'


def student_config(lpc_order=0, teacher_workdir="unused"):
    """configs/student.py:tiny; lpc_order > 0 adds the synthesis filter (the tiny teacher has
    none)."""
    config = student_config_lib.get_config("tiny")
    config.teacher_workdir = teacher_workdir
    if lpc_order:
        config.model.lpc_order = lpc_order
    return config


def random_params(model, scale, seed=1):
    """Gaussian parameters (student_helpers.random_params) times `scale`: every path live,
    the audio mostly inside (-1, 1) so that clipping hides nothing."""
    hop = model.hop_length
    params = student_helpers.random_params(
        model,
        jnp.zeros((1, 4 * hop)),
        jnp.zeros((1, 4, N_MELS)),
        jnp.zeros((1,), jnp.int32),
        seed=seed,
    )
    return jax.tree.map(lambda a: a * scale, params)


def write_workdir(path, config, params, ema_params):
    """A workdir as the jobs leave it: config.json and a checkpoint (step 7) holding the
    parameters and their EMA."""
    os.makedirs(path)
    training.save_config(config, str(path))
    with ocp.CheckpointManager(os.path.join(path, "checkpoints")) as manager:
        manager.save(7, args=ocp.args.StandardSave({"params": params, "ema_params": ema_params}))
        manager.wait_until_finished()


def write_workdirs(root, teacher_config, teacher_params):
    """(teacher workdir, student workdir, the student's EMA parameters): a teacher with
    `teacher_params` as EMA (zeros as raw weights) and the tiny student distilled from it,
    with random EMA weights (half of them as raw weights), as strings."""
    teacher_dir, student_dir = str(root / "teacher"), str(root / "student")
    zeros = jax.tree.map(jnp.zeros_like, teacher_params)
    write_workdir(teacher_dir, teacher_config, zeros, teacher_params)
    config = student_config(teacher_workdir=teacher_dir)
    ema = random_params(vocoder_lib.build_model(config), 0.5, seed=3)
    write_workdir(student_dir, config, jax.tree.map(lambda a: 0.5 * a, ema), ema)
    return teacher_dir, student_dir, ema


def teacher_config_and_params():
    """configs/teacher.py:tiny (a 3-component MoL, 8 speakers) with random weights whose
    mixture scales are about exp(-4) (weights, means and log-scales are the output's thirds),
    so that samples follow their means rather than fill [-1, 1]."""
    from configs import teacher as teacher_config_lib

    config = teacher_config_lib.get_config("tiny")
    params = random_params(vocoder_lib.build_model(config), 0.3)
    k = config.model.num_mixtures
    params["output"]["bias"] = params["output"]["bias"].at[2 * k :].set(-4.0)
    return config, params


def redrawn(model, step_params, rng, frames, batch):
    """The family's draws from (batch, T, P) parameters with generation's noise, drawn here
    as the synthesis contract documents it (item b's frame f from fold_in(fold_in(rng, b), f),
    hop steps at once), clipped to the audio's range [-1, 1] as generation clips them."""
    hop, dist = model.hop_length, model.distribution
    rows = []
    for b in range(batch):
        key = jax.random.fold_in(rng, b)
        noise = [dist.noise(jax.random.fold_in(key, f), (hop,)) for f in range(frames)]
        rows.append(jax.tree.map(lambda *n: jnp.concatenate(n), *noise))
    noise = jax.tree.map(lambda *r: jnp.stack(r), *rows)
    return jnp.clip(dist.sample_from_noise(step_params, noise), -1.0, 1.0)
