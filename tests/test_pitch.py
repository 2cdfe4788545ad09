"""The learned pitch predictor (pwavenet.models.pitch) and its job (pwavenet.jobs.pitch):
classes, targets and decoding in closed form, harvest's labels on the frame centres, a
bounded context (what streaming needs), a fit on harmonic signals of known F0 judged by
harvest-independent truth, and the job on the tiny corpus."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import pitch as pitch_config
from pwavenet import audio
from pwavenet.evaluation import quality
from pwavenet.jobs import pitch as pitch_job
from pwavenet.models import pitch

SR, HOP = 22050, 256


def test_classes_are_twenty_cents_apart_over_the_range():
    log_f0 = pitch.class_log_f0()
    np.testing.assert_allclose(np.diff(log_f0) * 1200 / math.log(2), 20.0, rtol=1e-9)
    assert math.exp(log_f0[0]) == pytest.approx(60.0)
    assert 500.0 <= math.exp(log_f0[-1]) < 500.0 * 2 ** (20 / 1200)


@pytest.mark.parametrize("f0", [61.3, 97.0, 140.2, 233.3, 487.0])
def test_decoding_the_blurred_target_gives_back_its_f0(f0):
    """Logits log(target): the local average of a Gaussian over log-spaced classes is its
    centre, to well under a class."""
    target = pitch.targets(jnp.log(jnp.float32(f0)))
    assert float(jnp.sum(target)) == pytest.approx(1.0, abs=1e-5)
    nearest = np.argmin(np.abs(pitch.class_log_f0() - math.log(f0)))
    assert int(jnp.argmax(target)) == nearest
    decoded, voiced = pitch.decode(jnp.float32(3.0), jnp.log(target + 1e-30))
    assert abs(1200 * math.log2(float(decoded) / f0)) < 2.0
    assert float(voiced) == pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-6)


def _glide(f0_start: float, f0_end: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A vowel-like signal whose F0 glides exponentially: harmonics with falling amplitudes on
    one running phase, faint noise."""
    n = int(seconds * SR)
    f0 = f0_start * (f0_end / f0_start) ** (np.arange(n) / n)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k * (k * f0 < SR / 2) for k in range(1, 40))
    noise = 0.002 * np.random.default_rng(seed).standard_normal(n)
    return (0.3 * x / np.max(np.abs(x)) + noise).astype(np.float64), f0


