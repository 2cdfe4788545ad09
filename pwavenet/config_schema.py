"""The job configs' schema: every field's type, valid range and default, and the rules that tie
fields together (the mel's hop and the model's upsampling, the crop and the hop, ...).

`validate(config, kind)` raises ConfigError, a ValueError whose one-line message names the
field, its value and what is valid, e.g.

    config.train.steps=-5: expected an integer >= 1 (training steps).

The launch jobs call it on every config they load (prefix `--config.`), before TensorFlow or
JAX start, so this module imports neither (nor anything else of the package). Library calls
with a config built in code are not checked (a test may well train at learning rate 0).
`setting(section, path)` reads an optional field with the schema's default, for configs saved
before the field existed and sections built in code; `complete` fills them all in.

Adding a field: one entry in its section's table below, as
`"normalization": Choice("none", "none", "meanvar")` in `_MEL`, with its default (the config
file's value); then a rule in `_audio_rules` (or the kind's rules) if it constrains another
field, and its names in the enumeration tuple if the library defines them too.
tests/test_config_schema.py fails for a field of a shipped variant with no entry, refuses every
numeric field of every variant set out of range, and compares the defaults with the config
files' base values and the enumerations with the library's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

KINDS = ("teacher", "student", "flows", "pitch")


class ConfigError(ValueError):
    """A config field with a value outside its valid range; the message names both."""


# ------------------------------------------------------------------------- field kinds


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field: its default, a test of a value, and what the test accepts in words."""

    default: Any
    accepts: Callable[[Any], bool]
    expected: str  # completes "expected ...": "an integer >= 1"
    doc: str = ""
    choices: tuple[str, ...] = ()  # an enumeration's names

    def problem(self, value: Any) -> str | None:
        """None if `value` is valid, else what is expected (with the field's doc)."""
        try:
            ok = self.accepts(value)
        except (TypeError, ValueError):
            ok = False
        if ok:
            return None
        return f"expected {self.expected}" + (f" ({self.doc})" if self.doc else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _bounds_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _within(value, low, high, low_open, high_open) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    if high is not None and (value >= high if high_open else value > high):
        return False
    return True


def Int(default: int, low: int | None = 0, high: int | None = None, doc: str = "") -> Field:
    """An integer in [low, high] (either bound may be None)."""
    return Field(
        default,
        lambda v: _is_int(v) and _within(v, low, high, False, False),
        "an integer" + _bounds_text(low, high, False, False),
        doc,
    )


def Float(
    default: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    doc: str = "",
) -> Field:
    """A finite number in the interval given (open at a bound where *_open)."""
    return Field(
        default,
        lambda v: _is_number(v) and _within(v, low, high, low_open, high_open),
        "a finite number" + _bounds_text(low, high, low_open, high_open),
        doc,
    )


def Positive(default: float, doc: str = "") -> Field:
    """A finite number > 0: learning rates, scales, gains, durations."""
    return Float(default, 0.0, low_open=True, doc=doc)


def Probability(default: float, *, high_open: bool = False, doc: str = "") -> Field:
    """A number in [0, 1] ([0, 1) where high_open: an EMA decay of 1 never moves)."""
    return Float(default, 0.0, 1.0, high_open=high_open, doc=doc)


def Choice(default: str, *choices: str, doc: str = "") -> Field:
    """One of the names given."""
    return Field(
        default,
        lambda v: v in choices,
        "one of " + ", ".join(repr(c) for c in choices),
        doc,
        choices,
    )


def Bool(default: bool, doc: str = "") -> Field:
    return Field(default, lambda v: isinstance(v, bool), "True or False", doc)


def Str(default: str, *, nonempty: bool = False, doc: str = "") -> Field:
    return Field(
        default,
        lambda v: isinstance(v, str) and (bool(v) or not nonempty),
        "a non-empty string" if nonempty else "a string",
        doc,
    )


def Ints(default: tuple[int, ...], low: int = 1, doc: str = "") -> Field:
    """A non-empty sequence of integers >= low."""
    return Field(
        default,
        lambda v: isinstance(v, (tuple, list))
        and len(v) > 0
        and all(_is_int(i) and i >= low for i in v),
        f"a non-empty list of integers >= {low}",
        doc,
    )


def Floats(default: tuple[float, ...], *, positive: bool = False, doc: str = "") -> Field:
    """A tuple of finite floats (each > 0 if `positive`), possibly empty."""
    return Field(
        default,
        lambda v: isinstance(v, (tuple, list))
        and all(_is_number(x) and (x > 0 or not positive) for x in v),
        "a tuple of finite numbers" + (" > 0" if positive else ""),
        doc,
    )


def _is_stft_resolution(r) -> bool:
    return (
        isinstance(r, (tuple, list))
        and len(r) == 3
        and all(_is_int(i) and i >= 1 for i in r)
        and r[2] <= r[0]
    )


def StftResolutions(default, doc: str = "") -> Field:
    """(n_fft, hop, window) triples of positive integers with window <= n_fft."""
    return Field(
        default,
        lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(map(_is_stft_resolution, v)),
        "a non-empty list of (n_fft, hop, window) triples of integers >= 1 with window <= n_fft",
        doc,
    )


def _data_name_ok(name: Any) -> bool:
    # A tfds name may carry a builder config and version: espeak_corpus/small:1.0.0.
    return isinstance(name, str) and name.split("/")[0].split(":")[0] in DATA_SOURCES


FLOW_LAYERS = ("planar", "affine", "elementwise", "sigmoid")


def _flow_layers_ok(spec: Any) -> bool:
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    for token in tokens:
        name, star, count = token.partition("*")
        if name not in FLOW_LAYERS or (star and not (count.isdigit() and int(count) >= 1)):
            return False
    return bool(tokens)


# -------------------------------------------------------- the names of enumerations

# Each is also defined where it is used; tests/test_config_schema.py checks they agree.
DATA_SOURCES = ("espeak_corpus", "wav_folder", "kaldi_dir", "ljspeech", "vctk")
MEL_PRESETS = ("pwavenet", "hifigan", "espnet")
TEACHER_OUTPUTS = ("mol", "gaussian", "logistic", "mulaw")
DTYPES = ("float32", "bfloat16", "float16")
FLOW_DATASETS = ("moons", "rings", "gmm", "checkerboard")
FLOW_ENERGIES = ("U1", "U2", "U3", "U4")

# ---------------------------------------------------------------------------- sections

_MEL = {
    "preset": Choice("pwavenet", *MEL_PRESETS, doc="the log-mel definition"),
    "sample_rate": Int(22050, 1, doc="Hz"),
    "n_fft": Int(1024, 1),
    "win_length": Int(1024, 1),
    "hop_length": Int(256, 1, doc="samples per mel frame"),
    "n_mels": Int(80, 1),
    "fmin": Float(0.0, 0.0, doc="Hz"),
    "fmax": Float(8000.0, 0.0, low_open=True, doc="Hz"),
    "log_floor": Positive(1e-5, doc="log(max(mel, floor))"),
    "log_base": Field(
        0.0, lambda v: _is_number(v) and (v == 0 or v > 1), "0 or a number > 1",
        "0: the preset's; e.g. 10 for log10 features",
    ),
    "from_file": Str("", doc="a TTS project's feature config, pwavenet.audio.mel_files"),
    "normalization": Choice("none", "none", "meanvar"),
}

_DATA = {
    "name": Field(
        "espeak_corpus",
        _data_name_ok,
        "a data set named " + ", ".join(DATA_SOURCES) + " (optionally /config:version)",
    ),
    "data_dir": Str(""),
    "manual_dir": Str(""),
    "train_split": Str("train", nonempty=True),
    "eval_split": Str("validation", nonempty=True),
    "crop_samples": Int(7680, 1, doc="a multiple of mel.hop_length"),
    "shuffle_buffer": Int(512, 1),
    "bad_audio": Choice("skip", "skip", "fail"),
    "mel_source": Choice("audio", "audio", "file"),
    "mel_length_tolerance": Int(2, 0, doc="frames"),
    "mel_length_policy": Choice("fail", "fail", "skip", "trim"),
}

_EVAL = {
    "num_utterances": Int(2, 1, doc="the listening set"),
    "max_seconds": Positive(2.0),
    "quality_utterances": Int(0, 0, doc="0: the whole split"),
    "quality_max_seconds": Float(0.0, 0.0, doc="0: whole utterances"),
    "batch_size": Int(8, 1),
}

_TRAIN = {
    "batch_size": Int(8, 1, doc="global, over all devices"),
    "microbatch_size": Int(0, 0, doc="0: the device's whole batch"),
    "steps": Int(200_000, 1, doc="training steps"),
    "learning_rate": Positive(1e-3),
    "warmup_steps": Int(1000, 0),
    "decay_steps": Int(0, 0, doc="0: train.steps"),
    "end_learning_rate_fraction": Probability(0.05),
    "grad_clip": Positive(1.0, doc="global gradient norm"),
    "max_skipped_in_a_row": Int(10, 1),
    "ema_decay": Probability(0.9999, high_open=True),
    "log_every": Int(100, 1, doc="steps"),
    "eval_every": Int(2000, 1, doc="steps"),
    "eval_batches": Int(4, 1),
    "checkpoint_every": Int(2000, 1, doc="steps"),
    "keep_checkpoints": Int(3, 1),
    "audio_every": Int(10_000, 1, doc="steps"),
    "audio_seconds": Positive(1.0),
}

_RUN = {
    "variant": Str(""),
    "seed": Int(0, 0),
    "init_from": Str("", doc="a workdir to fine-tune from"),
    "init_from_ema": Bool(True),
}

# Fields the teacher's WaveNet and the student's flows share.
_NETWORK = {
    "layers_per_cycle": Int(10, 1),
    "kernel_size": Int(3, 2),
    "residual_channels": Int(64, 1),
    "gate_channels": Field(
        128, lambda v: _is_int(v) and v >= 2 and v % 2 == 0, "an even integer >= 2",
        "halves for tanh and sigmoid",
    ),
    "skip_channels": Int(64, 1),
    "n_mels": Int(80, 0, doc="0: no mel conditioning"),
    "upsample_strides": Ints((16, 16), 1, doc="their product is mel.hop_length"),
    "upsample_kernel_multiple": Int(2, 1),
    "num_speakers": Int(0, 0, doc="0: no speaker embedding"),
    "speaker_embedding_dim": Int(16, 1),
    "lpc_order": Int(0, 0, doc="0: no linear prediction"),
    "lpc_lag_window_hz": Float(0.0, 0.0),
    "lpc_noise_floor": Float(1e-4, 0.0),
    "dtype": Choice("float32", *DTYPES),
    "remat": Bool(False),
    # mel.normalization='meanvar': the per-band statistics, set by the job (mel_stats.npz)
    "mel_mean": Floats((), doc="set by the job"),
    "mel_scale": Floats((), positive=True, doc="set by the job"),
}

_TEACHER_MODEL = {
    **_NETWORK,
    "output": Choice("mol", *TEACHER_OUTPUTS),
    "num_mixtures": Int(10, 1),
    "log_scale_min": Float(-9.0),
    "log_scale_max": Float(0.0, doc="gaussian and logistic outputs"),
    "num_cycles": Int(3, 1),
}

_STUDENT_MODEL = {
    **_NETWORK,
    "base": Choice("logistic", "logistic", "gaussian"),
    "flow_layers": Ints((10, 10, 10, 30), 1, doc="layers of each flow"),
    "upsampler": Choice("frozen", "frozen", "fine_tune", "own"),
    "cond_channels": Int(0, 0),
    "init_log_scale": Float(-3.0),
    "flow_log_scale_min": Float(-7.0),
    "flow_log_scale_max": Float(3.0),
    "excitation": Choice("noise", "noise", "pulses"),
    "pulse_gain": Positive(1.0),
    "voiced_noise_gain": Positive(1.0),
    "pitch_source": Choice("estimate", "estimate", "learned", doc="the pulses' F0 and voicing"),
    "pitch_channels": Int(64, 1, doc="the learned pitch predictor's (configs/pitch.py)"),
    "pitch_dilations": Ints((1, 2, 4, 8, 1), 1, doc="the learned pitch predictor's"),
    "pitch_speaker_dim": Int(16, 1, doc="the learned pitch predictor's"),
    "output_init_scale": Positive(0.01),
    "synthesis_chunk": Int(0, 0, doc="samples; 0: one pass"),
}

_DISTILL = {
    "kl": Choice("auto", "auto", "closed_form", "monte_carlo"),
    "num_draws": Int(16, 1),
    "log_scale_min": Float(-7.0),
    "regularizer_weight": Float(4.0, 0.0),
    "kl_weight": Float(1.0, 0.0),
    "power_weight": Float(1.0, 0.0),
    "spectral_weight": Float(0.0, 0.0),
    "stft_resolutions": StftResolutions(((1024, 256, 1024), (512, 128, 512), (256, 64, 256))),
    "voiced_temperature": Positive(1.0),
    "contrastive_weight": Float(0.0, 0.0),
}


def _prefixed(prefix: str, section: dict[str, Field]) -> dict[str, Field]:
    return {f"{prefix}.{name}": field for name, field in section.items()}


def _lpc_mel(fields: tuple[str, ...]) -> dict[str, Field]:
    return {f"model.lpc_mel.{name}": _MEL[name] for name in fields}


TEACHER: dict[str, Field] = {
    **_RUN,
    **_prefixed("mel", _MEL),
    **_prefixed("data", _DATA),
    **_prefixed("model", _TEACHER_MODEL),
    **_lpc_mel(("sample_rate", "n_fft", "n_mels", "fmin", "fmax")),
    **_prefixed("train", _TRAIN),
    "train.input_noise": Float(0.0, 0.0, doc="noise injection, relative to the crop's RMS"),
    **_prefixed("eval", _EVAL),
}

STUDENT: dict[str, Field] = {
    **_RUN,
    "teacher_workdir": Str("", doc="the trained teacher's workdir"),
    "pitch_workdir": Str("", doc="a fitted pitch predictor's workdir (launch.fit_pitch)"),
    **_prefixed("mel", _MEL),
    **_prefixed("data", _DATA),
    **_prefixed("model", _STUDENT_MODEL),
    **_lpc_mel(("sample_rate", "n_fft", "win_length", "n_mels", "fmin", "fmax")),
    **_prefixed("distill", _DISTILL),
    **_prefixed("train", _TRAIN),
    **_prefixed("eval", _EVAL),
}

FLOWS: dict[str, Field] = {
    "variant": Str(""),
    "seed": Int(0, 0),
    "task": Choice("density", "density", "energy"),
    "data.name": Choice("moons", *FLOW_DATASETS),
    "data.num_train": Int(20_000, 1),
    "data.num_test": Int(5_000, 1),
    "energy.name": Choice("U1", *FLOW_ENERGIES),
    "flow.layers": Field(
        "affine,planar*32",
        _flow_layers_ok,
        "comma-separated names from " + ", ".join(FLOW_LAYERS) + ", each optionally *K with "
        "K >= 1 (e.g. 'affine,planar*16')",
    ),
    "flow.learnable_base": Bool(True),
    "flow.box_margin": Float(0.25, 0.0, doc="fraction of the data range"),
    **{
        f"train.{name}": dataclasses.replace(_TRAIN[name], default=default)
        for name, default in (
            ("steps", 4000),
            ("batch_size", 512),
            ("learning_rate", 1e-2),
            ("warmup_steps", 100),
            ("decay_steps", 0),
            ("grad_clip", 10.0),
            ("end_learning_rate_fraction", 0.01),
            ("ema_decay", 0.0),
            ("max_skipped_in_a_row", 10),
            ("log_every", 200),
            ("checkpoint_every", 1000),
            ("keep_checkpoints", 2),
        )
    },
    "train.anneal_steps": Int(0, 0, doc="energy task; 0: no annealing"),
    "eval.num_samples": Int(20_000, 1),
    "eval.grid_cells": Int(200, 2),
}

PITCH: dict[str, Field] = {
    "variant": Str(""),
    "seed": Int(0, 0),
    **_prefixed("mel", _MEL),
    **_prefixed("data", _DATA),
    "pitch.channels": Int(64, 1),
    "pitch.dilations": Ints((1, 2, 4, 8, 1), 1, doc="one residual block each"),
    "pitch.num_speakers": Int(0, 0, doc="0: no speaker embedding"),
    "pitch.speaker_dim": Int(16, 1),
    "pitch.steps": Int(3000, 1),
    "pitch.batch_size": Int(16, 1),
    "pitch.crop_frames": Int(64, 1),
    "pitch.learning_rate": Positive(2e-3),
    "pitch.train_utterances": Int(0, 0, doc="0: the whole training split"),
    "pitch.eval_utterances": Int(0, 0, doc="0: the whole evaluation split"),
}

SCHEMAS = {"teacher": TEACHER, "student": STUDENT, "flows": FLOWS, "pitch": PITCH}

# ------------------------------------------------------------------ rules across fields


def _mel_rules(get: Callable[[str], Any], mel: str) -> Iterator[tuple[str, str]]:
    """(field, problem) for a mel definition's section `mel` (e.g. 'mel', 'model.lpc_mel')."""
    rate, fmin, fmax = get(f"{mel}.sample_rate"), get(f"{mel}.fmin"), get(f"{mel}.fmax")
    if fmax is not None and rate is not None and fmax > rate / 2:
        yield f"{mel}.fmax", f"expected <= {mel}.sample_rate / 2 = {rate / 2} (Nyquist)"
    if fmin is not None and fmax is not None and fmin >= fmax:
        yield f"{mel}.fmin", f"expected < {mel}.fmax = {fmax}"
    n_fft, win = get(f"{mel}.n_fft"), get(f"{mel}.win_length")
    if win is not None and n_fft is not None and win > n_fft:
        yield f"{mel}.win_length", f"expected <= {mel}.n_fft = {n_fft}"


def _audio_rules(get: Callable[[str], Any]) -> Iterator[tuple[str, str]]:
    """(field, problem) for the mel, data and model fields of a teacher or student config."""
    for mel in ("mel", "model.lpc_mel"):
        yield from _mel_rules(get, mel)
    hop, crop = get("mel.hop_length"), get("data.crop_samples")
    if crop % hop:
        near = max(1, round(crop / hop)) * hop
        yield "data.crop_samples", f"expected a multiple of mel.hop_length = {hop} (e.g. {near})"
    if get("data.mel_source") == "file" and not get("data.name").startswith("wav_folder"):
        yield (
            "data.mel_source",
            f"'file' reads each wav's name.npy, which only data.name='wav_folder' stores "
            f"(data.name={get('data.name')!r}); use 'audio'",
        )
    n_mels = get("model.n_mels")
    if n_mels and n_mels != get("mel.n_mels"):
        yield "model.n_mels", f"expected 0 or mel.n_mels = {get('mel.n_mels')}"
    strides = get("model.upsample_strides")
    if n_mels and math.prod(strides) != hop:
        yield (
            "model.upsample_strides",
            f"their product is {math.prod(strides)}; expected mel.hop_length = {hop}",
        )
    order = get("model.lpc_order")
    if order and not n_mels:
        yield "model.lpc_order", "expected 0 when model.n_mels=0 (the predictor needs the mel)"
    if order and get("model.lpc_mel.n_mels") != n_mels:
        yield "model.lpc_mel.n_mels", f"expected model.n_mels = {n_mels}"
    if order and (get("mel.preset") or "pwavenet") != "pwavenet":
        yield "model.lpc_order", "expected 0 with a mel.preset other than 'pwavenet'"
    if get("train.microbatch_size") > get("train.batch_size"):
        yield "train.microbatch_size", f"expected <= train.batch_size = {get('train.batch_size')}"


def _teacher_rules(get) -> Iterator[tuple[str, str]]:
    yield from _audio_rules(get)
    if get("model.log_scale_min") >= get("model.log_scale_max"):
        yield "model.log_scale_max", f"expected > model.log_scale_min = {get('model.log_scale_min')}"
    if get("model.lpc_order") and get("model.output") not in ("mol", "gaussian", "logistic"):
        yield "model.lpc_order", "expected 0 with model.output='mulaw' (no mean to predict)"


def _student_rules(get) -> Iterator[tuple[str, str]]:
    yield from _audio_rules(get)
    low, high = get("model.flow_log_scale_min"), get("model.flow_log_scale_max")
    if low >= high:
        yield "model.flow_log_scale_min", f"expected < model.flow_log_scale_max = {high}"
    else:
        per_flow = get("model.init_log_scale") / len(get("model.flow_layers"))
        if not low < per_flow < high:
            yield (
                "model.init_log_scale",
                f"expected init_log_scale / number of flows = {per_flow} inside "
                f"(model.flow_log_scale_min, model.flow_log_scale_max) = ({low}, {high})",
            )
    if get("model.excitation") == "pulses" and not get("model.lpc_order"):
        yield "model.excitation", "'pulses' needs the synthesis filter: model.lpc_order > 0"
    if get("model.pitch_source") == "learned" and get("model.excitation") != "pulses":
        yield "model.pitch_source", "'learned' sets the pulses' pitch: model.excitation='pulses'"


def _flows_rules(get) -> Iterator[tuple[str, str]]:
    return iter(())


def _pitch_rules(get) -> Iterator[tuple[str, str]]:
    return _mel_rules(get, "mel")


_RULES = {
    "teacher": _teacher_rules,
    "student": _student_rules,
    "flows": _flows_rules,
    "pitch": _pitch_rules,
}

# ------------------------------------------------------------------------------ checks


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.steps': 200000, ...}: every leaf of a ConfigDict (references resolved) or of
    nested dicts."""
    out = {}
    for key in config.keys():
        value = config[key]
        path = f"{prefix}{key}"
        if hasattr(value, "keys"):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def kind_of(config: Any) -> str:
    """'flows', 'student' or 'teacher', from the sections the config has."""
    if "flow" in config:
        return "flows"
    if "pitch" in config:
        return "pitch"
    if "distill" in config:
        return "student"
    return "teacher"


def defaults(kind: str) -> dict[str, Any]:
    """{field path: default} of a config kind."""
    return {path: field.default for path, field in SCHEMAS[kind].items()}


def _shared_defaults() -> dict[str, Any]:
    """{path: default} of the fields whose default is the same in every schema holding them."""
    seen: dict[str, set[str]] = {}
    for schema in SCHEMAS.values():
        for path, field in schema.items():
            seen.setdefault(path, set()).add(repr(field.default))
    return {
        path: field.default
        for schema in SCHEMAS.values()
        for path, field in schema.items()
        if len(seen[path]) == 1
    }


_SHARED_DEFAULTS = _shared_defaults()


def setting(section: Any, path: str) -> Any:
    """The value of field `path` (e.g. 'model.lpc_order') read from `section`, the config's
    section that holds it (e.g. config.model): the section's own value, or the schema's
    default where the section lacks the field (a config saved before it existed, a section
    built in code). The one place such defaults live, instead of `.get(name, default)`."""
    if path not in _SHARED_DEFAULTS:
        raise KeyError(f"{path!r} has no default shared by every config kind in config_schema")
    name = path.rsplit(".", 1)[-1]
    return section[name] if name in section else _SHARED_DEFAULTS[path]


def complete(config: Any, kind: str | None = None) -> Any:
    """Adds every field of the schema that `config` (a ConfigDict) lacks, with its default,
    in place; returns it. For configs saved before a field existed."""
    for path, default in defaults(kind or kind_of(config)).items():
        *sections, name = path.split(".")
        node = config
        for section in sections:
            if section not in node:
                break
            node = node[section]
        else:
            if name not in node:
                node[name] = default
    return config


def pair_problems(
    teacher: Any, student: Any, teacher_prefix: str = "teacher.", student_prefix: str = "student."
) -> list[str]:
    """What a student config contradicts in the teacher config it will distill (the mel
    definition; the upsampler the student shares; a teacher without a mean to distill), one
    message each: `launch.pipeline` checks its two configs before the teacher trains."""
    t, s = flatten(teacher), flatten(student)
    found = []
    for path in sorted(p for p in set(t) | set(s) if p.startswith("mel.")):
        if t.get(path) != s.get(path):
            found.append(
                f"{student_prefix}{path}={s.get(path)!r}: expected the teacher's "
                f"{teacher_prefix}{path}={t.get(path)!r} (the student is distilled on its mels)."
            )
    if s.get("model.upsampler") != "own" and s.get("model.n_mels"):
        for field in ("model.upsample_strides", "model.upsample_kernel_multiple"):
            if repr(t.get(field)) != repr(s.get(field)):
                found.append(
                    f"{student_prefix}{field}={s.get(field)!r}: expected the teacher's "
                    f"{teacher_prefix}{field}={t.get(field)!r} (model.upsampler="
                    f"{s.get('model.upsampler')!r} shares the teacher's upsampler; or set "
                    f"{student_prefix}model.upsampler=own)."
                )
    if t.get("model.output") == "mulaw":
        found.append(
            f"{teacher_prefix}model.output='mulaw': a mu-law teacher cannot be distilled (no "
            "gradient through a categorical); expected 'mol' or 'gaussian'."
        )
    return found


def _message(prefix: str, path: str, value: Any, problem: str) -> str:
    return f"{prefix}{path}={value!r}: {problem}."


def problems(config: Any, kind: str | None = None, prefix: str = "config.") -> list[str]:
    """Every field of `config` outside its range, then every rule across fields it breaks, as
    one message each (empty if it is valid). Fields the schema does not know are left alone;
    a field the config lacks takes its default."""
    kind = kind or kind_of(config)
    schema = SCHEMAS[kind]
    values = flatten(config)
    found = []
    for path, field in schema.items():
        if path in values:
            problem = field.problem(values[path])
            if problem:
                found.append(_message(prefix, path, values[path], problem))
    if found:  # the rules compare values each of which is valid on its own
        return found

    def get(path: str) -> Any:
        if path in values:
            return values[path]
        return schema[path].default if path in schema else None

    for path, problem in _RULES[kind](get):
        found.append(_message(prefix, path, get(path), problem))
    return found


def validate(config: Any, kind: str | None = None, prefix: str = "config.") -> None:
    """Raises ConfigError with the first problem of `problems` (one line; a field linked to
    another, such as model.lpc_mel.sample_rate to mel.sample_rate, is named once)."""
    found = problems(config, kind, prefix)
    if found:
        raise ConfigError(found[0])
