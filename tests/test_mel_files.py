"""Tests for pwavenet.audio.mel_files and its users: other projects' feature configs read into a
mel section (checked against librosa computations of those projects' formulas on random
audio), their normalization statistics in each file layout (checked against numpy), the
vocoder's input_stats and mel_layout, and --config.mel.from_file at the command line."""

import json
import math
import os
import subprocess
import sys

import h5py
import librosa
import ml_collections
import numpy as np
import pytest
import yaml

from configs import teacher as teacher_config
from pwavenet import audio
from pwavenet import vocoder as vocoder_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# HiFi-GAN's config_v1.json, whole (the reader must pick the feature keys out of it).
HIFIGAN_V1 = {
    "resblock": "1", "num_gpus": 0, "batch_size": 16, "learning_rate": 0.0002,
    "adam_b1": 0.8, "adam_b2": 0.99, "lr_decay": 0.999, "seed": 1234,
    "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "segment_size": 8192, "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256,
    "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": 8000, "fmax_for_loss": None,
    "num_workers": 4,
    "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1},
}

# Parallel WaveGAN's ljspeech_parallel_wavegan.v1.yaml feature part, and some of the rest.
PWG_LJSPEECH = {
    "sampling_rate": 22050, "fft_size": 1024, "hop_size": 256, "win_length": None,
    "window": "hann", "num_mels": 80, "fmin": 80, "fmax": 7600, "global_gain_scale": 1.0,
    "trim_silence": False, "trim_threshold_in_db": 60, "trim_frame_size": 2048,
    "trim_hop_size": 512, "format": "hdf5",
    "generator_type": "ParallelWaveGANGenerator",
    "generator_params": {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "layers": 30},
    "batch_size": 6, "batch_max_steps": 25600,
}

# ESPnet2's tts train config (egs2/ljspeech/tts1/conf/tuning/train_tacotron2.yaml, as dumped
# into exp/): the features under feats_extract_conf, the statistics under normalize_conf.
ESPNET2_TTS = {
    "tts": "tacotron2", "feats_extract": "fbank",
    "feats_extract_conf": {"n_fft": 1024, "hop_length": 256, "win_length": None, "fs": 22050,
                           "fmin": 80, "fmax": 7600, "n_mels": 80},
    "normalize": "global_mvn",
    "normalize_conf": {"stats_file": "exp/tts_stats_raw_phn_tacotron_g2p_en_no_space/train/"
                       "feats_stats.npz"},
}


def _write(path, data):
    with open(path, "w") as f:
        if str(path).endswith(".json"):
            json.dump(data, f)
        else:
            yaml.safe_dump(data, f)
    return str(path)


def _audio(samples, seed=0):
    return np.random.default_rng(seed).uniform(-0.6, 0.6, samples).astype(np.float32)


