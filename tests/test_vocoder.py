"""Tests for pwavenet.vocoder: the Python API (load_vocoder, Vocoder).

Each claim is checked against an independent computation: the student's pieces against one
pass of `iaf.forward` over the whole, unpadded mel with noise drawn here from the documented
rule; the teacher's pieces against its own teacher forcing (every generated sample is the one
its step's distribution and noise give, across piece boundaries); the stream and the batch
against `vocode`; the memory bound by the count of compiled programs, which does not grow
with the input's length.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwavenet import audio
from pwavenet.audio import excitation
from pwavenet.models import iaf
from pwavenet import vocoder as vocoder_lib
import student_helpers
import vocoder_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_MELS = 16  # the tiny configs'


_student_config = vocoder_helpers.student_config
_random_params = vocoder_helpers.random_params


@functools.lru_cache(maxsize=None)
def _student(lpc_order, excitation="noise", pitch_source="estimate"):
    config = _student_config(lpc_order)
    config.model.excitation = excitation
    config.model.pitch_source = pitch_source
    if pitch_source == "learned":  # a small predictor: 3 frames of context either side
        config.model.pitch_channels = 8
        config.model.pitch_dilations = (1, 2)
    model = vocoder_lib.build_model(config)
    params = _random_params(model, 0.5)
    if excitation == "pulses":
        params = dict(params, pulse_log_gain=jnp.log(0.3), voiced_noise_log_gain=jnp.log(0.5))
    return vocoder_lib.Vocoder(config, params)


@pytest.fixture(
    scope="module",
    params=[(0, "noise"), (6, "noise"), (6, "pulses"), (6, "pulses", "learned")],
    ids=["flows", "synthesis_filter", "pulses", "learned_pitch"],
)
def student(request):
    """The tiny student, the same with the synthesis filter, with pulses at the hand-made
    pitch estimate, and with pulses at a learned predictor's pitch (for the tests of the
    pieces' arithmetic; the others take `flows_student`)."""
    return _student(*request.param)


@pytest.fixture(scope="module")
def flows_student():
    return _student(0)


@pytest.fixture(scope="module")
def teacher():
    config, params = vocoder_helpers.teacher_config_and_params()
    return vocoder_lib.Vocoder(config, params, chunk_frames=8)


def _mel(frames, seed=0, batch=None):
    shape = (frames, N_MELS) if batch is None else (batch, frames, N_MELS)
    return np.random.default_rng(seed).normal(-2.0, 1.5, shape).astype(np.float32)


def _base_noise(model, seed, frames):
    """The documented noise: frame f's hop samples from fold_in(PRNGKey(seed), f)."""
    key = jax.random.PRNGKey(seed)
    return np.concatenate(
        [
            np.asarray(model.sample_base(jax.random.fold_in(key, f), (model.hop_length,)))
            for f in range(frames)
        ]
    )


# ----------------------------------------------------------------------------- student


def _utterance_wide_pitch(mel, config):
    """A stand-in for excitation.estimate_pitch on the tiny configs' 16 bands (which it cannot
    read): F0 and voicing that, like its own, depend on the whole utterance (levels against
    the loudest frame and the mean), so a piece that estimated them from its window alone
    would differ."""
    level = jnp.mean(mel, axis=-1)
    voiced = jax.nn.sigmoid(4.0 * (level - jnp.max(level, axis=-1, keepdims=True)) + 3.0)
    f0 = 150.0 + 100.0 * jax.nn.sigmoid(level - jnp.mean(level, axis=-1, keepdims=True))
    return f0, voiced


