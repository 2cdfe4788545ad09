"""Tests for the tf.data pipelines, pwavenet.data.pipelines: training and validation batches
checked crop by crop against a recomputation from the stored utterances (each crop's audio
located in its utterance, its mel compared with the full utterance's log-mel there), the
per-process slices, the refusals, and too-short utterances.

They run on the small espeak corpus (built once per session in a temporary data_dir) and on
mocked ljspeech / vctk (tfds.testing.mock_data).
"""

import numpy as np
import pytest

from configs import teacher
from data_helpers import espeak_small_config
from data_helpers import stored_utterances
from pwavenet import audio
from pwavenet.data import lookup
from pwavenet.data import pipelines
from pwavenet.data import sources
from pwavenet.data import whole_utterances
import tensorflow as tf
import tensorflow_datasets as tfds

tfds.display_progress_bar(False)


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    lookup.get_builder(espeak_small_config(espeak_small_data_dir))  # builds it on first use
    return espeak_small_data_dir


def _locate(row_audio, utterances, hop):
    """Every hop-aligned (id, start sample) whose samples equal the crop (several only when
    the crop is all silence, which espeak-ng pads utterances with)."""
    found = []
    for uid, e in utterances.items():
        full = audio.pcm16_to_float(e["audio"])  # exact: the 16-bit bin centres
        if len(full) < len(row_audio):
            continue
        windows = np.lib.stride_tricks.sliding_window_view(full, len(row_audio))[::hop]
        maybe = np.flatnonzero(np.all(windows[:, :16] == row_audio[:16], axis=1))  # cheap first
        found += [(uid, int(k) * hop) for k in maybe if np.array_equal(windows[k], row_audio)]
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
    c = espeak_small_config(data_dir)
    datasets = pipelines.create_datasets(c)
    assert datasets.info == sources.DataInfo("espeak_corpus/small", 22050, 8)
    train = stored_utterances(data_dir, "train")
    places = []
    for _ in range(3):
        places += _check_batch_against_recomputation(next(datasets.train), train, c)
    assert len({start for _, start in places}) > 8  # random crop positions
    assert len({uid for uid, _ in places}) > 8  # shuffled utterances

    again = pipelines.create_datasets(c)  # the stream is a function of the config
    first = next(again.train)
    datasets = pipelines.create_datasets(c)
    np.testing.assert_array_equal(next(datasets.train)["audio"], first["audio"])


def test_validation_batches_are_deterministic_centred_crops(data_dir):
    c = espeak_small_config(data_dir)
    datasets = pipelines.create_datasets(c, train=False)
    assert datasets.train is None
    batches = list(datasets.eval())
    assert len(batches) == 1  # 8 validation utterances, batch 8
    validation = stored_utterances(data_dir, "validation")
    places = _check_batch_against_recomputation(batches[0], validation, c)
    hop, crop = c.mel.hop_length, c.data.crop_samples
    for uid, start in places:
        frames = len(validation[uid]["audio"]) // hop
        assert start == (frames - crop // hop) // 2 * hop
    assert sorted(batches[0]["speaker"].tolist()) == list(range(8))  # one per speaker
    for again in (datasets.eval(), pipelines.create_datasets(c, train=False).eval()):
        for a, b in zip(batches, again):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    exactly = list(datasets.eval(3))  # cycles the split to give exactly 3 batches
    assert len(exactly) == 3
    np.testing.assert_array_equal(exactly[2]["audio"], batches[0]["audio"])


def test_processes_read_disjoint_slices(data_dir):
    c = espeak_small_config(data_dir)
    train = stored_utterances(data_dir, "train")
    validation = stored_utterances(data_dir, "validation")
    c4 = espeak_small_config(data_dir)
    c4.train.batch_size = 4  # what each of the two processes gets
    seen_train, seen_eval = [], []
    for index in range(2):
        d = pipelines.create_datasets(
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


def test_config_errors_name_the_fields(data_dir):
    c = espeak_small_config(data_dir)
    c.train.batch_size = 12
    with pytest.raises(ValueError, match=r"config.train.batch_size=12 .* 8 \(1 processes x 8"):
        pipelines.create_datasets(c)
    c.train.batch_size = 8
    with pytest.raises(ValueError, match=r"batch_size=8 .* 16 \(2 processes x 8 local"):
        pipelines.create_datasets(c, process_index=0, process_count=2)
    c.data.crop_samples = 500
    with pytest.raises(ValueError, match="crop_samples=500 .*hop_length=64"):
        pipelines.create_datasets(c)
    c = espeak_small_config(data_dir)
    c.model.num_speakers = 4
    with pytest.raises(ValueError, match="8 speakers but config.model.num_speakers=4"):
        pipelines.create_datasets(c)
    c = espeak_small_config(data_dir, name="librispeech")
    with pytest.raises(ValueError, match="not one of"):
        pipelines.create_datasets(c)


def test_too_short_utterances_are_dropped_or_fail(data_dir):
    crop = 861 * 64  # 2.5 s: some of the corpus is shorter
    train = stored_utterances(data_dir, "train")
    short = {uid for uid, e in train.items() if len(e["audio"]) < crop}
    assert 0 < len(short) < len(train) - 8

    datasets = pipelines.create_datasets(espeak_small_config(data_dir, crop_samples=crop))
    for _ in range(4):  # 32 crops: at least one full pass over the 24 utterances
        batch = next(datasets.train)
        assert batch["audio"].shape == (8, crop)
    assert set(datasets.dropped.ids) == short
    assert all(n < crop for n in datasets.dropped.ids.values())

    failing = pipelines.create_datasets(
        espeak_small_config(data_dir, crop_samples=crop, bad_audio="fail")
    )
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
    assert sources.resolve_split(c, "validation") == "train[98%:99%]"
    utterances = {
        f"utt{i:03d}": {"audio": w, "speaker": 0} for i, w in enumerate(_mock_waves(12, 600, 3000))
    }
    with _mock_speech():
        datasets = pipelines.create_datasets(c)
        assert datasets.info.num_speakers == 1
        batch = next(datasets.train)
        _check_batch_against_recomputation(batch, utterances, c)
        assert np.all(batch["speaker"] == 0)
        assert np.abs(batch["audio"]).max() <= 1.0
        (eval_batch,) = list(datasets.eval(1))
        _check_batch_against_recomputation(eval_batch, utterances, c)
        whole = whole_utterances.validation_utterances(c, num_utterances=2, max_seconds=0.05)
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
            pipelines.create_datasets(c)
        c.mel.sample_rate = 48000
        with pytest.raises(ValueError, match="110 speakers but config.model.num_speakers=8"):
            pipelines.create_datasets(c)
        c.model.num_speakers = 110
        datasets = pipelines.create_datasets(c)
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
        datasets = pipelines.create_datasets(c)
        with pytest.raises(ValueError, match=message):
            next(datasets.train)
