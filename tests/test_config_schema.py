"""The config schema (pwavenet.config_schema): every shipped variant validates, every field of
every variant has an entry, every numeric field refuses a value out of its range by name, the
rules across fields name the field to change, and the enumerations are the library's.

The variants are read from each config's own error for an unknown one, as in test_configs.py,
so a variant added there is walked here without a change."""

import math
import re

import pytest

from configs import flows as flows_config
from configs import pitch as pitch_config
from configs import student as student_config
from configs import teacher as teacher_config
from pwavenet import config_schema as schema

CONFIGS = {
    "teacher": teacher_config,
    "student": student_config,
    "flows": flows_config,
    "pitch": pitch_config,
}


def _variants(config_module) -> list[str]:
    with pytest.raises(ValueError, match="use one of") as info:
        config_module.get_config("no-such-variant")
    return re.search(r"use one of (.*?)\.?$", str(info.value)).group(1).split(", ")


VARIANTS = [(kind, v) for kind, module in CONFIGS.items() for v in _variants(module)]


def _leaves(config, prefix=""):
    """{path: value} of every leaf, walked here rather than with the schema's own flatten."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set(config, path, value):
    *sections, name = path.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[name] = value


def _out_of_range(value):
    """Values no field of that type accepts: every count and size is >= 0, every real number
    finite, and every list of strides, layers or STFT sizes holds positive integers."""
    if isinstance(value, bool) or isinstance(value, str):
        return []
    if isinstance(value, int):
        return [-1]
    if isinstance(value, float):
        return [math.nan, math.inf, -math.inf]
    if isinstance(value, tuple):
        bad = []
        for i, item in enumerate(value):
            for wrong in _out_of_range(item):
                bad.append(value[:i] + (wrong,) + value[i + 1 :])
        return bad
    raise AssertionError(f"a leaf of unexpected type: {value!r}")


@pytest.mark.parametrize(("kind", "variant"), VARIANTS)
def test_every_shipped_variant_validates_and_every_field_has_an_entry(kind, variant):
    config = CONFIGS[kind].get_config(variant)
    assert schema.kind_of(config) == kind
    assert schema.problems(config, kind) == []
    schema.validate(config, kind)
    missing = sorted(set(_leaves(config)) - set(schema.SCHEMAS[kind]))
    assert not missing, f"fields with no entry in pwavenet/config_schema.py: {missing}"


@pytest.mark.parametrize(("kind", "variant"), VARIANTS)
def test_every_numeric_field_out_of_range_is_refused_naming_the_field(kind, variant):
    fields = _leaves(CONFIGS[kind].get_config(variant))
    walked = 0
    for path, value in fields.items():
        for wrong in _out_of_range(value):
            config = CONFIGS[kind].get_config(variant)
            _set(config, path, wrong)
            after = _leaves(config)
            # A field linked to another (model.n_mels to mel.n_mels) changes both: the message
            # may name either of them.
            changed = [p for p in after if repr(after[p]) != repr(fields[p])]
            assert path in changed
            with pytest.raises(schema.ConfigError) as info:
                schema.validate(config, kind)
            message = str(info.value)
            named = [p for p in changed if message.startswith(f"config.{p}={after[p]!r}: ")]
            assert named, (path, wrong, message)
            assert "expected" in message and "\n" not in message
            walked += 1
    assert walked >= 20


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        ("teacher", {"train.steps": -5}, "train.steps=-5: expected an integer >= 1"),
        ("teacher", {"train.learning_rate": -1.0}, "train.learning_rate=-1.0: expected a finite "
         "number > 0.0"),
        ("teacher", {"train.learning_rate": 0.0}, "train.learning_rate=0.0: expected a finite"),
        ("teacher", {"mel.sample_rate": 0}, "mel.sample_rate=0: expected an integer >= 1 (Hz)"),
        ("teacher", {"train.ema_decay": 1.0}, "train.ema_decay=1.0: expected a finite number "
         "in [0.0, 1.0)"),
        ("teacher", {"train.end_learning_rate_fraction": 1.5}, "end_learning_rate_fraction=1.5"),
        ("teacher", {"mel.fmax": 8000.0, "mel.sample_rate": 8000},
         "mel.fmax=8000.0: expected <= mel.sample_rate / 2 = 4000.0 (Nyquist)"),
        ("teacher", {"mel.fmin": 9000.0}, "mel.fmin=9000.0: expected < mel.fmax = 8000.0"),
        ("teacher", {"mel.win_length": 512}, "mel.win_length=512: expected <= mel.n_fft = 256"),
        ("teacher", {"data.crop_samples": 500},
         "data.crop_samples=500: expected a multiple of mel.hop_length = 64 (e.g. 512)"),
        ("teacher", {"model.upsample_strides": (4, 8)},
         "model.upsample_strides=(4, 8): their product is 32; expected mel.hop_length = 64"),
        ("teacher", {"model.gate_channels": 15}, "model.gate_channels=15: expected an even"),
        ("teacher", {"model.output": "softmax"}, "model.output='softmax': expected one of 'mol'"),
        ("teacher", {"data.bad_audio": "ignore"}, "data.bad_audio='ignore': expected one of"),
        ("teacher", {"data.name": "librispeech"}, "data.name='librispeech': expected a data"),
        ("teacher", {"model.dtype": "float8"}, "model.dtype='float8': expected one of"),
        ("teacher", {"model.output": "mulaw", "model.lpc_order": 32},
         "model.lpc_order=32: expected 0 with model.output='mulaw'"),
        ("teacher", {"data.mel_source": "file"}, "data.mel_source='file': 'file' reads each"),
        ("student", {"distill.stft_resolutions": ((256, 64, 512),)}, "distill.stft_resolutions"),
        ("student", {"model.init_log_scale": -30.0}, "model.init_log_scale=-30.0: expected "
         "init_log_scale / number of flows = -15.0 inside"),
        ("student", {"model.excitation": "pulses"}, "model.excitation='pulses': 'pulses' needs"),
        ("student", {"distill.kl": "exact"}, "distill.kl='exact': expected one of 'auto'"),
        ("flows", {"flow.layers": "affine,spline*2"}, "flow.layers='affine,spline*2': expected"),
        ("flows", {"flow.layers": "planar*0"}, "flow.layers='planar*0'"),
        ("flows", {"energy.name": "U9"}, "energy.name='U9': expected one of 'U1'"),
    ],
)
def test_a_value_out_of_range_is_refused_with_the_field_value_and_range(kind, overrides, message):
    config = CONFIGS[kind].get_config("tiny")
    for path, value in overrides.items():
        _set(config, path, value)
    with pytest.raises(schema.ConfigError) as info:
        schema.validate(config)
    assert str(info.value).startswith("config.") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_config_without_a_field_takes_the_schemas_default():
    config = teacher_config.get_config("tiny")
    del config["data"]["mel_length_policy"]
    del config["train"]["microbatch_size"]
    assert "microbatch_size" not in config.train
    schema.validate(config)
    schema.complete(config)
    assert config.data.mel_length_policy == "fail" and config.train.microbatch_size == 0


@pytest.mark.parametrize(
    ("kind", "variant", "differs"),
    [("teacher", "ljspeech", {"data.name"}), ("student", "ljspeech", {"data.name"}),
     ("flows", "moons", set())],
)
def test_the_schemas_defaults_are_the_base_configs_values(kind, variant, differs):
    """The variants named change nothing of the base config but `differs`, so the schema's
    defaults and the config files' values of a field cannot drift apart."""
    values = _leaves(CONFIGS[kind].get_config(variant))
    defaults = schema.defaults(kind)
    for path, value in values.items():
        if path in differs or path == "variant":
            continue
        assert defaults[path] == value, path


