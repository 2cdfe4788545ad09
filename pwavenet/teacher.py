"""The WaveNet teacher's training job: data, model and loss plugged into `train.fit`.

Loss: the mean negative log-likelihood of the crop's samples under the model's per-step
output distribution, -1/T sum_t log p(x_t | x_<t, mel, speaker), in nats per sample
(bits per sample = nats / ln 2). For the discrete families (16-bit MoL, mu-law) it is a true
code length; for the Gaussian it is a continuous density's and may go negative.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pwavenet import audio
from pwavenet import train
from pwavenet import wavenet


def build_model(config: ml_collections.ConfigDict) -> wavenet.WaveNet:
    """The teacher from a job config, after checking it against the mel features."""
    check_model_against_mel(config)
    return wavenet.WaveNet(config.model)


def check_model_against_mel(config: ml_collections.ConfigDict) -> None:
    """The model's upsampling must produce the mel's hop, and its n_mels equal the mel's."""
    hop = int(np.prod(config.model.upsample_strides))
    if config.model.n_mels and hop != config.mel.hop_length:
        raise ValueError(
            f"config.model.upsample_strides={tuple(config.model.upsample_strides)} upsample by "
            f"{hop}, but config.mel.hop_length={config.mel.hop_length}; their product must equal "
            "the hop."
        )
    if config.model.n_mels and config.model.n_mels != config.mel.n_mels:
        raise ValueError(
            f"config.model.n_mels={config.model.n_mels} differs from "
            f"config.mel.n_mels={config.mel.n_mels}."
        )
    preset = audio.mel_preset(config.mel)
    if config.model.get("lpc_order", 0) and preset != "pwavenet":
        raise ValueError(
            f"config.model.lpc_order={config.model.lpc_order} inverts the project's own mel "
            f"definition, but config.mel.preset={preset!r}; set model.lpc_order=0, or use "
            "the 'pwavenet' preset."
        )


def model_inputs(config, batch):
    """(mel, speaker) for the model from a batch, None where the model is unconditioned."""
    mel = batch["mel"] if config.model.n_mels else None
    speaker = batch["speaker"] if config.model.num_speakers else None
    return mel, speaker


def nll_metrics(model, config, params, batch):
    outputs = model.apply({"params": params}, batch["audio"], *model_inputs(config, batch))
    nll = wavenet.negative_log_likelihood(outputs, batch["audio"], model.distribution)
    return nll, {"nll": nll, "bits_per_sample": nll / math.log(2.0)}


def init_params(model, config, rng):
    frames = config.data.crop_samples // config.mel.hop_length
    batch = {
        "audio": jnp.zeros((1, config.data.crop_samples)),
        "mel": jnp.zeros((1, frames, config.mel.n_mels)),
        "speaker": jnp.zeros((1,), jnp.int32),
    }
    return model.init(rng, batch["audio"], *model_inputs(config, batch))["params"]


def evaluate_lib():
    from pwavenet import evaluate  # plotting; imported only when summaries are written

    return evaluate


def audio_summaries(config, name: str, synthesize):
    """A `Job.summaries` that writes audio of validation utterances and a log-mel image.

    synthesize(ema_params, utterances, rng) -> (B, T) audio for the utterances' mels. The
    references are read once, at the first summary, and written beside the first audio.
    """
    references = {}

    def summaries(writer: train.Writer, step: int, ema_params):
        if not references:
            from pwavenet import input_pipeline

            references.update(
                input_pipeline.validation_utterances(
                    config, num_utterances=2, max_seconds=config.train.audio_seconds
                )
            )
            writer.audio(step, "reference", references["audio"], config.mel.sample_rate)
        generated = np.asarray(synthesize(ema_params, references, jax.random.PRNGKey(step)))
        writer.audio(step, name, generated, config.mel.sample_rate)
        writer.image(
            step,
            f"mel/reference_vs_{name}",
            evaluate_lib().mel_comparison_image(config, references["audio"], {name: generated}),
        )

    return summaries


def make_job(config: ml_collections.ConfigDict, model: wavenet.WaveNet) -> train.Job:
    from pwavenet import input_pipeline

    datasets = input_pipeline.create_datasets(config)

    def loss_fn(params, batch, rng):
        del rng  # teacher forcing is deterministic
        return nll_metrics(model, config, params, batch)

    def eval_fn(params, batch):
        return nll_metrics(model, config, params, batch)[1]

    summaries = audio_summaries(
        config,
        "generated",
        lambda params, utterances, rng: evaluate_lib().generate_for(
            model, config, params, utterances, rng
        ),
    )

    return train.Job(
        init_params=lambda rng: init_params(model, config, rng),
        loss_fn=loss_fn,
        train_batches=datasets.train_from,
        eval_fn=eval_fn,
        eval_batches=lambda: datasets.eval(config.train.eval_batches),
        summaries=summaries,
        samples_per_example=config.data.crop_samples,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains the teacher in `workdir` (resuming if it has checkpoints; else starting from
    config.init_from's weights when set)."""
    train.check_workdir_config(config, workdir, sections=("model", "mel"))
    train.check_init_from(config)
    model = build_model(config)
    return train.fit(config, workdir, make_job(config, model))