@pytest.mark.parametrize("frames", [3, 150])  # inside one padded window; several pieces
def test_student_vocode_equals_one_pass_over_the_unpadded_mel(student, frames, monkeypatch):
    monkeypatch.setattr(excitation, "estimate_pitch", _utterance_wide_pitch)
    v = student
    assert v.window_frames < 150 and 150 > 2 * v.chunk_frames
    mel = _mel(frames, seed=frames)
    x = v.vocode(mel, speaker=2, seed=4)
    z = _base_noise(v.model, 4, frames)
    np.testing.assert_array_equal(v.noise(frames, seed=4), z)
    reference = iaf.forward(v.model, v.variables, z[None], mel[None], jnp.array([2]))[0][0]
    reference = np.asarray(reference)
    assert x.shape == (frames * v.hop_length,) and x.dtype == np.float32
    assert np.mean(np.abs(reference) >= 1.0) < 0.01  # clipping hides nothing
    scale = np.std(reference)
    assert scale > 1e-3
    error = np.abs(x - np.clip(reference, -1, 1))
    if not v.model.has_pulses:
        assert np.max(error) <= 5e-3 * scale
    else:
        # The pieces carry the pulses' phase (a running sum modulo 1, in float32: about 6e-8
        # cycles apart from one pass's) from one to the next; near a pulse's peak a phase
        # error dtheta moves a sample by about k^2 dtheta of its sqrt(2 k) peak (k harmonics,
        # up to 180): a relative 1e-3 of the audio's largest sample bounds it.
        assert np.max(error) <= max(5e-3 * scale, 1e-3 * np.max(np.abs(reference)))
    if v.model.has_pulses:  # the pulses are there
        contour = v.model.apply(
            v.variables, mel[None], jnp.array([2]), method=iaf.IAFStudent.excitation_inputs
        )
        pulses = excitation.pulse_train(
            contour.f0[:, v.hop_length // 2 :: v.hop_length],
            contour.voicing[:, v.hop_length // 2 :: v.hop_length],
            v.hop_length,
            v.sample_rate,
        )
        assert float(jnp.max(jnp.abs(pulses))) > 0.1
    if v.model.has_pulses and not v.model.learned_pitch:  # the estimate cannot stream
        with pytest.raises(NotImplementedError, match="whole mel"):
            next(v.stream([mel]))


def test_student_compiles_one_program_whatever_the_length(flows_student):
    v = flows_student
    v = vocoder_lib.Vocoder(v.config, v.variables["params"], chunk_frames=16)
    for frames in (1, 7, 40, 333):
        v.vocode(_mel(frames), speaker=1)
    # One shape for every window: the program, and its memory, do not depend on the length.
    assert v.compiled_programs() == 1
    v.vocode(_mel(9, batch=2), speaker=[0, 1])
    assert v.compiled_programs() == 2  # one per batch size


def test_student_batch_equals_single_utterances_with_consecutive_seeds(flows_student):
    student = flows_student
    mel = _mel(70, batch=3, seed=5)
    speakers = [0, 2, 1]
    x = student.vocode(mel, speaker=speakers, seed=10)
    assert x.shape == (3, 70 * student.hop_length)
    for b in range(3):
        single = student.vocode(mel[b], speaker=speakers[b], seed=10 + b)
        np.testing.assert_allclose(x[b], single, atol=2e-6, rtol=0)
    np.testing.assert_array_equal(student.noise(70, seed=10, batch=3)[2], student.noise(70, 12))
    assert not np.allclose(x[0], x[1], atol=1e-3)


# ----------------------------------------------------------------------------- teacher


def _teacher_forcing_samples(v, x, mel, speaker, seed):
    """The samples the teacher's distribution at every step (teacher forcing on x: one
    parallel pass) gives with the documented noise; cached generation must reproduce x."""
    model = v.model
    key = jax.random.PRNGKey(seed)
    frames = mel.shape[0]
    noise = [
        model.distribution.noise(jax.random.fold_in(key, f), (model.hop_length,))
        for f in range(frames)
    ]
    noise = jax.tree.map(lambda *a: jnp.concatenate(a)[None], *noise)
    params = model.apply(v.variables, jnp.asarray(x)[None], mel[None], jnp.array([speaker]))
    return np.asarray(model.distribution.sample_from_noise(params, noise))[0]


@pytest.mark.parametrize("frames", [3, 29])  # inside one window; four pieces of 8
def test_teacher_pieces_are_its_own_sampling_across_piece_boundaries(teacher, frames):
    mel = _mel(frames, seed=frames)
    x = teacher.vocode(mel, speaker=5, seed=2)
    assert x.shape == (frames * teacher.hop_length,)
    assert 0.05 < np.std(x) and np.mean(np.abs(x) >= 1.0) < 0.05
    np.testing.assert_allclose(
        x, _teacher_forcing_samples(teacher, x, mel, 5, seed=2), atol=1e-4, rtol=0
    )


def test_teacher_compiles_one_program_whatever_the_length(teacher):
    v = vocoder_lib.Vocoder(teacher.config, teacher.variables["params"], chunk_frames=4)
    for frames in (2, 13, 30):
        v.vocode(_mel(frames), speaker=0)
    assert v.compiled_programs() == 1


def test_teacher_batch_equals_single_utterances_with_consecutive_seeds(teacher):
    mel = _mel(11, batch=2, seed=3)
    x = teacher.vocode(mel, speaker=[4, 7], seed=1)
    for b, speaker in enumerate([4, 7]):
        np.testing.assert_allclose(
            x[b], teacher.vocode(mel[b], speaker=speaker, seed=1 + b), atol=1e-4, rtol=0
        )


# ----------------------------------------------------------------------------- streaming


def _stream_with_arrivals(v, mel, block_sizes, **kwargs):
    """(pieces, frames that had arrived when each piece came out)."""
    arrived = [0]

    def frames():
        i = 0
        for size in block_sizes:
            block = mel[i : i + size]
            i += size
            arrived[0] = i
            yield block[0] if size == 1 else block

    pieces, seen = [], []
    for piece in v.stream(frames(), **kwargs):
        pieces.append(piece)
        seen.append(arrived[0])
    return pieces, seen


@pytest.mark.parametrize("which", ["flows", "synthesis_filter", "learned_pitch", "teacher"])
def test_stream_equals_vocode_with_a_bounded_lookahead(which, request):
    v = {
        "flows": _student(0),
        "synthesis_filter": _student(6),
        "learned_pitch": _student(6, "pulses", "learned"),
    }.get(which)
    v = v or request.getfixturevalue("teacher")
    total = 3 * v.chunk_frames + 5
    mel = _mel(total, seed=7)
    sizes = [1, 2, 5, 1, 3] * total  # irregular blocks, single frames among them
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), total) + 1]
    sizes[-1] -= sum(sizes) - total
    pieces, seen = _stream_with_arrivals(v, mel, sizes, speaker=1, seed=3)
    np.testing.assert_array_equal(np.concatenate(pieces), v.vocode(mel, speaker=1, seed=3))
    assert [len(p) for p in pieces] == [v.chunk_frames * v.hop_length] * 3 + [5 * v.hop_length]
    # Piece k comes out once its end + the upsampler's reach has arrived, not later.
    for k, arrived in enumerate(seen[:3]):
        needed = k * v.chunk_frames + v.lookahead_frames
        assert needed <= arrived < needed + 5, (k, arrived, needed)


