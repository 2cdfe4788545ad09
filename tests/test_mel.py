"""Tests for the mel presets of pwavenet.audio (mel.preset): each equals its recipe's formula
computed here with librosa on random audio, and the rate table's hops and strides agree."""

import librosa
import ml_collections
import numpy as np
import pytest

from pwavenet import audio


def _config(name, sample_rate=22050, **overrides):
    settings = audio.mel_settings(name, sample_rate)
    settings.update(overrides)
    return ml_collections.ConfigDict(settings)


def _audio(samples, seed=0):
    return np.random.default_rng(seed).uniform(-0.6, 0.6, samples).astype(np.float32)


@pytest.mark.parametrize("sample_rate", sorted(audio.PRESET_HOPS))
@pytest.mark.parametrize("fmin, fmax", [(0.0, 8000.0), (80.0, 7600.0), (0.0, None)])
def test_slaney_filterbank_is_librosas(sample_rate, fmin, fmax):
    c = audio.mel_settings("hifigan", sample_rate)
    fmax = fmax or sample_rate / 2
    ours = audio.slaney_filterbank(sample_rate, c["n_fft"], 80, fmin, fmax)
    theirs = librosa.filters.mel(sr=sample_rate, n_fft=c["n_fft"], n_mels=80, fmin=fmin, fmax=fmax)
    assert ours.shape == (c["n_fft"] // 2 + 1, 80)
    np.testing.assert_allclose(ours, theirs.T, rtol=1e-5, atol=1e-7)


def _hifigan_reference(x, c):
    """HiFi-GAN's meldataset.mel_spectrogram in numpy and librosa: reflect padding of
    (n_fft - hop) / 2 on both sides, an uncentred STFT with a periodic Hann window,
    sqrt(|S|^2 + 1e-9), librosa's mel filters, natural log of max(mel, 1e-5)."""
    pad = (c.n_fft - c.hop_length) // 2
    y = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    spec = librosa.stft(
        y,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        window="hann",
        center=False,
    )
    magnitude = np.sqrt(np.abs(spec) ** 2 + 1e-9)
    basis = librosa.filters.mel(
        sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax
    )
    return np.log(np.maximum(basis @ magnitude, 1e-5)).T


def _espnet_reference(x, c):
    """Parallel WaveGAN's / ESPnet's logmelfilterbank: a centred STFT (reflect padding),
    |S|, librosa's mel filters, log10 of max(mel, 1e-10); the first T // hop frames."""
    spec = librosa.stft(
        x.astype(np.float64),
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
    )
    basis = librosa.filters.mel(
        sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax
    )
    mel = np.log10(np.maximum(basis @ np.abs(spec), 1e-10)).T
    return mel[: len(x) // c.hop_length]


@pytest.mark.parametrize(
    "preset, reference", [("hifigan", _hifigan_reference), ("espnet", _espnet_reference)]
)
@pytest.mark.parametrize("sample_rate", [22050, 24000, 48000])
def test_presets_equal_their_recipes_formula(preset, reference, sample_rate):
    c = _config(preset, sample_rate)
    x = _audio(int(0.3 * sample_rate) + 17, seed=sample_rate)
    ours = audio.log_mel_spectrogram(x, c)
    expected = reference(x, c)
    assert ours.shape == (len(x) // c.hop_length, c.n_mels) == expected.shape
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=0)
    # The presets differ from each other and from the project's definition.
    own = audio.log_mel_spectrogram(x, _config(preset, sample_rate, preset="pwavenet"))
    assert np.max(np.abs(own - ours)) > 0.1


def test_a_batch_and_the_data_pipelines_tensors_take_the_preset():
    import tensorflow as tf

    c = _config("espnet")
    x = np.stack([_audio(5000, seed=1), _audio(5000, seed=2)])
    batch = audio.log_mel_spectrogram(x, c)
    np.testing.assert_allclose(batch[1], _espnet_reference(x[1], c), atol=2e-4)
    graph = tf.function(lambda a: audio.log_mel_spectrogram(a, c))(tf.constant(x))
    np.testing.assert_allclose(graph.numpy(), batch, atol=1e-5)


def test_a_config_without_the_field_keeps_the_projects_definition():
    c = _config("pwavenet")
    del c["preset"]
    x = _audio(4000)
    np.testing.assert_array_equal(
        audio.log_mel_spectrogram(x, c), audio.log_mel_spectrogram(x, _config("pwavenet"))
    )
    with pytest.raises(ValueError, match=r"mel.preset='slaney'; expected one of"):
        audio.log_mel_spectrogram(x, _config("pwavenet", preset="slaney"))


@pytest.mark.parametrize("sample_rate", sorted(audio.PRESET_HOPS))
def test_rate_table_hops_windows_and_strides_agree(sample_rate):
    c = audio.mel_settings("hifigan", sample_rate)
    hop = c["hop_length"]
    assert c["win_length"] == 4 * hop <= c["n_fft"] < 8 * hop
    assert c["fmax"] <= sample_rate / 2
    a, b = audio.upsample_strides(hop)
    assert a * b == hop and a <= b
    if sample_rate not in (22050, 44100):
        assert hop / sample_rate == pytest.approx(0.0125)
    with pytest.raises(ValueError, match="presets cover"):
        audio.mel_settings("hifigan", 8000)


def test_the_vctk_variant_is_the_hifigan_preset_at_48khz():
    from configs import student as student_config
    from configs import teacher as teacher_config

    config = teacher_config.get_config("vctk")
    expected = audio.mel_settings("hifigan", 48000)
    assert {k: config.mel[k] for k in expected} == expected
    assert tuple(config.model.upsample_strides) == audio.upsample_strides(600) == (24, 25)
    assert config.data.crop_samples % config.mel.hop_length == 0
    student = student_config.get_config("vctk")
    assert student.mel.to_dict() == config.mel.to_dict()
    assert tuple(student.model.upsample_strides) == (24, 25)


def test_a_vocoder_takes_a_tts_models_mel_in_its_preset_as_it_is():
    """A model trained with mel.preset 'hifigan' computes (Vocoder.mel) and so expects
    HiFi-GAN's mel: a TTS model's output in that definition needs no conversion."""
    from configs import teacher as teacher_config
    from pwavenet.models import builders
    from pwavenet import vocoder as vocoder_lib
    import vocoder_helpers

    config = teacher_config.get_config("tiny")
    config.mel.preset = "hifigan"
    model = builders.build_teacher(config)
    v = vocoder_lib.Vocoder(config, vocoder_helpers.random_params(model, 0.3))
    x = _audio(64 * 30 + 5)
    np.testing.assert_allclose(v.mel(x), _hifigan_reference(x, config.mel), atol=2e-4)

    config.model.lpc_order = 16  # the linear predictor inverts the project's own mel only
    with pytest.raises(ValueError, match="mel.preset='hifigan'; set model.lpc_order=0"):
        builders.build_teacher(config)
