"""The teacher's training loss: the negative log-likelihood of a batch's audio given its mel
and speaker, in nats per sample (the student's objective is `pwavenet.distillation`)."""

from __future__ import annotations

import math

from pwavenet.models import builders, wavenet

__all__ = ["nll_metrics"]


def nll_metrics(model, config, params, batch, audio_in=None):
    """(NLL, metrics) of batch["audio"] under the teacher, which reads `audio_in` as the past
    (the audio itself if None; a noisy copy for noise injection). The metrics are the NLL in
    nats per sample and in bits per sample."""
    audio_in = batch["audio"] if audio_in is None else audio_in
    outputs = model.apply({"params": params}, audio_in, *builders.model_inputs(config, batch))
    nll = wavenet.negative_log_likelihood(outputs, batch["audio"], model.distribution)
    return nll, {"nll": nll, "bits_per_sample": nll / math.log(2.0)}
