"""Tests for the log-mel features (pwavenet.audio) and the input pipeline.

Log-mel references are numpy/scipy transcriptions of the definition (np.fft.rfft on
manually framed and windowed audio, an HTK mel filterbank written out here). Pipeline tests
run on the small espeak corpus, built once per module in a temporary data_dir, and on
mocked ljspeech / vctk (tfds.testing.mock_data).
"""

import concurrent.futures
import shutil

import jax
import numpy as np
import pytest
import scipy.signal

from configs import teacher
from pwavenet import audio
from pwavenet.data import input_pipeline
import tensorflow as tf
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)


def _mel_config(**overrides):
    c = teacher.get_config("tiny").mel
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


MEL_CONFIGS = {
    "tiny": _mel_config(),  # n_fft 256 = win, hop 64, 16 mels
    "espeak": teacher.get_config("espeak").mel,  # 1024, 1024, 256, 80 mels
    "short_window": _mel_config(n_fft=512, win_length=300, hop_length=100, n_mels=24),
}


# ------------------------------------------------------------------- numpy reference


def _htk_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


def numpy_mel_filterbank(c):
    """(n_fft // 2 + 1, n_mels) triangles on the HTK mel scale; the DC bin gets no weight."""
    freqs = np.linspace(0.0, c.sample_rate / 2, c.n_fft // 2 + 1)
    edges = np.linspace(_htk_mel(c.fmin), _htk_mel(c.fmax), c.n_mels + 2)
    m = _htk_mel(freqs)[:, None]
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(
        0.0, np.minimum((m - lower) / (center - lower), (upper - m) / (upper - center))
    )
    weights[0] = 0.0
    return weights


def numpy_log_mel(x, c):
    """float64 reference of audio.log_mel_spectrogram for one 1-D waveform."""
    x = np.asarray(x, np.float64)
    left = (c.n_fft - c.hop_length) // 2
    padded = np.pad(x, (left, c.n_fft - c.hop_length - left), mode="reflect")
    frames = len(x) // c.hop_length
    starts = c.hop_length * np.arange(frames)
    segments = padded[starts[:, None] + np.arange(c.n_fft)[None, :]]
    window = np.zeros(c.n_fft)
    offset = (c.n_fft - c.win_length) // 2
    window[offset : offset + c.win_length] = scipy.signal.get_window("hann", c.win_length)
    magnitude = np.abs(np.fft.rfft(segments * window, n=c.n_fft, axis=-1))
    return np.log(np.maximum(magnitude @ numpy_mel_filterbank(c), c.log_floor))


# --------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_mel_filterbank_is_htk_triangles(name):
    c = MEL_CONFIGS[name]
    tf_matrix = tf.signal.linear_to_mel_weight_matrix(
        c.n_mels, c.n_fft // 2 + 1, c.sample_rate, c.fmin, c.fmax
    ).numpy()
    np.testing.assert_allclose(tf_matrix, numpy_mel_filterbank(c), atol=2e-5)


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_log_mel_matches_numpy_reference(name):
    c = MEL_CONFIGS[name]
    rng = np.random.RandomState(0)
    # Noise plus a tone: no frame anywhere near the log floor.
    length = 40 * c.hop_length + c.hop_length // 3  # also a T that is not a multiple of hop
    t = np.arange(length) / c.sample_rate
    x = (0.3 * rng.uniform(-1, 1, (2, length)) + 0.4 * np.sin(2 * np.pi * 523 * t)).astype(
        np.float32
    )
    got = audio.log_mel_spectrogram(x, c)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == (2, length // c.hop_length, c.n_mels)
    for i in range(2):
        np.testing.assert_allclose(got[i], numpy_log_mel(x[i], c), atol=2e-3, rtol=0)


def test_log_mel_floor_and_jax_input():
    c = MEL_CONFIGS["tiny"]
    silence = audio.log_mel_spectrogram(np.zeros(640, np.float32), c)
    np.testing.assert_allclose(silence, np.log(c.log_floor), rtol=1e-6)
    x = np.random.RandomState(1).uniform(-1, 1, 640).astype(np.float32)
    np.testing.assert_array_equal(
        audio.log_mel_spectrogram(jax.numpy.asarray(x), c), audio.log_mel_spectrogram(x, c)
    )


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_frame_count_is_samples_over_hop_eagerly_and_in_tf_data(name):
    c = MEL_CONFIGS[name]
    hop = c.hop_length
    lengths = [8 * hop, 8 * hop + 1, 9 * hop - 1, 33 * hop]
    for n in lengths:
        assert audio.log_mel_spectrogram(np.zeros(n, np.float32), c).shape == (n // hop, c.n_mels)
    rng = np.random.RandomState(2)
    signals = [rng.uniform(-1, 1, n).astype(np.float32) for n in lengths]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(signals), output_signature=tf.TensorSpec([None], tf.float32)
    )
    ds = ds.map(lambda x: audio.log_mel_spectrogram(x, c))  # traced: tf in, tf out
    for x, mel in zip(signals, ds.as_numpy_iterator()):
        np.testing.assert_allclose(mel, audio.log_mel_spectrogram(x, c), atol=1e-5)


@pytest.mark.parametrize("name", list(MEL_CONFIGS))
def test_a_burst_in_hop_block_i_lights_up_frame_i(name):
    c = MEL_CONFIGS[name]
    hop, frames = c.hop_length, 16
    rng = np.random.RandomState(3)
    for block in (0, 1, 5, 9, frames - 2, frames - 1):
        x = np.zeros(frames * hop, np.float32)
        x[block * hop : (block + 1) * hop] = rng.uniform(-1, 1, hop)
        energy = np.exp(audio.log_mel_spectrogram(x, c)).sum(axis=-1)
        assert np.argmax(energy) == block, (block, np.round(energy, 2))


def test_log_mel_errors():
    c = MEL_CONFIGS["espeak"]
    with pytest.raises(ValueError, match="more than 384 samples"):
        audio.log_mel_spectrogram(np.zeros(300, np.float32), c)
    with pytest.raises(ValueError, match="fmax"):
        audio.log_mel_spectrogram(np.zeros(4096, np.float32), _mel_config(fmax=20000.0))
    with pytest.raises(ValueError, match="win_length"):
        audio.log_mel_spectrogram(np.zeros(4096, np.float32), _mel_config(win_length=512))


def _nearest_pcm16(x):
    """int16 level whose centre (2 s + 1) / 65535 is nearest to x (clipped), in float64."""
    x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    return np.clip(np.round(x * 32767.5 - 0.5), -32768, 32767).astype(np.int16)


def test_pcm16_maps_onto_the_16bit_bin_centres():
    s = np.arange(-32768, 32768).astype(np.int16)
    x = audio.pcm16_to_float(s)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.asarray(audio.bin_index(x)), s.astype(np.int64) + 32768)
    np.testing.assert_array_equal(_nearest_pcm16(x), s)
    np.testing.assert_array_equal(audio.pcm16_to_float(tf.constant(s)).numpy(), x)
    y = np.random.RandomState(4).uniform(-1.2, 1.2, 10000)
    pcm = _nearest_pcm16(y)
    centre = audio.pcm16_to_float(pcm).astype(np.float64)
    assert np.all(np.abs(centre - np.clip(y, -1, 1)) <= 1.0 / 65535.0 + 1e-7)
    # bin_index rounds in float32: it may pick the other side of a near tie.
    diff = pcm.astype(np.int64) - (np.asarray(audio.bin_index(y)) - 32768)
    assert np.all(np.abs(diff) <= 1) and np.mean(diff == 0) > 0.99


# --------------------------------------------------------------------- the pipeline

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    input_pipeline.get_builder(_config(espeak_small_data_dir))  # builds it on first use
    return espeak_small_data_dir


def _config(data_dir, **data):
    c = teacher.get_config("tiny")
    c.data.name = "espeak_corpus/small"
    c.data.data_dir = data_dir
    c.model.num_speakers = 8
    for k, v in data.items():
        setattr(c.data, k, v)
    return c


def _utterances(data_dir, split):
    builder = tfds.builder("espeak_corpus/small", data_dir=data_dir)
    return {e["id"].decode(): e for e in builder.as_dataset(split=split).as_numpy_iterator()}


def _locate(row_audio, utterances, hop):
    """Every hop-aligned (id, start sample) whose samples equal the crop (several only when
    the crop is all silence, which espeak-ng pads utterances with)."""
    pcm = _nearest_pcm16(row_audio)
    found = []
    for uid, e in utterances.items():
        full = e["audio"]
        if len(full) < len(pcm):
            continue
        windows = np.lib.stride_tricks.sliding_window_view(full, len(pcm))[::hop]
        maybe = np.flatnonzero(np.all(windows[:, :16] == pcm[:16], axis=1))  # cheap first
        found += [(uid, int(k) * hop) for k in maybe if np.array_equal(windows[k], pcm)]
    assert found, "the crop is not a hop-aligned piece of any utterance"
    return found


def _check_batch_against_recomputation(batch, utterances, c):
    """Every row: audio is a hop-aligned crop, mel is the full utterance's mel there.

    Returns the (id, start) of the rows whose place is unambiguous.
    """
    hop, crop = c.mel.hop_length, c.data.crop_samples
    assert batch["audio"].shape == (c.train.batch_size, crop) and batch["audio"].dtype == np.float32
    assert batch["mel"].shape == (c.train.batch_size, crop // hop, c.mel.n_mels)
    assert batch["mel"].dtype == np.float32 and batch["speaker"].dtype == np.int32
    waves, mels = {}, {}
    places = []
    for i in range(len(batch["audio"])):
        candidates = _locate(batch["audio"][i], utterances, hop)
        matches = []
        for uid, start in candidates:
            if uid not in waves:
                waves[uid] = audio.pcm16_to_float(utterances[uid]["audio"])
                mels[uid] = audio.log_mel_spectrogram(waves[uid], c.mel)
            np.testing.assert_array_equal(batch["audio"][i], waves[uid][start : start + crop])
            want = mels[uid][start // hop : (start + crop) // hop]
            if (
                np.allclose(batch["mel"][i], want, atol=1e-4, rtol=0)
                and batch["speaker"][i] == utterances[uid]["speaker"]
            ):
                matches.append((uid, start))
        assert matches, f"row {i}: no candidate place has the batch's mel and speaker"
        if len(candidates) == 1:
            places.append(candidates[0])
    assert len(places) >= len(batch["audio"]) // 2
    return places


def test_train_batches_are_aligned_crops_of_the_full_utterance_mel(data_dir):
    c = _config(data_dir)
    datasets = input_pipeline.create_datasets(c)
    assert datasets.info == input_pipeline.DataInfo("espeak_corpus/small", 22050, 8)
    train = _utterances(data_dir, "train")
    places = []
    for _ in range(3):
        places += _check_batch_against_recomputation(next(datasets.train), train, c)
    assert len({start for _, start in places}) > 8  # random crop positions
    assert len({uid for uid, _ in places}) > 8  # shuffled utterances

    again = input_pipeline.create_datasets(c)  # the stream is a function of the config
    first = next(again.train)
    datasets = input_pipeline.create_datasets(c)
    np.testing.assert_array_equal(next(datasets.train)["audio"], first["audio"])


def test_validation_batches_are_deterministic_centred_crops(data_dir):
    c = _config(data_dir)
    datasets = input_pipeline.create_datasets(c, train=False)
    assert datasets.train is None
    batches = list(datasets.eval())
    assert len(batches) == 1  # 8 validation utterances, batch 8
    validation = _utterances(data_dir, "validation")
    places = _check_batch_against_recomputation(batches[0], validation, c)
    hop, crop = c.mel.hop_length, c.data.crop_samples
    for uid, start in places:
        frames = len(validation[uid]["audio"]) // hop
        assert start == (frames - crop // hop) // 2 * hop
    assert sorted(batches[0]["speaker"].tolist()) == list(range(8))  # one per speaker
    for again in (datasets.eval(), input_pipeline.create_datasets(c, train=False).eval()):
        for a, b in zip(batches, again):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    exactly = list(datasets.eval(3))  # cycles the split to give exactly 3 batches
    assert len(exactly) == 3
    np.testing.assert_array_equal(exactly[2]["audio"], batches[0]["audio"])


def test_validation_utterances_are_whole_and_aligned(data_dir):
    c = _config(data_dir)
    got = input_pipeline.validation_utterances(c, num_utterances=3, max_seconds=1.0)
    hop = c.mel.hop_length
    length = (22050 // hop) * hop
    assert got["audio"].shape == (3, length) and got["mel"].shape == (3, length // hop, 16)
    assert got["speaker"].dtype == np.int32 and got["mel"].dtype == np.float32
    validation = _utterances(data_dir, "validation")
    for i, uid in enumerate(got["id"]):
        full = audio.pcm16_to_float(validation[uid]["audio"])
        np.testing.assert_array_equal(got["audio"][i], full[:length])
        np.testing.assert_allclose(
            got["mel"][i], audio.log_mel_spectrogram(full, c.mel)[: length // hop], atol=1e-5
        )
        assert got["speaker"][i] == validation[uid]["speaker"]
    again = input_pipeline.validation_utterances(c, num_utterances=3, max_seconds=1.0)
    np.testing.assert_array_equal(again["audio"], got["audio"])
    # Asking for more than the shortest: cut to a common length, a multiple of the hop.
    long = input_pipeline.validation_utterances(c, num_utterances=8, max_seconds=10.0)
    shortest = min(len(e["audio"]) for e in validation.values())
    assert long["audio"].shape == (8, shortest // hop * hop)


def test_processes_read_disjoint_slices(data_dir):
    c = _config(data_dir)
    train = _utterances(data_dir, "train")
    validation = _utterances(data_dir, "validation")
    c4 = _config(data_dir)
    c4.train.batch_size = 4  # what each of the two processes gets
    seen_train, seen_eval = [], []
    for index in range(2):
        d = input_pipeline.create_datasets(
            c, process_index=index, process_count=2, local_device_count=1
        )
        assert d.batch_size == 4
        ids = set()
        for _ in range(6):
            batch = next(d.train)
            ids |= {uid for uid, _ in _check_batch_against_recomputation(batch, train, c4)}
        seen_train.append(ids)
        (batch,) = list(d.eval())
        seen_eval.append(
            {uid for uid, _ in _check_batch_against_recomputation(batch, validation, c4)}
        )
    assert not seen_train[0] & seen_train[1]
    assert len(seen_train[0]) > 4 and len(seen_train[1]) > 4
    assert not seen_eval[0] & seen_eval[1]
    assert len(seen_eval[0]) >= 2 and len(seen_eval[1]) >= 2


def test_concurrent_first_use_builds_once(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    c = _config(str(tmp_path))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        builders = list(pool.map(lambda _: input_pipeline.get_builder(c), range(2)))
    for builder in builders:
        assert builder.info.splits["validation"].num_examples == 8


def test_config_errors_name_the_fields(data_dir):
    c = _config(data_dir)
    c.train.batch_size = 12
    with pytest.raises(ValueError, match=r"config.train.batch_size=12 .* 8 \(1 processes x 8"):
        input_pipeline.create_datasets(c)
    c.train.batch_size = 8
    with pytest.raises(ValueError, match=r"batch_size=8 .* 16 \(2 processes x 8 local"):
        input_pipeline.create_datasets(c, process_index=0, process_count=2)
    c.data.crop_samples = 500
    with pytest.raises(ValueError, match="crop_samples=500 .*hop_length=64"):
        input_pipeline.create_datasets(c)
    c = _config(data_dir)
    c.model.num_speakers = 4
    with pytest.raises(ValueError, match="8 speakers but config.model.num_speakers=4"):
        input_pipeline.create_datasets(c)
    c = _config(data_dir, name="librispeech")
    with pytest.raises(ValueError, match="not one of"):
        input_pipeline.create_datasets(c)


def test_too_short_utterances_are_dropped_or_fail(data_dir):
    crop = 861 * 64  # 2.5 s: some of the corpus is shorter
    train = _utterances(data_dir, "train")
    short = {uid for uid, e in train.items() if len(e["audio"]) < crop}
    assert 0 < len(short) < len(train) - 8

    datasets = input_pipeline.create_datasets(_config(data_dir, crop_samples=crop))
    for _ in range(4):  # 32 crops: at least one full pass over the 24 utterances
        batch = next(datasets.train)
        assert batch["audio"].shape == (8, crop)
    assert set(datasets.dropped.ids) == short
    assert all(n < crop for n in datasets.dropped.ids.values())

    failing = input_pipeline.create_datasets(_config(data_dir, crop_samples=crop, bad_audio="fail"))
    with pytest.raises(
        ValueError,
        match=r"Utterance 's\d_\d+' has \d+ samples, fewer than "
        r"config.data.crop_samples",
    ):
        next(failing.train)


# --------------------------------------------------------------- ljspeech and vctk (mocked)


def _mock_speech(num_examples=12, min_len=600, max_len=3000):
    """as_dataset replacement: int16 speech of usable lengths for any builder's features."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del split, decoders, read_config, shuffle_files
        spec = {
            k: tf.TensorSpec(v.shape, v.tf_dtype)
            for k, v in self.info.features.get_tensor_info().items()
        }
        features = self.info.features
        num_classes = features["speaker"].num_classes if "speaker" in features else 1

        def examples():
            for i, speech in enumerate(_mock_waves(num_examples, min_len, max_len)):
                example = {"id": f"utt{i:03d}", "speech": speech}
                for k, s in spec.items():
                    if k not in example:
                        example[k] = "text" if s.dtype == tf.string else i % num_classes
                yield example

        return tf.data.Dataset.from_generator(examples, output_signature=spec)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _mock_waves(num_examples, min_len, max_len):
    rng = np.random.RandomState(5)
    return [
        rng.randint(-32768, 32768, rng.randint(min_len, max_len)).astype(np.int16)
        for _ in range(num_examples)
    ]


def test_mock_ljspeech_gives_correct_batches():
    c = teacher.get_config("tiny")
    c.data.name = "ljspeech"
    assert input_pipeline.resolve_split(c, "validation") == "train[98%:99%]"
    utterances = {
        f"utt{i:03d}": {"audio": w, "speaker": 0} for i, w in enumerate(_mock_waves(12, 600, 3000))
    }
    with _mock_speech():
        datasets = input_pipeline.create_datasets(c)
        assert datasets.info.num_speakers == 1
        batch = next(datasets.train)
        _check_batch_against_recomputation(batch, utterances, c)
        assert np.all(batch["speaker"] == 0)
        assert np.abs(batch["audio"]).max() <= 1.0
        (eval_batch,) = list(datasets.eval(1))
        _check_batch_against_recomputation(eval_batch, utterances, c)
        whole = input_pipeline.validation_utterances(c, num_utterances=2, max_seconds=0.05)
        assert whole["audio"].shape == (2, 1088) and whole["mel"].shape == (2, 17, 16)


def test_mock_vctk_needs_its_sample_rate():
    c = teacher.get_config("tiny")
    c.data.name = "vctk"
    with _mock_speech():
        with pytest.raises(
            ValueError,
            match=r"48000 Hz but config.mel.sample_rate=22050.*"
            r"--config.mel.sample_rate=48000",
        ):
            input_pipeline.create_datasets(c)
        c.mel.sample_rate = 48000
        with pytest.raises(ValueError, match="110 speakers but config.model.num_speakers=8"):
            input_pipeline.create_datasets(c)
        c.model.num_speakers = 110
        datasets = input_pipeline.create_datasets(c)
        batch = next(datasets.train)
    assert batch["audio"].shape == (8, 512) and batch["mel"].shape == (8, 8, 16)
    assert batch["speaker"].dtype == np.int32 and len(set(batch["speaker"].tolist())) > 1
    assert batch["speaker"].max() < 110


@pytest.mark.parametrize(
    "policy, message",
    [
        ("fail", "fewer than config.data.crop_samples"),
        ("skip", "gave no batch of 8 on process 0: too few utterances .* \\(4 dropped"),
    ],
)
def test_default_mock_data_is_too_short_for_a_crop(policy, message):
    c = teacher.get_config("tiny")
    c.data.name = "ljspeech"
    c.data.bad_audio = policy
    with tfds.testing.mock_data(num_examples=4):  # 5 to 50 samples each
        datasets = input_pipeline.create_datasets(c)
        with pytest.raises(ValueError, match=message):
            next(datasets.train)