def test_harvest_frames_reads_the_f0_at_each_frame_centre():
    x, f0 = _glide(110.0, 220.0, 1.5)
    frame_f0, voiced = pitch.harvest_frames(x, SR, HOP)
    assert frame_f0.shape == voiced.shape == (len(x) // HOP,)
    centres = ((np.arange(len(frame_f0)) + 0.5) * HOP).astype(int)
    inner = slice(4, -4)  # harvest's edges
    assert voiced[inner].all()
    cents = 1200 * np.log2(frame_f0[inner] / f0[centres][inner])
    assert np.median(np.abs(cents)) < 10.0
    silence_f0, silence_voiced = pitch.harvest_frames(np.zeros(SR), SR, HOP)
    assert not silence_voiced.any() and not silence_f0.any()


def test_the_prediction_reads_a_bounded_context():
    """Frame t's outputs depend on mel frames t - C .. t + C only (C = context_frames), by the
    Jacobian's support: a stream with C frames of look-ahead gives what one pass gives."""
    model = pitch.PitchPredictor(channels=8, dilations=(1, 2, 4), num_speakers=2)
    mel = jax.random.normal(jax.random.key(0), (1, 40, 6))
    speaker = jnp.array([1])
    params = model.init(jax.random.key(1), mel, speaker)
    t = 20

    def frame_t(m):
        v, c = model.apply(params, m, speaker)
        return v[0, t] + jnp.sum(c[0, t] * jnp.arange(c.shape[-1]))

    support = np.flatnonzero(np.any(np.asarray(jax.grad(frame_t)(mel))[0] != 0, axis=-1))
    c = model.context_frames
    assert c == 7
    np.testing.assert_array_equal(support, np.arange(t - c, t + c + 1))


def _synthetic_corpus(count: int, seed: int) -> list[dict]:
    """Utterances of gliding harmonic vowels between silences, F0 60..400 Hz, with the
    project's mel and the glide's own F0 per frame (0 in the silences) as the truth."""
    rng = np.random.default_rng(seed)
    mel_config = ml_collections.ConfigDict(audio.mel_settings("pwavenet", SR))
    out = []
    for i in range(count):
        start, end = np.exp(rng.uniform(np.log(65), np.log(380), 2))
        vowel, f0 = _glide(start, end, rng.uniform(0.4, 0.8), seed=seed * 100 + i)
        gap = np.zeros(int(0.15 * SR))
        x = np.concatenate([gap, vowel, gap])
        truth = np.concatenate([0 * gap, f0, 0 * gap])
        frames = len(x) // HOP
        centres = ((np.arange(frames) + 0.5) * HOP).astype(int)
        out.append(
            {
                "id": f"u{seed}_{i}",
                "audio": x.astype(np.float32),
                "mel": np.asarray(audio.log_mel_spectrogram(x, mel_config))[:frames],
                "speaker": 0,
                "truth": truth[centres],
            }
        )
    return out, mel_config


def test_fitted_on_harvest_labels_it_finds_the_pitch_of_unseen_glides(tmp_path):
    """Fitted to harvest's labels of 24 synthetic utterances, it tracks the true F0 of 6
    unseen ones (gross errors under 5%, median fine error under 25 cents, voicing right on
    90% of the frames): it learned pitch from the mel, not the training glides."""
    train, mel_config = _synthetic_corpus(24, seed=1)
    held_out, _ = _synthetic_corpus(6, seed=2)
    config = pitch_config.get_config("espeak")
    config.mel = mel_config
    config.pitch.update(
        channels=32, dilations=(1, 2, 4), num_speakers=0, steps=400, batch_size=8,
        crop_frames=32, learning_rate=3e-3,
    )  # fmt: skip
    frame_labels = pitch_job.labels(train, mel_config, str(tmp_path / "labels.npz"))
    params, history = pitch_job.fit(config, train, frame_labels)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    model = pitch_job.build(config)
    truth = np.concatenate([u["truth"] for u in held_out])
    predicted = np.concatenate(
        [np.where(v > 0.5, f, 0.0) for f, v in (pitch_job.predict(model, params, u["mel"], 0)
                                                for u in held_out)]
    )
    errors = quality.compare_f0_tracks(truth, predicted)
    assert errors["gross_pitch_error"] < 0.05
    assert errors["vuv_error"] < 0.1
    both = (truth > 0) & (predicted > 0)
    assert np.median(np.abs(1200 * np.log2(predicted[both] / truth[both]))) < 25.0


def test_labels_are_cached_by_utterance_id(tmp_path, monkeypatch):
    utterances, mel_config = _synthetic_corpus(3, seed=3)
    cache = str(tmp_path / "labels.npz")
    first = pitch_job.labels(utterances[:2], mel_config, cache)
    calls = []
    real = pitch.harvest_frames
    monkeypatch.setattr(pitch, "harvest_frames", lambda *a: calls.append(1) or real(*a))
    again = pitch_job.labels(utterances, mel_config, cache)
    assert len(calls) == 1  # only the utterance the cache lacked
    for uid in first:
        np.testing.assert_array_equal(first[uid][0], again[uid][0])
    expected = real(utterances[2]["audio"], SR, HOP)
    np.testing.assert_array_equal(again[utterances[2]["id"]][0], expected[0])


@pytest.mark.slow
def test_the_job_fits_saves_and_reports(espeak_small_data_dir, tmp_path):
    config = pitch_config.get_config("tiny")
    config.data.data_dir = espeak_small_data_dir
    workdir = str(tmp_path / "pitch")
    report = pitch_job.fit_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "report.json")) as f:
        np.testing.assert_equal(json.load(f)["errors"], report["errors"])  # NaN == NaN here
    assert set(report["errors"]) == {"learned", "hand_made", "griffin_lim"}
    assert os.path.exists(os.path.join(workdir, pitch_job.PARAMS_FILE))
    assert os.path.exists(os.path.join(workdir, "report.md"))
    assert 0.0 <= report["errors"]["learned"]["vuv_error"] <= 1.0
