"""Fine-tuning on a TTS model's mels: wav_folder's stored mels (name.wav + name.npy) as the
pipeline's mels (config.data.mel_source='file'), their length policy, and config.init_from.

The stored mels are the audio's own log-mel plus 1 (rows beyond the audio's frames random),
so a batch that carried a computed mel instead would fail every comparison. The expected crops
are found by matching each crop's audio against the wavs written here, independently of the
pipeline's bookkeeping.
"""

import dataclasses
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile

from configs import student as student_config
from configs import teacher as teacher_config
from pwavenet import audio
from pwavenet.models import builders
from pwavenet.jobs import student as student_job
from pwavenet import training
from pwavenet.data import lookup
from pwavenet.data import pipelines
from pwavenet.data import whole_utterances
from pwavenet.jobs import teacher as teacher_job
from pwavenet.data.builders import wav_folder
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)

RATE = 22050
HOP = 64  # configs/teacher.py:tiny
N_MELS = 16


def _write_utterance(folder, name, num_samples, rng, mel_frames_delta=0):
    """name.wav (int16 noise) and name.npy (its log-mel + 1, (frames + delta, N_MELS)).
    Returns (float audio as the pipeline reads it, the stored mel)."""
    pcm = rng.integers(-8000, 8000, num_samples).astype(np.int16)
    soundfile.write(os.path.join(folder, f"{name}.wav"), pcm, RATE, subtype="PCM_16")
    x = np.asarray(audio.pcm16_to_float(pcm), np.float32)
    own = audio.log_mel_spectrogram(x, teacher_config.get_config("tiny").mel) + 1.0
    frames = len(own) + mel_frames_delta
    mel = rng.normal(-3.0, 1.0, (frames, N_MELS)).astype(np.float32)
    rows = min(frames, len(own))
    mel[:rows] = own[:rows]
    np.save(os.path.join(folder, f"{name}.npy"), mel)
    return x, mel


def _config(folder, data_dir, **overrides):
    config = teacher_config.get_config("tiny")
    config.data.name = "wav_folder"
    config.data.manual_dir = str(folder)
    config.data.data_dir = str(data_dir)
    config.data.mel_source = "file"
    config.data.eval_split = "train"  # a full batch of 8 without a large folder
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 utterances of 40 to 70 hops plus a partial one; 4 stored mels a frame longer or
    shorter than the audio's (within the default tolerance of 2)."""
    root = tmp_path_factory.mktemp("tts")
    wavs, data_dir = root / "wavs", root / "data"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    utterances = {}
    for i in range(12):
        n = int(rng.integers(40, 70)) * HOP + int(rng.integers(0, HOP))
        delta = (1, -1, 2, -2)[i] if i < 4 else 0
        utterances[f"u{i:02d}.wav"] = _write_utterance(str(wavs), f"u{i:02d}", n, rng, delta)
    return wavs, data_dir, utterances


def _datasets(config):
    return pipelines.create_datasets(
        config, process_index=0, process_count=1, local_device_count=8
    )


