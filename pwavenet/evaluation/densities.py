"""The models as density models of audio: the teacher's validation NLL, its NLL of any audio for
the listening set's mels, the student's NLL of real audio through its sequential inverse, and
the distillation objective's terms on the listening set. Every value is in nats per sample."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import jax_utils

from pwavenet import distillation, training
from pwavenet.data import pipelines
from pwavenet.models import builders, iaf, losses, wavenet

__all__ = [
    "validation_nll",
    "teacher_nll_of",
    "student_nll_of_real_audio",
    "distillation_terms",
]


def validation_nll(model, config, params) -> dict[str, float]:
    """The teacher's NLL over config.train.eval_batches validation batches: {'nll' (nats per
    sample), 'bits_per_sample'}."""
    eval_step = training.make_eval_step(lambda p, b: losses.nll_metrics(model, config, p, b)[1])
    return training.evaluate_metrics(
        eval_step,
        jax_utils.replicate(params),
        pipelines.create_datasets(config, train=False).eval(config.train.eval_batches),
    )


def teacher_nll_of(teacher: training.Teacher, utterances: dict[str, Any]):
    """nll(audio (B, T)) -> the teacher's NLL (nats per sample) of audio for the utterances'
    mels, by teacher forcing."""
    mel, speaker = builders.model_inputs(teacher.config, utterances)
    forced = jax.jit(lambda x: teacher.model.apply({"params": teacher.params}, x, mel, speaker))

    def nll(x):
        return float(
            wavenet.negative_log_likelihood(forced(jnp.asarray(x)), x, teacher.model.distribution)
        )

    return nll


def student_nll_of_real_audio(student, config, params, utterances: dict[str, Any]) -> float:
    """The student's NLL (nats per sample) of the listening set's real audio, through its
    sequential inverse (`iaf.log_prob`): beside the teacher's NLL of the same audio, whether
    distillation left the teacher the better density model of real speech, as it should be."""
    mel, speaker = builders.model_inputs(config, utterances)
    x = jnp.asarray(utterances["audio"])
    return float(-jnp.mean(iaf.log_prob(student, params, x, mel, speaker)) / x.shape[1])


def distillation_terms(
    config, student, params, teacher: training.Teacher, utterances: dict[str, Any], seed: int
) -> dict[str, float]:
    """The distillation objective's terms (KL, cross-entropy, entropy, power loss, ...) on
    the listening set's utterances, each example's noise from PRNGKey(seed + 1)."""
    distiller = distillation.make_distiller(config, student, teacher)
    batch = {k: jnp.asarray(utterances[k]) for k in ("audio", "mel", "speaker")}
    rngs = jax.random.split(jax.random.PRNGKey(seed + 1), utterances["audio"].shape[0])
    terms = jax.jit(lambda p, tp, b, r: distiller.losses(p, tp, b, r)[1])(
        params, teacher.params, batch, rngs
    )
    return {k: float(v) for k, v in terms.items()}
