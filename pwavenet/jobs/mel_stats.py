"""`mel.normalization`: the per-band statistics a job's model normalizes its mel with.

With mel.normalization='meanvar', the conditioning network sees (log-mel - mean) / scale per
band (pwavenet.models.conditioning.normalized_mel), with the mean and population standard deviation
of the training split's log-mel frames. `prepare(config, workdir)` finds them, in this order:
the workdir's own mel_stats.npz (a resumed run keeps its statistics), the teacher's (a student
normalizes as its teacher does, so a shared upsampler sees the same inputs), config.init_from's
(fine-tuning keeps the statistics the weights learned with), else one pass over the training
split. It writes them to WORKDIR/mel_stats.npz beside config.json and copies them into
config.model.mel_mean / mel_scale, so that the saved config builds the same model. With 'none'
it only checks that the model carries no statistics.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from pwavenet import config_schema
from pwavenet.audio import mel_files
from pwavenet.data import whole_utterances


def _stats_path(workdir: str) -> str:
    return os.path.join(workdir, mel_files.STATS_FILE)


def prepare(config, workdir: str, teacher_workdir: str | None = None) -> None:
    """Sets config.model.mel_mean / mel_scale for config.mel.normalization (module docstring)
    and writes WORKDIR/mel_stats.npz (process 0)."""
    normalization = config_schema.setting(config.mel, "mel.normalization")
    if normalization not in mel_files.NORMALIZATIONS:
        raise ValueError(
            f"mel.normalization={normalization!r}; expected one of {mel_files.NORMALIZATIONS}."
        )
    if normalization == "none":
        if len(config_schema.setting(config.model, "model.mel_mean")):
            raise ValueError(
                "model.mel_mean is set but mel.normalization='none'; leave model.mel_mean and "
                "model.mel_scale empty (the job fills them for mel.normalization='meanvar')."
            )
        return
    own = _stats_path(workdir)
    sources = [own]
    if teacher_workdir:
        sources.append(_stats_path(teacher_workdir))
    elif config_schema.setting(config, "init_from"):
        sources.append(_stats_path(config.init_from))
    found = next((p for p in sources if os.path.isfile(p)), None)
    if found:
        mean, scale = mel_files.load_mel_stats(found)
        logging.info("Mel normalization statistics from %s.", found)
    elif teacher_workdir:
        raise FileNotFoundError(
            f"mel.normalization='meanvar', but the teacher's workdir {teacher_workdir} has no "
            f"{mel_files.STATS_FILE}: distill from a teacher trained with "
            "mel.normalization='meanvar', or set it to 'none' for both."
        )
    else:
        logging.info("Computing mel normalization statistics over the training split.")
        mean, scale, frames = mel_files.compute_mel_stats(whole_utterances.split_mels(config))
        logging.info("Mel normalization statistics from %d frames.", frames)
        if jax.process_index() == 0:
            os.makedirs(workdir, exist_ok=True)
            mel_files.save_mel_stats(own, mean, scale, frames)
    if found and found != own and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        mel_files.save_mel_stats(own, mean, scale, 0)
    if len(mean) != config.mel.n_mels:
        raise ValueError(
            f"{found}: statistics of {len(mean)} bands for mel.n_mels={config.mel.n_mels}."
        )
    config.model.mel_mean = tuple(float(v) for v in mean)
    config.model.mel_scale = tuple(float(v) for v in scale)
