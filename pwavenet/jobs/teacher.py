"""The WaveNet teacher's training job: data, model and loss plugged into `training.fit`.

Loss: the mean negative log-likelihood of the crop's samples under the model's per-step
output distribution, -1/T sum_t log p(x_t | x_<t, mel, speaker), in nats per sample
(bits per sample = nats / ln 2). For the discrete families (16-bit MoL, mu-law) it is a true
code length; for the Gaussian it is a continuous density's and may go negative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from pwavenet import evaluation, training
from pwavenet.data import pipelines
from pwavenet.jobs import mel_stats
from pwavenet.models import builders, losses, wavenet


def make_job(config: ml_collections.ConfigDict, model: wavenet.WaveNet) -> training.Job:

    datasets = pipelines.create_datasets(config)

    noise_level = float(config.train.input_noise)

    def loss_fn(params, batch, rngs):
        if not noise_level:
            return losses.nll_metrics(model, config, params, batch)
        return losses.nll_metrics(
            model, config, params, batch, audio_in=noisy_input(rngs, batch["audio"], noise_level)
        )

    def eval_fn(params, batch):
        return losses.nll_metrics(model, config, params, batch)[1]

    summaries = evaluation.audio_summaries(
        config,
        "generated",
        lambda params, utterances, rng: evaluation.generate_for(
            model, config, params, utterances, rng
        ),
    )

    return training.Job(
        init_params=lambda rng: builders.init_teacher_params(model, config, rng),
        loss_fn=loss_fn,
        train_batches=datasets.train_from,
        eval_fn=eval_fn,
        eval_batches=lambda: datasets.eval(config.train.eval_batches),
        summaries=summaries,
        samples_per_example=config.data.crop_samples,
    )


def noisy_input(rngs, audio, level: float):
    """audio (B, T) plus Gaussian noise of standard deviation `level` times each crop's RMS,
    crop b's noise from rngs[b], clipped to [-1, 1]: what the teacher reads as its past under
    noise injection."""
    rms = jnp.sqrt(jnp.mean(jnp.square(audio), axis=-1, keepdims=True))
    noise = jax.vmap(lambda key: jax.random.normal(key, audio.shape[1:], audio.dtype))(rngs)
    return jnp.clip(audio + noise * (level * rms), -1.0, 1.0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains the teacher in `workdir` (resuming if it has checkpoints; else starting from
    config.init_from's weights when set). Refused (training.WorkdirInUse) while another job
    trains in `workdir`."""
    with training.workdir_lock(workdir):
        training.check_workdir_config(config, workdir, sections=("mel",))  # before stats
        mel_stats.prepare(config, workdir)
        training.check_workdir_config(config, workdir, sections=("model", "mel"))
        training.check_init_from(config)
        model = builders.build_teacher(config)
        return training.fit(config, workdir, make_job(config, model))