def _librosa_centred(x, s, log):
    """Parallel WaveGAN's / ESPnet's logmelfilterbank with librosa: centred reflect-padded
    STFT, |S|, Slaney filters, log of max(mel, 1e-10); the first T // hop frames."""
    spec = librosa.stft(x.astype(np.float64), n_fft=s["n_fft"], hop_length=s["hop_length"],
                        win_length=s["win_length"], window="hann", center=True,
                        pad_mode="reflect")
    basis = librosa.filters.mel(sr=s["sample_rate"], n_fft=s["n_fft"], n_mels=s["n_mels"],
                                fmin=s["fmin"], fmax=s["fmax"])
    return log(np.maximum(basis @ np.abs(spec), 1e-10)).T[: len(x) // s["hop_length"]]


def test_hifigan_config_json_gives_its_mel_definition(tmp_path):
    path = _write(tmp_path / "config.json", HIFIGAN_V1)
    s = audio.mel_settings_from(path)
    assert s == {"preset": "hifigan", "sample_rate": 22050, "n_fft": 1024, "win_length": 1024,
                 "hop_length": 256, "n_mels": 80, "fmin": 0.0, "fmax": 8000.0,
                 "log_floor": 1e-5, "log_base": math.e}
    x = _audio(7000)
    # HiFi-GAN's meldataset.mel_spectrogram, written with librosa.
    pad = (1024 - 256) // 2
    y = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    spec = librosa.stft(y, n_fft=1024, hop_length=256, win_length=1024, window="hann",
                        center=False)
    basis = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    expected = np.log(np.maximum(basis @ np.sqrt(np.abs(spec) ** 2 + 1e-9), 1e-5)).T
    ours = audio.log_mel_spectrogram(x, ml_collections.ConfigDict(s))
    assert ours.shape == expected.shape == (7000 // 256, 80)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


@pytest.mark.parametrize("log_base, log", [("absent", np.log10), (None, np.log), (2.0, np.log2)])
def test_parallel_wavegan_config_yml_and_its_log_base(tmp_path, log_base, log):
    data = dict(PWG_LJSPEECH, sampling_rate=24000, fft_size=2048, hop_size=300, win_length=1200,
                fmax=None)
    if log_base != "absent":
        data["log_base"] = log_base
    s = audio.mel_settings_from(_write(tmp_path / "config.yml", data))
    assert s["preset"] == "espnet" and s["log_floor"] == 1e-10
    assert (s["sample_rate"], s["n_fft"], s["win_length"], s["hop_length"]) == (
        24000, 2048, 1200, 300)
    assert (s["fmin"], s["fmax"]) == (80.0, 12000.0)  # null fmax: the Nyquist frequency
    x = _audio(9000, seed=1)
    ours = audio.log_mel_spectrogram(x, ml_collections.ConfigDict(s))
    np.testing.assert_allclose(ours, _librosa_centred(x, s, log), atol=2e-4)
    # mel_magnitude inverts the same base.
    base = {np.log10: 10.0, np.log: math.e, np.log2: 2.0}[log]
    np.testing.assert_allclose(
        audio.mel_magnitude(ours, ml_collections.ConfigDict(s)), base ** ours.astype(np.float64),
        rtol=1e-6)


def test_espnet2_fbank_config_and_null_win_length(tmp_path):
    s = audio.mel_settings_from(_write(tmp_path / "config.yaml", ESPNET2_TTS))
    assert s == {"preset": "espnet", "sample_rate": 22050, "n_fft": 1024, "win_length": 1024,
                 "hop_length": 256, "n_mels": 80, "fmin": 80.0, "fmax": 7600.0,
                 "log_floor": 1e-10, "log_base": 10.0}
    x = _audio(6000, seed=2)
    np.testing.assert_allclose(audio.log_mel_spectrogram(x, ml_collections.ConfigDict(s)),
                               _librosa_centred(x, s, np.log10), atol=2e-4)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("config.yml", dict(PWG_LJSPEECH, window="hamming"), r"window: 'hamming'.*Hann"),
        ("config.yml", dict(PWG_LJSPEECH, global_gain_scale=0.5), r"global_gain_scale: 0.5"),
        ("config.yml", dict(ESPNET2_TTS, feats_extract_conf=dict(
            ESPNET2_TTS["feats_extract_conf"], center=False)), r"feats_extract_conf.center"),
        ("config.yml", dict(ESPNET2_TTS, feats_extract="linear_spectrogram"),
         r"feats_extract: 'linear_spectrogram'"),
        ("config.json", {k: v for k, v in HIFIGAN_V1.items() if k != "hop_size"},
         r"missing hop_size"),
        ("config.json", dict(HIFIGAN_V1, fmax=20000), r"fmax=20000.0"),
        ("config.json", {"sample_rate": 16000}, r"not a config this reader knows"),
    ],
)
def test_keys_it_cannot_honour_are_refused_by_name(tmp_path, name, data, message):
    path = _write(tmp_path / name, data)
    with pytest.raises(ValueError, match=message) as info:
        audio.mel_settings_from(path)
    assert path in str(info.value)