def _locate(crop_audio, utterances):
    """(utterance id, start frame) of a crop, found by matching its samples."""
    for uid, (x, _) in utterances.items():
        for j in range(len(x) // HOP):
            if np.array_equal(x[j * HOP : j * HOP + len(crop_audio)], crop_audio):
                return uid, j
    raise AssertionError("a crop matches no utterance's audio at any hop")


def test_batches_carry_the_stored_mel_of_each_crop(folder):
    wavs, data_dir, utterances = folder
    config = _config(wavs, data_dir)
    crop_frames = config.data.crop_samples // HOP
    data = _datasets(config)
    seen = set()
    for batch in [next(data.train) for _ in range(3)] + list(data.eval(1)):
        assert batch["mel"].shape == (8, crop_frames, N_MELS)
        for crop_audio, crop_mel in zip(batch["audio"], batch["mel"]):
            uid, j = _locate(crop_audio, utterances)
            x, stored = utterances[uid]
            # The crop lies within both the stored mel and the audio's whole hops.
            assert j + crop_frames <= min(len(stored), len(x) // HOP)
            np.testing.assert_array_equal(crop_mel, stored[j : j + crop_frames])
            seen.add(uid)
    assert len(seen) >= 6, seen
    assert not data.mel_files.skipped and not data.mel_files.trimmed

    # Whole utterances for listening and scoring carry the stored mels too.
    whole = whole_utterances.split_utterances(config, "train", limit=3)
    for u in whole:
        x, stored = utterances[u["id"]]
        frames = min(len(stored), len(x) // HOP)
        assert len(u["audio"]) == frames * HOP
        np.testing.assert_array_equal(u["mel"], stored[:frames])


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    """Four good utterances, one whose mel is 5 frames short (beyond the tolerance), a wav
    without a .npy and one whose .npy is 1-D."""
    root = tmp_path_factory.mktemp("mismatch")
    wavs = root / "wavs"
    wavs.mkdir()
    rng = np.random.default_rng(1)
    utterances = {
        f"g{i}.wav": _write_utterance(str(wavs), f"g{i}", 50 * HOP, rng) for i in range(4)
    }
    utterances["short.wav"] = _write_utterance(str(wavs), "short", 50 * HOP, rng, -5)
    for bad in ("nomel", "flat"):
        soundfile.write(wavs / f"{bad}.wav", np.zeros(50 * HOP, np.int16), RATE, subtype="PCM_16")
    np.save(wavs / "flat.npy", np.zeros(50 * N_MELS, np.float32))  # not (frames, n_mels)
    return wavs, root / "data", utterances


def test_a_mel_length_beyond_the_tolerance_fails_skips_or_trims(mismatched):
    wavs, data_dir, utterances = mismatched
    short_npy = str(wavs / "short.npy")

    fail = _config(wavs, data_dir)
    data = _datasets(fail)
    too_short = re.escape(short_npy) + (
        r": 45 mel frames.* 50 frames of hop 64.*"
        r"mel_length_tolerance=2 and config.data.mel_length_policy='fail'"
    )
    with pytest.raises(ValueError, match=too_short):
        for _ in range(4):
            next(data.train)
    # The wavs without a usable .npy were left out when the folder was built (bad_audio='skip').
    report = lookup.get_builder(fail).info.metadata["build_report"]
    assert report["skipped"] == {"nomel.wav": "missing mel", "flat.wav": "bad mel"}

    skip = _config(wavs, data_dir, **{"data.mel_length_policy": "skip"})
    data = _datasets(skip)
    ids = {_locate(a, utterances)[0] for _ in range(4) for a in next(data.train)["audio"]}
    train_split = wav_folder.assign_splits(list(utterances))["train"]
    assert "short.wav" in train_split
    assert ids == set(train_split) - {"short.wav"}
    assert data.mel_files.skipped == {"short.wav": (45, 50)}

    trim = _config(wavs, data_dir, **{"data.mel_length_policy": "trim"})
    data = _datasets(trim)
    short_crops = 0
    for _ in range(4):
        batch = next(data.train)
        for crop_audio, crop_mel in zip(batch["audio"], batch["mel"]):
            uid, j = _locate(crop_audio, utterances)
            if uid == "short.wav":
                short_crops += 1
                assert j + 8 <= 45  # only the stored mel's frames
                np.testing.assert_array_equal(crop_mel, utterances[uid][1][j : j + 8])
    assert short_crops > 0
    assert data.mel_files.trimmed == {"short.wav": (45, 50)}

    # A tolerance of 5 frames accepts it under 'fail', cut to the mel's 45 frames.
    tolerant = _config(wavs, data_dir, **{"data.mel_length_tolerance": 5})
    whole = {u["id"]: u for u in whole_utterances.split_utterances(tolerant, "train")}
    assert len(whole["short.wav"]["audio"]) == 45 * HOP

    # A stored mel of another n_mels is named, whatever the length policy.
    wrong_bands = _config(wavs, data_dir, **{"mel.n_mels": 8, "data.mel_length_policy": "trim"})
    data = _datasets(wrong_bands)
    bands = r"g\d\.npy: mel of shape \(50, 16\) has 16 mel bands, but config.mel.n_mels=8"
    with pytest.raises(ValueError, match=bands):
        next(data.train)
    # (n_mels, frames), as some TTS recipes save it, gets a hint: here 50 frames of 16 bands
    # read against a 50-band definition.
    transposed = _datasets(_config(wavs, data_dir, **{"mel.n_mels": 50}))
    with pytest.raises(ValueError, match=r"n_mels=50\. It looks transposed: save mel\.T"):
        next(transposed.train)


# ------------------------------------------------------------------------ init_from


def _save_run(workdir, config, params, ema_params):
    """A workdir as a finished run leaves it: config.json and a step-5 checkpoint."""
    os.makedirs(workdir, exist_ok=True)
    training.save_config(config, workdir)
    tx, _ = training.create_optimizer(config.train)
    state = training.create_train_state(jax.random.PRNGKey(0), params, tx)
    state = state.replace(ema_params=ema_params, step=np.int32(5))
    with training.checkpoint_manager(workdir, config.train) as mngr:
        mngr.save(5, args=ocp.args.StandardSave(jax.device_get(state)))
        mngr.wait_until_finished()


def _random_tree(like, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(0.0, 0.3, np.shape(a)).astype(np.float32), like)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def teacher_run(folder, tmp_path_factory):
    """A tiny teacher's workdir whose raw and EMA weights are distinct random trees."""
    wavs, data_dir, _ = folder
    config = _config(wavs, data_dir)
    model = builders.build_teacher(config)
    shapes = jax.eval_shape(
        lambda: builders.init_teacher_params(model, config, jax.random.PRNGKey(0))
    )
    params, ema = _random_tree(shapes, 1), _random_tree(shapes, 2)
    workdir = str(tmp_path_factory.mktemp("pretrained_teacher"))
    _save_run(workdir, config, params, ema)
    return workdir, params, ema


def test_the_teacher_job_reads_stored_mels_and_loads_the_other_runs_weights(folder, teacher_run):
    """The teacher job's batches carry the stored mels; init_params_from, as fit calls it,
    gives the other run's EMA weights (its raw ones on request) on this model's tree. (fit's
    use of it: test_init_from_applies_to_a_new_run_only; a whole job: the student's test.)"""
    wavs, data_dir, utterances = folder
    source, raw, ema = teacher_run
    config = _config(wavs, data_dir, init_from=source)
    model = builders.build_teacher(config)
    job = teacher_job.make_job(config, model)
    batch = next(job.train_batches(0))
    for crop_audio, crop_mel in zip(batch["audio"], batch["mel"]):
        uid, j = _locate(crop_audio, utterances)
        np.testing.assert_array_equal(crop_mel, utterances[uid][1][j : j + 8])
    training.check_init_from(config)  # the same architecture
    like = jax.eval_shape(job.init_params, jax.random.PRNGKey(0))
    loaded, step = training.init_params_from(source, like)
    assert step == 5
    _assert_trees_equal(loaded, ema)
    _assert_trees_equal(training.init_params_from(source, like, ema=False)[0], raw)


def _toy_job(batches=None):
    """A two-leaf model with a quadratic loss: the shared loop without a model's compile."""
    return training.Job(
        init_params=lambda rng: {"w": jax.random.normal(rng, (8, 3)), "b": jax.numpy.zeros(3)},
        loss_fn=lambda p, batch, rngs: (
            jax.numpy.mean((batch["x"] @ p["w"] + p["b"]) ** 2),
            {},
        ),
        train_batches=lambda step: iter(lambda: {"x": np.ones((8, 8), np.float32)}, None),
    )


def test_init_from_applies_to_a_new_run_only(tmp_path):
    """A workdir without a checkpoint starts from init_from (raw or EMA weights, as asked); one
    with a checkpoint resumes it, whatever init_from says."""
    config = teacher_config.get_config("tiny")
    config.train.learning_rate = 0.0
    like = jax.eval_shape(_toy_job().init_params, jax.random.PRNGKey(0))
    source = str(tmp_path / "source")
    raw, ema = _random_tree(like, 5), _random_tree(like, 6)
    _save_run(source, config, raw, ema)

    out = str(tmp_path / "run")
    config.init_from, config.init_from_ema, config.train.steps = source, False, 1
    training.fit(config, out, _toy_job())
    _assert_trees_equal(training.restore_params(out, ema=False)[0], raw)
    config.init_from_ema, config.train.steps = True, 2  # would start from `ema` if not resumed
    training.fit(config, out, _toy_job())
    params, step = training.restore_params(out, ema=False)
    assert step == 2
    _assert_trees_equal(params, raw)


def test_init_from_refuses_another_architecture(folder, teacher_run, tmp_path):
    wavs, data_dir, _ = folder
    source, raw, _ = teacher_run
    out = tmp_path / "finetuned"
    wider = _config(
        wavs, data_dir, init_from=source, **{"model.residual_channels": 12, "model.kernel_size": 3}
    )
    with pytest.raises(ValueError, match=re.escape(source) + r"' holds a model of another") as e:
        teacher_job.train_and_evaluate(wider, str(out))
    assert "model.kernel_size: saved 2, now 3" in str(e.value)
    assert "model.residual_channels: saved 8, now 12" in str(e.value)
    assert not out.exists()
    # Fields that change how the model runs, not its weights, are no mismatch.
    training.check_init_from(_config(wavs, data_dir, init_from=source, **{"model.remat": True}))
    # A tree of other shapes is named leaf by leaf.
    like = dict(raw, upsampler=jax.tree.map(lambda a: np.zeros(a.shape + (1,)), raw["upsampler"]))
    with pytest.raises(ValueError, match=r"\['upsampler'\].*: saved \(\d+, \d+.*\), now"):
        training.init_params_from(source, like)
    with pytest.raises(FileNotFoundError, match="config.init_from=.*does not exist"):
        training.check_init_from(_config(wavs, data_dir, init_from=str(tmp_path / "none")))


@pytest.mark.slow
def test_init_from_starts_the_student_on_stored_mels(folder, teacher_run, tmp_path):
    """The student job, trained on the stored mels at learning rate 0 for one step (so its
    step-1 params are its step-0 ones), starts from another student's EMA weights, with its
    frozen upsampler taken from this run's teacher (the EMA weights of `teacher_run`)."""
    wavs, data_dir, _ = folder
    teacher_workdir, _, teacher_ema = teacher_run

    def student(**overrides):
        config = student_config.get_config("tiny")
        config.teacher_workdir = teacher_workdir
        config.data = _config(wavs, data_dir).data
        config.update_from_flattened_dict(overrides)
        return config

    base = student()
    model = builders.build_student(base)
    shapes = jax.eval_shape(
        lambda: builders.init_student_params(model, base, jax.random.PRNGKey(0))
    )
    source = str(tmp_path / "pretrained_student")
    source_raw, source_ema = _random_tree(shapes, 3), _random_tree(shapes, 4)
    _save_run(source, base, source_raw, source_ema)

    out = str(tmp_path / "finetuned_student")
    config = student(init_from=source, **{"train.steps": 1, "train.learning_rate": 0.0})
    teacher_lib = training.load_teacher(teacher_workdir)
    job = student_job.make_job(config, model, teacher_lib)
    training.fit(config, out, dataclasses.replace(job, eval_fn=None, summaries=None))
    params, _ = training.restore_params(out, ema=False)
    _assert_trees_equal(params["upsampler"], teacher_ema["upsampler"])
    _assert_trees_equal(
        {k: v for k, v in params.items() if k != "upsampler"},
        {k: v for k, v in source_ema.items() if k != "upsampler"},
    )