def test_stream_of_an_input_shorter_than_the_lookahead(flows_student):
    student = flows_student
    mel = _mel(4, seed=1)
    pieces = list(student.stream(iter([mel[:1], mel[1:]]), speaker=0, seed=0))
    np.testing.assert_array_equal(np.concatenate(pieces), student.vocode(mel, speaker=0))


# ----------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, teacher):
    root = tmp_path_factory.mktemp("vocoders")
    return vocoder_helpers.write_workdirs(root, teacher.config, teacher.variables["params"])


def test_load_vocoder_uses_the_ema_weights_and_the_saved_config(workdirs, teacher):
    import pwavenet

    teacher_dir, student_dir, ema = workdirs
    v = pwavenet.load_vocoder(student_dir)
    assert isinstance(v, pwavenet.Vocoder) and v.kind == "student"
    assert (v.sample_rate, v.hop_length, v.n_mels) == (22050, 64, 16)
    # The checkpoint's EMA weights (its raw weights are half of them).
    jax.tree.map(np.testing.assert_array_equal, v.variables["params"], ema)
    mel = _mel(20)
    direct = vocoder_lib.Vocoder(_student_config(), ema)
    np.testing.assert_array_equal(v.vocode(mel, speaker=3), direct.vocode(mel, speaker=3))
    # The teacher a student was distilled from, and a teacher's own workdir, alike (their
    # raw weights are zeros).
    teachers = [pwavenet.load_vocoder(student_dir, model="teacher")]
    teachers.append(pwavenet.load_vocoder(teacher_dir))
    for t in teachers:
        assert t.kind == "teacher" and t.config.mel.to_dict() == teacher.config.mel.to_dict()
        jax.tree.map(
            np.testing.assert_array_equal, t.variables["params"], teacher.variables["params"]
        )


def test_mel_is_the_models_own_definition_of_whole_frames(flows_student):
    student = flows_student
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 10 * 64 + 17).astype(np.float32)
    mel = student.mel(x)
    assert mel.shape == (10, N_MELS)
    expected = audio.log_mel_spectrogram(x[None], student.config.mel)[0]
    np.testing.assert_allclose(mel, expected, atol=1e-6)
    np.testing.assert_allclose(student.mel(np.stack([x, x]))[1], mel, atol=1e-6)


def test_mistakes_are_refused_with_the_fix(workdirs, flows_student, tmp_path):
    student = flows_student
    teacher_dir, _, _ = workdirs
    with pytest.raises(ValueError, match=r"expected \(frames, 16\)"):
        student.vocode(np.zeros((10, 80), np.float32))
    with pytest.raises(ValueError, match=r"out of range: the model knows 8 speakers"):
        student.vocode(_mel(4), speaker=8)
    with pytest.raises(ValueError, match="NaN or infinite"):
        student.vocode(np.full((4, N_MELS), np.nan, np.float32))
    with pytest.raises(ValueError, match="teacher's workdir; use model='teacher'"):
        vocoder_lib.load_vocoder(teacher_dir, model="student")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vocoder_lib.load_vocoder(str(tmp_path / "missing"))


def test_import_pwavenet_and_its_api_loads_no_tensorflow():
    probe = (
        "import sys, pwavenet\n"
        "assert 'jax' not in sys.modules\n"
        "from pwavenet import load_vocoder, Vocoder\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow'\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_upsampler_treats_frames_past_valid_frames_as_absent():
    """Padding changes nothing inside the valid frames: without the mask, a leaky ReLU of the
    first stage's bias over the padding reaches the last valid frames through the second."""
    from pwavenet.models.layers import ConditioningUpsampler

    up = ConditioningUpsampler(strides=(4, 2), kernel_multiple=3)
    mel = _mel(12, seed=2)[None]
    padded = np.concatenate([mel, _mel(5, seed=9)[None]], axis=1)
    params = student_helpers.random_params(up, padded)
    alone = up.apply({"params": params}, mel)
    masked = up.apply({"params": params}, padded, valid_frames=12)
    np.testing.assert_allclose(masked[:, : 12 * 8], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(masked[:, 12 * 8 :], 0.0)
    unmasked = up.apply({"params": params}, padded)
    assert np.max(np.abs(unmasked[:, : 12 * 8] - alone)) > 1e-3
