"""What the teacher and the student share in front of their networks: the frozen config, the
conditioning layers (mel upsampler, speaker embedding), the normalized mel the networks read,
and the checks of the inputs against the config."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from pwavenet.models.layers import ConditioningUpsampler

Array = jax.Array

__all__ = ["check_inputs", "conditioning_layers", "freeze_config", "normalized_mel"]


def freeze_config(config) -> ml_collections.FrozenConfigDict:
    if isinstance(config, ml_collections.FrozenConfigDict):
        return config
    if isinstance(config, ml_collections.ConfigDict):
        return ml_collections.FrozenConfigDict(config)
    return ml_collections.FrozenConfigDict(dict(config))



def conditioning_layers(c) -> tuple[nn.Module | None, nn.Module | None]:
    """(mel upsampler, speaker embedding) of a model config, None for each it does not use.

    Shared by the WaveNet and the IAF student, so their `upsampler` subtrees have one layout
    (the distillation job copies the teacher's into the student)."""
    dtype = jnp.dtype(c.dtype)
    upsampler = (
        ConditioningUpsampler(
            strides=tuple(c.upsample_strides),
            kernel_multiple=c.upsample_kernel_multiple,
            dtype=dtype,
        )
        if c.n_mels
        else None
    )
    speaker_embedding = (
        nn.Embed(c.num_speakers, c.speaker_embedding_dim, dtype=dtype) if c.num_speakers else None
    )
    return upsampler, speaker_embedding


def normalized_mel(c, mel: Array) -> Array:
    """The conditioning network's input: (mel - model.mel_mean) / model.mel_scale per band when
    the config holds the training split's statistics (mel.normalization='meanvar'), else the
    log-mel itself. Only the network sees it; linear prediction and pitch read the log-mel."""
    mean, scale = c.get("mel_mean", ()), c.get("mel_scale", ())
    if not len(mean):
        return mel
    if len(mean) != mel.shape[-1] or len(scale) != len(mean):
        raise ValueError(
            f"model.mel_mean and model.mel_scale hold {len(mean)} and {len(scale)} values for a "
            f"mel of {mel.shape[-1]} bands; they must hold one per band."
        )
    return (mel - jnp.asarray(mean, mel.dtype)) / jnp.asarray(scale, mel.dtype)


def check_inputs(model, x_shape: tuple[int, ...] | None, mel, speaker) -> int | None:
    """Checks the conditioning against the config; returns the batch size (None if unknown).

    x_shape (B, T) or None (generation, where T follows from the mel).
    """
    c = model.config
    batch = None
    if x_shape is not None:
        if len(x_shape) != 2:
            raise ValueError(f"WaveNet expects audio of shape (batch, time), got {tuple(x_shape)}")
        batch = x_shape[0]
    if c.n_mels:
        if mel is None:
            raise ValueError(
                f"this WaveNet is conditioned on mel spectrograms (n_mels={c.n_mels}): "
                f"pass mel of shape (batch, frames, {c.n_mels})"
            )
        if mel.ndim != 3 or mel.shape[-1] != c.n_mels:
            raise ValueError(
                f"mel must have shape (batch, frames, n_mels={c.n_mels}), got {mel.shape}"
            )
        if x_shape is not None and x_shape[1] != mel.shape[1] * model.hop_length:
            raise ValueError(
                f"audio of shape {tuple(x_shape)} has {x_shape[1]} samples, but mel of shape "
                f"{tuple(mel.shape)} has {mel.shape[1]} frames x hop {model.hop_length} = "
                f"{mel.shape[1] * model.hop_length} samples; they must be equal"
            )
        if batch is not None and mel.shape[0] != batch:
            raise ValueError(
                f"mel of shape {mel.shape} and audio of shape {tuple(x_shape)} differ in batch size"
            )
        batch = mel.shape[0]
    elif mel is not None:
        raise ValueError(
            f"this WaveNet has no local conditioning (n_mels=0) but a mel of shape "
            f"{mel.shape} was given"
        )
    if c.num_speakers:
        if speaker is None:
            raise ValueError(
                f"this WaveNet is conditioned on speakers (num_speakers="
                f"{c.num_speakers}): pass speaker ids of shape (batch,)"
            )
        if speaker.ndim != 1 or (batch is not None and speaker.shape[0] != batch):
            raise ValueError(
                f"speaker must have shape ({batch if batch is not None else 'batch'},),"
                f" got {speaker.shape}"
            )
        if not jnp.issubdtype(speaker.dtype, jnp.integer):
            raise ValueError(f"speaker ids must be integers, got dtype {speaker.dtype}")
        batch = speaker.shape[0]
    elif speaker is not None:
        raise ValueError(
            f"this WaveNet has no speaker conditioning (num_speakers=0) but speaker "
            f"ids of shape {speaker.shape} were given"
        )
    return batch
