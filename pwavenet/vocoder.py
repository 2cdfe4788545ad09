"""A trained vocoder as a Python object: `load_vocoder(workdir)` -> `Vocoder`.

    vocoder = pwavenet.load_vocoder("runs/espeak/student")
    mel = vocoder.mel(audio)                      # (frames, n_mels), the model's own definition
    x = vocoder.vocode(mel, speaker=3, seed=0)    # (frames * hop,) float32 in [-1, 1]
    for piece in vocoder.stream(frames_as_they_arrive):   # the same audio, chunk by chunk
        play(piece)

Windows. Both models synthesize in pieces of `chunk_frames` mel frames. A piece's program
sees one window of W = left + chunk_frames + right frames of mel (and, for the student, of
noise) around it: `left` frames before the piece (the student's flows' receptive field and the
upsampler's reach; the teacher carries its past in its generation state, so only the reach),
`right` after it (the upsampler's reach). Windows start at max(0, piece start - left); the
frames of a window past the piece's end + right, or past the input's end, are padding, zeroed
and masked out of the upsampler (`ConditioningUpsampler(valid_frames=...)`), so they change
nothing. Every window therefore has the same shape: one compiled program per batch size,
whatever the input's length (short inputs are padded to one window), and memory is bounded by
the window, not the input. The teacher's cached generation (a scan over samples) carries its
layer caches and last sample from piece to piece; the student's synthesis filter (if any)
carries its last lpc_order samples. The result equals one pass over the whole mel (tests
check it against `iaf.forward` and the teacher's teacher forcing).

Noise. Item b of a batch vocoded with `seed` uses the noise of a single utterance vocoded with
seed + b, and the noise of mel frame f is drawn from `fold_in(PRNGKey(seed + b), f)`: the
student's (hop,) base noise z, or the teacher's per-step noise for its `hop` steps
(`distribution.noise`). It depends on neither the input's length nor the batch, so `stream`
(which never knows the length) equals `vocode`, and batched equals single.

Streaming. `stream` emits piece k once the frames up to its end + `right` have arrived (or
the input has ended): the look-ahead is `lookahead_frames` = chunk_frames + right frames. It
runs the same programs on the same windows as `vocode`, so the pieces concatenate to the same
audio, sample for sample.

Pulses. A student with model.excitation='pulses' adds a pulse train at an F0 and voicing
from the mel; each piece continues the pulses' phase where the one before ended (the state
carries it). With the learned pitch predictor (model.pitch_source='learned') the contour of a
sample reads a bounded context, which the windows' context covers: such a student streams like
any other. The hand-made estimate (model.pitch_source='estimate') reads the whole utterance (a
pitch prior 120 frames either way, voicing levels against the loudest frame): `vocode`
computes its contour over the whole mel first (linear in its length) and gives each piece its
slice, and `stream` refuses such a student.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pwavenet import audio, training
from pwavenet.models import builders, generation, iaf, synthesis

Array = jax.Array

MODELS = ("student", "teacher")


def load_vocoder(
    workdir: str,
    step: int | None = None,
    *,
    model: str | None = None,
    chunk_frames: int | None = None,
) -> Vocoder:
    """The vocoder trained in `workdir` (a teacher's or a student's), with its EMA weights and
    saved config; or the one a bundle holds.

    Args:
      workdir: a training job's workdir (launch.train_teacher or launch.distill), or a bundle
        file (python -m launch.export --format=bundle; pwavenet.training.bundle).
      step: the checkpoint step of the workdir's own model; the latest if None (a bundle holds
        one step: a step is refused there).
      model: 'student' or 'teacher'; default: the workdir's own model. 'teacher' on a
        student's workdir loads the teacher it was distilled from (its latest checkpoint;
        a `step` is refused there: pass the teacher's own workdir to choose its step). The
        teacher is found relative to the student's workdir first, then at its saved path
        (`training.student_teacher_workdir`); a student's bundle holds its teacher.
      chunk_frames: mel frames per piece (`Vocoder`); default `default_chunk_frames`.
    """

    if training.is_bundle(workdir):
        return _load_bundle(workdir, step, model, chunk_frames)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(
            f"{workdir!r} does not exist: pass the --workdir of a trained teacher "
            "(python -m launch.train_teacher) or student (python -m launch.distill), or a "
            "bundle (python -m launch.export --format=bundle)."
        )
    config = training.load_config(workdir)
    model = _chosen_model(workdir, config, model)
    if model == "teacher" and training.is_student_config(config):
        if step is not None:
            raise ValueError(
                f"step={step} with model='teacher' on the student's workdir {workdir}: a step "
                "names one of the student's checkpoints, and its teacher loads its latest; to "
                f"choose the teacher's step, pass its workdir ({config.teacher_workdir}) instead."
            )
        teacher = training.load_teacher(training.student_teacher_workdir(config, workdir))
        return Vocoder(teacher.config, teacher.params, chunk_frames=chunk_frames)
    params, _ = training.restore_params(workdir, step, ema=True)
    return Vocoder(config, params, chunk_frames=chunk_frames)


def _chosen_model(path: str, config, model: str | None, what: str = "workdir") -> str:
    """`model`, or the saved model's own kind by default; refuses a student on a teacher."""
    is_student = training.is_student_config(config)
    model = model or ("student" if is_student else "teacher")
    if model not in MODELS:
        raise ValueError(f"model={model!r}; expected one of {MODELS}.")
    if model == "student" and not is_student:
        raise ValueError(
            f"{path} is a teacher's {what}; use model='teacher', or pass a student's "
            f"{what} (python -m launch.distill)."
        )
    return model