def test_an_unreadable_config_is_named(tmp_path):
    (tmp_path / "config.yml").write_text("sampling_rate: [22050\n")
    with pytest.raises(ValueError, match=r"config.yml: not readable YAML"):
        audio.mel_settings_from(str(tmp_path / "config.yml"))
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(ValueError, match=r"expected a .json \(HiFi-GAN\) or .yml/.yaml"):
        audio.mel_settings_from(str(tmp_path / "config.toml"))


def test_a_missing_from_file_is_named():
    config = teacher_config.get_config("ljspeech")
    config.mel.from_file = os.path.join(ROOT, "nonexistent.yml")
    with pytest.raises(FileNotFoundError, match="nonexistent.yml"):
        audio.apply_mel_file(config)


def test_from_file_applied_to_a_config(tmp_path):
    config = teacher_config.get_config("ljspeech")
    config.mel.from_file = _write(tmp_path / "config.yml", dict(
        PWG_LJSPEECH, sampling_rate=24000, fft_size=2048, hop_size=300, win_length=1200))
    changed = audio.apply_mel_file(config)
    assert config.mel.preset == "espnet" and config.mel.hop_length == 300
    assert config.mel.log_base == 10.0 and config.mel.sample_rate == 24000
    assert tuple(config.model.upsample_strides) == (15, 20)  # product: the new hop
    assert config.model.lpc_mel.sample_rate == 24000  # references follow
    assert "model.upsample_strides=(15, 20)" in changed