def test_the_enumerations_are_the_librarys():
    """Each name list is written out in the schema (it imports nothing); here it is compared
    with the one the library acts on."""
    from pwavenet import audio
    from pwavenet.data import sources
    from pwavenet.flows import fitting, toy2d
    from pwavenet.models import builders, iaf, wavenet

    teacher, student, flows = schema.TEACHER, schema.STUDENT, schema.FLOWS
    assert set(schema.DATA_SOURCES) == set(sources.SOURCES)
    assert teacher["mel.preset"].choices == audio.MEL_PRESETS
    assert teacher["data.mel_source"].choices == sources.MEL_SOURCES
    assert set(teacher["data.mel_length_policy"].choices) == set(sources.MEL_LENGTH_POLICIES)
    # 'affine' is the student's flows' own output, not a teacher's.
    assert set(teacher["model.output"].choices) == set(wavenet.OUTPUTS)
    assert student["model.base"].choices == iaf.BASES
    assert student["model.excitation"].choices == iaf.EXCITATIONS
    assert student["model.upsampler"].choices == builders.UPSAMPLER_MODES
    assert student["distill.kl"].choices == builders.KL_METHODS
    assert flows["data.name"].choices == toy2d.DATASETS
    assert flows["energy.name"].choices == toy2d.ENERGIES
    assert schema.FLOW_LAYERS == fitting._LAYERS


@pytest.mark.parametrize("variant", _variants(student_config))
def test_every_student_variant_agrees_with_its_teacher_variant(variant):
    """What launch.pipeline checks before the teacher trains; a mu-law teacher, a changed mel
    field and a shared upsampler with other strides are each named."""
    teacher, student = teacher_config.get_config(variant), student_config.get_config(variant)
    assert schema.pair_problems(teacher, student) == []
    student.mel.n_fft = teacher.mel.n_fft * 2
    teacher.model.output = "mulaw"
    student.model.upsample_strides = (1, teacher.mel.hop_length)
    problems = schema.pair_problems(teacher, student)
    assert problems[0] == (
        f"student.mel.n_fft={student.mel.n_fft}: expected the teacher's teacher.mel.n_fft="
        f"{teacher.mel.n_fft} (the student is distilled on its mels)."
    )
    shared = student.model.upsampler != "own"
    assert any(p.startswith("student.model.upsample_strides=") for p in problems) == shared
    assert problems[-1].startswith("teacher.model.output='mulaw': a mu-law teacher cannot")