def _load_bundle(path: str, step, model, chunk_frames) -> Vocoder:
    """`load_vocoder` of a bundle file."""
    bundle = training.read_bundle(path)
    saved_step = bundle.description["step"]
    if step is not None and step != saved_step:
        raise ValueError(
            f"step={step}, but the bundle {path} holds step {saved_step} only; pass step=None, "
            "or the workdir it came from to choose another step."
        )
    model = _chosen_model(path, bundle.config, model, "bundle")
    if model == "teacher" and training.is_student_config(bundle.config):
        if bundle.teacher is None:
            raise ValueError(f"the student's bundle {path} holds no teacher.")
        return Vocoder(*bundle.teacher, chunk_frames=chunk_frames)
    return Vocoder(bundle.config, bundle.params, chunk_frames=chunk_frames)


def build_model(config: ml_collections.ConfigDict):
    """The WaveNet teacher or IAF student a job config describes (a student's config names
    its teacher_workdir)."""

    if training.is_student_config(config):
        return builders.build_student(config)
    return builders.build_teacher(config)


def default_chunk_frames(left: int) -> int:
    """Frames per piece: four times the left context (so that recomputing the context costs
    at most a quarter of a window), at least 64, rounded up to a multiple of 16."""
    frames = max(64, 4 * left)
    return -(-frames // 16) * 16


class Vocoder:
    """Audio from log-mels with a teacher or student, in bounded memory.

    Attributes:
      config: the job config the model was trained with (`mel` holds its mel definition).
      variables: {'params': the model's parameters}.
      model: the `wavenet.WaveNet` teacher or `iaf.IAFStudent`.
      kind: 'teacher' or 'student'.
      sample_rate, hop_length, n_mels, num_speakers: from the config.
      chunk_frames: mel frames each piece synthesizes.
      context: (left, right) frames of mel each piece's window holds around it.
      lookahead_frames: frames `stream` needs past a piece's start before emitting it.
    """

    def __init__(self, config: ml_collections.ConfigDict, params, *, chunk_frames=None):
        self.config = config
        self.model = build_model(config)
        self.kind = "student" if isinstance(self.model, iaf.IAFStudent) else "teacher"
        # A student with pulses from the hand-made pitch estimate gets the contour for the whole
        # mel first (`vocode`), each piece its slice; `stream` cannot.
        self._pulses = (
            self.kind == "student" and self.model.has_pulses and not self.model.learned_pitch
        )
        if not config.model.n_mels:
            raise ValueError(
                "this model has no mel conditioning (model.n_mels=0), so it cannot vocode; "
                "train one with a mel (the configs' default)."
            )
        params = jax.device_put(params)
        # A parameter tree, or a variables dict {'params': ...} (no submodule is named 'params').
        self.variables = params if set(params) == {"params"} else {"params": params}
        self.sample_rate = int(config.mel.sample_rate)
        self.hop_length = int(self.model.hop_length)
        self.n_mels = int(config.model.n_mels)
        self.num_speakers = int(config.model.num_speakers)
        reach = config.model.upsample_kernel_multiple * len(config.model.upsample_strides)
        if self.kind == "student":
            left, right = iaf.chunk_context(self.model)
        else:
            left, right = reach, reach
        self.context = (int(left), int(right))
        self.chunk_frames = int(chunk_frames or default_chunk_frames(left))
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames}: use a count >= 1 (or None).")
        self.window_frames = left + self.chunk_frames + right
        self.lookahead_frames = self.chunk_frames + right
        step = iaf.student_window if self.kind == "student" else generation.teacher_window
        # One jitted program per vocoder: it compiles once per batch size (its cache size is
        # the number of shapes it has seen).
        self._window = jax.jit(functools.partial(step, self.model, chunk=self.chunk_frames))
        if self._pulses:
            self._excitation = jax.jit(
                lambda variables, mel: self.model.apply(
                    variables, mel, method=iaf.IAFStudent.excitation_inputs
                )[2:]  # (F0, voicing)
            )

    # ------------------------------------------------------------------ features

    def mel(self, x: np.ndarray) -> np.ndarray:
        """The model's own log-mel of audio: x (T,) -> (T // hop, n_mels), or (B, T) ->
        (B, T // hop, n_mels); float32 audio in [-1, 1] at `sample_rate`. The T % hop trailing
        samples of a partial frame serve as context only, so vocoding the mel gives
        (T // hop) * hop samples."""
        x = np.asarray(x, np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2):
            raise ValueError(f"audio of shape {x.shape}; expected (samples,) or (batch, samples).")
        frames = x.shape[-1] // self.hop_length
        if frames < 1:
            raise ValueError(
                f"{x.shape[-1]} samples is less than one mel frame ({self.hop_length} samples)."
            )
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argmax(bad.reshape(-1, x.shape[-1]).any(axis=0)))
            raise ValueError(
                f"the audio has {int(bad.sum())} NaN or infinite samples (the first at sample "
                f"{first}, {first / self.sample_rate:.3f} s); audio must be finite, in [-1, 1]."
            )
        x = x.reshape(-1, x.shape[-1])
        mel = np.asarray(audio.log_mel_spectrogram(x, self.config.mel), np.float32)
        return mel[0] if single else mel

    def noise(self, frames: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
        """The student's base noise `vocode` uses for `frames` mel frames: (frames * hop,), or
        (batch, frames * hop) for a batch (item b drawn with seed + b). `iaf.forward` (or an
        exported synthesis, pwavenet.jobs.export) on this noise gives `vocode`'s audio."""
        if self.kind != "student":
            raise ValueError("noise(): only the student's synthesis is a function of base noise.")
        keys = _keys(seed, batch or 1)
        z = synthesis.frame_noise(self.model.sample_base, keys, jnp.arange(frames), self.hop_length)
        z = np.asarray(z).reshape(batch or 1, frames * self.hop_length)
        return z if batch is not None else z[0]

    # ------------------------------------------------------------------ synthesis

    def vocode(
        self, mel, speaker=None, seed: int = 0, *, input_stats=None, mel_layout=None
    ) -> np.ndarray:
        """Audio from a log-mel in the model's definition.

        Args:
          mel: (frames, n_mels) or (batch, frames, n_mels); with mel_layout='bands_first',
            (n_mels, frames) or (batch, n_mels, frames).
          speaker: multi-speaker models: an id, or (batch,) ids; None means speaker 0.
          seed: noise seed; item b of a batch uses seed + b (see the module docstring).
          input_stats: the mel is mean-variance normalized with these statistics (a TTS
            model's stats file: PWG's stats.h5, ESPnet2's feats_stats.npz, .npz or .npy, see
            pwavenet.audio.load_mel_stats; or a (mean, scale) pair): it is de-normalized
            first. A model trained with mel.normalization='meanvar' then normalizes it with
            its own statistics. The features must otherwise be in the model's definition
            (its log base included: PWG's and ESPnet's are log10).
          mel_layout: 'frames_first' (the default) or 'bands_first' (HiFi-GAN's .npy files).

        Returns:
          float32 (frames * hop,) or (batch, frames * hop), clipped to [-1, 1].
        """
        mel = as_model_mel(mel, self.n_mels, input_stats=input_stats, mel_layout=mel_layout)
        mel, single = self._check_mel(mel)
        batch, total = mel.shape[:2]
        speakers = self._speakers(speaker, batch)
        keys = _keys(seed, batch)
        state = self._initial_state(batch)
        excitation = self._whole_excitation(mel)
        pieces = []
        for start in range(0, total, self.chunk_frames):
            piece, state = self._piece(
                mel, 0, total, start, speakers, keys, state, self._slice(excitation, start)
            )
            pieces.append(piece)
        x = np.concatenate(pieces, axis=1)[:, : total * self.hop_length]
        return x[0] if single else x

    def stream(
        self, frames: Iterable[np.ndarray], speaker=None, seed: int = 0, *, input_stats=None
    ) -> Iterator[np.ndarray]:
        """Audio pieces as mel frames arrive, one utterance.

        `frames` yields arrays of (n, n_mels) (any n >= 0) or single frames (n_mels,). A piece
        of chunk_frames * hop samples (the last one shorter) is yielded as soon as
        `lookahead_frames` frames past its start have arrived, or the input ended. The pieces
        concatenate to `vocode(all frames, speaker, seed)` exactly. A student with
        model.excitation='pulses' cannot stream (its pitch estimate needs the whole mel).
        `input_stats` de-normalizes each block as `vocode`'s does.
        """
        if isinstance(input_stats, (str, os.PathLike)):
            input_stats = audio.load_mel_stats(os.fspath(input_stats))  # read once
        if self._pulses:
            # Its pitch estimate reads the whole mel (a prior 120 frames either way, voicing
            # levels against the loudest frame) and the pulse phase runs from the start.
            raise NotImplementedError(
                "Vocoder.stream does not support model.excitation='pulses' (its pitch estimate "
                "needs the whole mel): use Vocoder.vocode, which computes the pulses over the "
                "whole mel first."
            )
        speakers = self._speakers(speaker, 1)
        keys = _keys(seed, 1)
        state = self._initial_state(1)
        buffer = np.zeros((1, 0, self.n_mels), np.float32)
        offset = 0  # global index of buffer's first frame
        start = 0  # the next piece's first frame
        left = self.context[0]
        for block in frames:
            block = np.asarray(block, np.float32)
            if block.ndim == 1:
                block = block[None]
            if input_stats is not None and block.ndim == 2 and block.shape[1] == self.n_mels:
                block = as_model_mel(block, self.n_mels, input_stats=input_stats)
            if block.ndim != 2 or block.shape[1] != self.n_mels:
                raise ValueError(
                    f"stream: a block of mel frames of shape {block.shape}; expected "
                    f"(frames, {self.n_mels}) or ({self.n_mels},)."
                )
            _check_finite(block)
            buffer = np.concatenate([buffer, block[None]], axis=1)
            while offset + buffer.shape[1] >= start + self.lookahead_frames:
                piece, state = self._piece(buffer, offset, None, start, speakers, keys, state)
                yield piece[0]
                start += self.chunk_frames
                drop = max(0, start - left) - offset  # frames no later window reads
                buffer, offset = buffer[:, drop:], offset + drop
        total = offset + buffer.shape[1]
        while start < total:
            piece, state = self._piece(buffer, offset, total, start, speakers, keys, state)
            yield piece[0, : (min(total, start + self.chunk_frames) - start) * self.hop_length]
            start += self.chunk_frames

    def compiled_programs(self) -> int:
        """How many window programs have been compiled (one per batch size used)."""
        return self._window._cache_size()

    # ------------------------------------------------------------------ internals

    def _whole_excitation(self, mel):
        """An estimated-pitch pulses student's (F0, voicing) contour over the whole mel, each
        (B, samples) padded to whole pieces (F0 with its last value: it divides); None for
        other models."""
        if not self._pulses:
            return None
        f0, voicing = self._excitation(self.variables, jnp.asarray(mel))
        pieces = -(-mel.shape[1] // self.chunk_frames)
        pad = ((0, 0), (0, pieces * self.chunk_frames * self.hop_length - f0.shape[1]))
        return jnp.pad(f0, pad, mode="edge"), jnp.pad(voicing, pad)

    def _slice(self, excitation, start: int):
        """The piece at frame `start`'s samples of `_whole_excitation` (or None)."""
        if excitation is None:
            return None
        n = self.chunk_frames * self.hop_length
        return tuple(
            a[:, start * self.hop_length : start * self.hop_length + n] for a in excitation
        )

    def _piece(self, mel, offset, total, start, speakers, keys, state, excitation=None):
        """(audio (B, chunk_frames * hop), state) of the piece starting at frame `start`;
        `mel` holds frames [offset, offset + mel.shape[1]) of an input of `total` frames
        (None: not known yet, at least start + lookahead_frames); `excitation` is a pulses
        student's (pulses, voicing) for the piece's samples."""
        left, right = self.context
        window_start = max(0, start - left)
        valid_end = start + self.chunk_frames + right
        if total is not None:
            valid_end = min(valid_end, total)
        window = np.zeros((mel.shape[0], self.window_frames, self.n_mels), np.float32)
        valid = valid_end - window_start
        window[:, :valid] = mel[:, window_start - offset : valid_end - offset]
        inputs = synthesis.Window(
            jnp.asarray(window),
            np.int32(valid),
            np.int32(window_start),
            np.int32(start - window_start),
            speakers,
            keys,
            excitation=excitation,
        )
        x, state = self._window(self.variables, state, inputs)
        return np.clip(np.asarray(x), -1.0, 1.0), state

    def _initial_state(self, batch: int):
        return self.model.initial_state(batch)

    def _check_mel(self, mel) -> tuple[np.ndarray, bool]:
        mel = np.asarray(mel, np.float32)
        single = mel.ndim == 2
        if mel.ndim not in (2, 3) or mel.shape[-1] != self.n_mels or mel.shape[-2] < 1:
            raise ValueError(
                f"a mel of shape {mel.shape}; expected (frames, {self.n_mels}) or (batch, "
                f"frames, {self.n_mels}) with frames >= 1: a log-mel in the model's definition "
                "(Vocoder.mel computes it from audio)."
            )
        _check_finite(mel)
        return (mel[None] if single else mel), single

    def _speakers(self, speaker, batch: int):
        if not self.num_speakers:
            if speaker not in (None, 0):
                raise ValueError(
                    f"speaker={speaker!r}, but this model has no speaker conditioning; "
                    "pass speaker=None."
                )
            return None
        ids = np.broadcast_to(np.asarray(0 if speaker is None else speaker), (batch,))
        if ids.dtype.kind not in "iu" or np.any(ids < 0) or np.any(ids >= self.num_speakers):
            raise ValueError(
                f"speaker={speaker!r} is out of range: the model knows {self.num_speakers} "
                f"speakers (integers 0 .. {self.num_speakers - 1})."
            )
        return jnp.asarray(ids, jnp.int32)


MEL_LAYOUTS = ("frames_first", "bands_first")


def as_model_mel(mel, n_mels: int, *, input_stats=None, mel_layout=None) -> np.ndarray:
    """A user's mel as `vocode` takes it: (..., frames, n_mels), de-normalized.

    mel_layout 'bands_first' swaps the last two axes; None or 'frames_first' keeps them, and a
    mel whose last axis is not n_mels but whose one before is gets an error that says to pass
    mel_layout='bands_first'. input_stats (a stats file's path or a (mean, scale) pair,
    pwavenet.audio.load_mel_stats) de-normalizes: mel * scale + mean per band."""
    mel = np.asarray(mel, np.float32)
    if mel_layout not in (None, *MEL_LAYOUTS):
        raise ValueError(f"mel_layout={mel_layout!r}; expected one of {MEL_LAYOUTS}.")
    if mel_layout == "bands_first":
        if mel.ndim < 2 or mel.shape[-2] != n_mels:
            raise ValueError(
                f"a mel of shape {mel.shape} with mel_layout='bands_first'; expected "
                f"({n_mels}, frames) or (batch, {n_mels}, frames)."
            )
        mel = np.swapaxes(mel, -1, -2)
    elif mel.ndim >= 2 and mel.shape[-1] != n_mels and mel.shape[-2] == n_mels:
        raise ValueError(
            f"a mel of shape {mel.shape} looks transposed: the model takes (frames, {n_mels}); "
            "pass mel_layout='bands_first' (--mel_layout=bands_first) for (n_mels, frames)."
        )
    if input_stats is not None:
        if isinstance(input_stats, (str, os.PathLike)):
            mean, scale = audio.load_mel_stats(os.fspath(input_stats))
        else:
            mean, scale = (np.asarray(a, np.float32) for a in input_stats)
        if mean.shape != (n_mels,) or scale.shape != (n_mels,):
            raise ValueError(
                f"input_stats={input_stats if isinstance(input_stats, str) else '(mean, scale)'}"
                f" hold {mean.shape[-1] if mean.ndim else 1} bands; the model takes {n_mels}."
            )
        mel = audio.denormalize(mel, mean, scale).astype(np.float32)
    return mel


def _check_finite(mel: np.ndarray) -> None:
    if not np.all(np.isfinite(mel)):
        raise ValueError("the mel contains NaN or infinite values; check the model producing it.")


def _keys(seed: int, batch: int) -> Array:
    """(batch, key) PRNG keys: item b's is PRNGKey(seed + b)."""
    return jax.vmap(jax.random.PRNGKey)(jnp.arange(batch, dtype=jnp.uint32) + np.uint32(seed))


__all__ = ["Vocoder", "build_model", "default_chunk_frames", "load_vocoder"]