def test_from_file_at_the_command_line_refuses_with_one_error_line(tmp_path):
    bad = _write(tmp_path / "config.yml", dict(PWG_LJSPEECH, window="blackman"))
    run = subprocess.run(
        [sys.executable, "-m", "launch.train_teacher", "--config=configs/teacher.py:tiny",
         f"--workdir={tmp_path / 'run'}", f"--config.mel.from_file={bad}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: --config.mel.from_file: {bad}: window: 'blackman'; pwavenet's mel definitions "
        "use a Hann window only, so this model's features cannot be reproduced: retrain the TTS "
        "model with hann."
    )
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ statistics


def _stats(n_mels=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(-4.0, 2.0, (500, n_mels)) * rng.uniform(0.5, 2, n_mels)
    return frames, frames.mean(0), frames.std(0)


def _write_layout(tmp_path, layout, frames, mean, std):
    if layout == "pwg_h5":
        path = str(tmp_path / "stats.h5")
        with h5py.File(path, "w") as f:  # Parallel WaveGAN's compute_statistics
            f.create_dataset("mean", data=mean.astype(np.float32))
            f.create_dataset("scale", data=std.astype(np.float32))
    elif layout == "espnet2_npz":
        path = str(tmp_path / "feats_stats.npz")  # ESPnet2's collect_stats
        np.savez(path, count=np.array(len(frames)), sum=frames.sum(0),
                 sum_square=np.square(frames).sum(0))
    elif layout == "npz_std":
        path = str(tmp_path / "stats.npz")
        np.savez(path, mean=mean, std=std)
    else:
        path = str(tmp_path / "stats.npy")  # Parallel WaveGAN's stats.npy
        np.save(path, np.stack([mean, std]))
    return path


LAYOUTS = ["pwg_h5", "espnet2_npz", "npz_std", "pwg_npy"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_stats_layout_round_trips_against_numpy(tmp_path, layout):
    frames, mean, std = _stats()
    path = _write_layout(tmp_path, layout, frames, mean, std)
    got_mean, got_scale = audio.load_mel_stats(path)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(got_scale, std, rtol=1e-4)
    normalized = (frames[:40] - mean) / std  # what the TTS model emits
    np.testing.assert_allclose(
        vocoder_lib.as_model_mel(normalized, 16, input_stats=path), frames[:40], atol=1e-4)
    # (n_mels, frames) files and batches take the same route.
    np.testing.assert_allclose(
        vocoder_lib.as_model_mel(normalized.T[None], 16, input_stats=path,
                                 mel_layout="bands_first")[0], frames[:40], atol=1e-4)


def test_a_stats_file_of_another_layout_is_refused_by_its_keys(tmp_path):
    np.savez(tmp_path / "x.npz", average=np.zeros(4))
    with pytest.raises(ValueError, match=r"arrays \['average'\]; expected mean and scale"):
        audio.load_mel_stats(str(tmp_path / "x.npz"))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("mean", data=np.zeros(4))
    with pytest.raises(ValueError, match=r"no dataset scale"):
        audio.load_mel_stats(str(tmp_path / "x.h5"))
    np.save(tmp_path / "x.npy", np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(3, 4\); expected \(2, n_mels\)"):
        audio.load_mel_stats(str(tmp_path / "x.npy"))
    np.save(tmp_path / "z.npy", np.stack([np.zeros(4), [1, 1, 0, 1]]))
    with pytest.raises(ValueError, match=r"scale <= 0"):
        audio.load_mel_stats(str(tmp_path / "z.npy"))


def test_a_bands_first_mel_without_the_layout_is_refused_with_the_hint():
    with pytest.raises(ValueError, match=r"looks transposed.*mel_layout='bands_first'"):
        vocoder_lib.as_model_mel(np.zeros((16, 30)), 16)
    with pytest.raises(ValueError, match=r"mel_layout='bands_first'; expected \(16, frames\)"):
        vocoder_lib.as_model_mel(np.zeros((30, 16)), 16, mel_layout="bands_first")
    square = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    np.testing.assert_array_equal(vocoder_lib.as_model_mel(square, 16), square)
    np.testing.assert_array_equal(
        vocoder_lib.as_model_mel(square, 16, mel_layout="bands_first"), square.T)


def test_compute_mel_stats_is_the_population_statistics():
    frames, mean, std = _stats(8, seed=3)
    pieces = [frames[:123], frames[123:400], frames[400:]]
    got_mean, got_scale, count = audio.compute_mel_stats(pieces)
    assert count == 500
    np.testing.assert_allclose(got_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(got_scale, std, rtol=1e-5)


# ------------------------------------------------------------------------ models and vocoding


@pytest.fixture(scope="module")
def student_workdir(tmp_path_factory):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import vocoder_helpers

    config, params = vocoder_helpers.teacher_config_and_params()
    root = tmp_path_factory.mktemp("normalized")
    return vocoder_helpers.write_workdirs(root, config, params)[1]


def test_vocode_and_synthesize_take_a_tts_models_normalized_bands_first_mel(
    student_workdir, tmp_path
):
    from pwavenet.jobs import synthesize

    vocoder = vocoder_lib.load_vocoder(student_workdir)
    frames, mean, std = _stats(16, seed=4)
    raw = frames[:37].astype(np.float32)
    path = _write_layout(tmp_path, "pwg_h5", frames, mean, std)
    tts = ((raw - mean) / std).T.astype(np.float32)  # (n_mels, frames), normalized
    expected = vocoder.vocode(raw, seed=2)
    got = vocoder.vocode(tts, seed=2, input_stats=path, mel_layout="bands_first")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    pieces = vocoder.stream(iter(np.array_split(tts.T, 5)), seed=2, input_stats=path)
    np.testing.assert_allclose(np.concatenate(list(pieces)), expected, atol=1e-5)
    np.save(tmp_path / "tts.npy", tts)
    synthesize.vocode_files(student_workdir, str(tmp_path / "tts.npy"), str(tmp_path / "o.wav"),
                            seed=2, progress=False, mel_layout="bands_first", input_stats=path)
    import soundfile

    written, _ = soundfile.read(tmp_path / "o.wav", dtype="float32")
    np.testing.assert_allclose(written, expected, atol=1.0 / 32768)
    with pytest.raises(
        ValueError,
        match=r"tts.npy: as an .npy mel, an array of shape \(16, 37\) looks transposed"
        r".*pass --mel_layout=bands_first",
    ):
        synthesize.vocode_files(student_workdir, str(tmp_path / "tts.npy"),
                                str(tmp_path / "p.wav"), progress=False)


def test_a_model_with_statistics_conditions_on_the_normalized_mel():
    import jax
    import jax.numpy as jnp

    from pwavenet.models import wavenet

    config = teacher_config.get_config("tiny")
    _, mean, std = _stats(16, seed=5)
    plain = wavenet.WaveNet(config.model)
    config.model.mel_mean = tuple(float(v) for v in mean)
    config.model.mel_scale = tuple(float(v) for v in std)
    normalizing = wavenet.WaveNet(config.model)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-0.5, 0.5, (2, 4 * 64)), jnp.float32)
    mel = jnp.asarray(rng.normal(-4, 2, (2, 4, 16)), jnp.float32)
    speaker = jnp.zeros((2,), jnp.int32)
    params = plain.init(jax.random.PRNGKey(0), x, mel, speaker)
    np.testing.assert_allclose(
        normalizing.apply(params, x, mel, speaker),
        plain.apply(params, x, (mel - mean) / std, speaker), atol=1e-5)
    assert np.max(np.abs(normalizing.apply(params, x, mel, speaker)
                         - plain.apply(params, x, mel, speaker))) > 1e-3


@pytest.mark.slow
def test_training_on_normalized_features_saves_the_training_splits_statistics(tmp_path):
    """The tiny teacher with mel.normalization='meanvar' on a wav folder: mel_stats.npz beside
    config.json holds the mean and population std of the train split's log-mels computed here,
    and the saved config's model carries them."""
    import soundfile

    from pwavenet import training
    from pwavenet.data.builders import wav_folder
    from pwavenet.jobs import teacher as teacher_job

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rng = np.random.default_rng(7)
    for i in range(14):
        n = int(rng.integers(30, 60)) * 64 + int(rng.integers(0, 64))
        t = np.arange(n) / 22050
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.normal(size=n)
        soundfile.write(wavs / f"u{i:02d}.wav", (x * 20000).astype(np.int16), 22050,
                        subtype="PCM_16")
    config = teacher_config.get_config("tiny")
    config.data.update(name="wav_folder", manual_dir=str(wavs), data_dir=str(tmp_path / "data"),
                       eval_split="train")
    config.mel.normalization = "meanvar"
    config.train.update(steps=1, eval_every=100, audio_every=100, checkpoint_every=1)
    workdir = str(tmp_path / "run")
    teacher_job.train_and_evaluate(config, workdir)

    train = wav_folder.assign_splits(sorted(p.name for p in wavs.iterdir()))["train"]
    assert 10 <= len(train) < 14
    mels = []
    for name in train:
        pcm, _ = soundfile.read(wavs / name, dtype="int16")
        mels.append(audio.log_mel_spectrogram(audio.pcm16_to_float(pcm), config.mel))
    frames = np.concatenate(mels).astype(np.float64)
    with np.load(os.path.join(workdir, "mel_stats.npz")) as saved:
        np.testing.assert_allclose(saved["mean"], frames.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(saved["scale"], frames.std(0), rtol=1e-4)
        assert int(saved["count"]) == len(frames)
    model = training.load_config(workdir).model
    np.testing.assert_allclose(model.mel_mean, frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.mel_scale, frames.std(0), rtol=1e-4)


def test_saved_statistics_win_over_a_new_pass_and_a_student_needs_its_teachers(tmp_path):
    """prepare() reads the workdir's own mel_stats.npz (a resumed run), else the teacher's;
    the data set named here does not exist, so any pass over data would fail."""
    from configs import student as student_config
    from pwavenet.jobs import mel_stats

    _, mean, std = _stats(16, seed=8)
    run, teacher = tmp_path / "run", tmp_path / "teacher"
    run.mkdir()
    teacher.mkdir()
    audio.save_mel_stats(str(run / "mel_stats.npz"), mean, std, 500)
    config = teacher_config.get_config("tiny")
    config.data.name = "no_such_data"
    config.mel.normalization = "meanvar"
    mel_stats.prepare(config, str(run))
    np.testing.assert_allclose(config.model.mel_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(config.model.mel_scale, std, rtol=1e-6)

    student = student_config.get_config("tiny")
    student.data.name = "no_such_data"
    student.mel.normalization = "meanvar"
    with pytest.raises(FileNotFoundError, match=rf"teacher's workdir {teacher} has no "
                       r"mel_stats.npz"):
        mel_stats.prepare(student, str(tmp_path / "student"), teacher_workdir=str(teacher))
    audio.save_mel_stats(str(teacher / "mel_stats.npz"), mean, std, 500)
    mel_stats.prepare(student, str(tmp_path / "student"), teacher_workdir=str(teacher))
    np.testing.assert_allclose(student.model.mel_scale, std, rtol=1e-6)
    loaded = audio.load_mel_stats(str(tmp_path / "student" / "mel_stats.npz"))
    np.testing.assert_allclose(loaded[0], mean, rtol=1e-6)


def test_linear_prediction_refuses_a_mel_in_another_log_base():
    from pwavenet.models import builders

    config = teacher_config.get_config("tiny")
    config.model.lpc_order = 8
    builders.check_model_against_mel(config)  # natural log: fine
    config.mel.log_base = 10.0
    with pytest.raises(ValueError, match=r"lpc_order=8 inverts natural-log mels, but "
                       r"config.mel.log_base=10.0"):
        builders.check_model_against_mel(config)


def test_a_run_saved_before_the_new_mel_fields_still_resumes():
    """A saved config without mel.preset, log_base, normalization, from_file and the model's
    statistics means what the defaults mean; a real difference is still named."""
    from pwavenet import training

    new = teacher_config.get_config("tiny")
    saved = ml_collections.ConfigDict(json.loads(new.to_json_best_effort()))
    for field in ("preset", "log_base", "normalization", "from_file"):
        del saved.mel[field]
    del saved.model["mel_mean"], saved.model["mel_scale"]
    new.mel.from_file = "where/the/settings/came/from.json"
    assert training.config_mismatches(saved, new, ("model", "mel")) == []
    new.mel.normalization = "meanvar"
    assert training.config_mismatches(saved, new, ("model", "mel")) == [
        "mel.normalization: saved 'none', now 'meanvar'"]


@pytest.mark.slow
def test_synthesize_flags_at_the_command_line(student_workdir, tmp_path):
    """--mel_layout=bands_first and --input_stats from the command line write vocode's audio
    (the refusal without the layout: test_vocode_and_synthesize_take_...)."""
    import soundfile

    frames, mean, std = _stats(16, seed=9)
    raw = frames[:21].astype(np.float32)
    stats = _write_layout(tmp_path, "espnet2_npz", frames, mean, std)
    np.save(tmp_path / "tts.npy", ((raw - mean) / std).T.astype(np.float32))

    run = subprocess.run(
        [sys.executable, "-m", "launch.synthesize", f"--workdir={student_workdir}",
         f"--input={tmp_path / 'tts.npy'}", f"--output={tmp_path / 'out.wav'}", "--noprogress",
         "--mel_layout=bands_first", f"--input_stats={stats}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    written, _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    expected = vocoder_lib.load_vocoder(student_workdir).vocode(raw)
    np.testing.assert_allclose(written, expected, atol=1.5 / 32768)
