"""Tests for the builder lookup, pwavenet.data.lookup: a first use builds the corpus once however
many callers ask at the same time, and a local build is quiet (no tfds progress bars, no tfds
deprecation notice) unless absl's verbosity is raised, as `-v 1` does.

The quiet build is checked on a real wav_folder build (a few wavs: the same get_builder path as
the embedded corpus's, in a fraction of its time) with the process's stderr captured.
"""

import concurrent.futures
import inspect
import shutil

import numpy as np
import pytest
import soundfile
from absl import logging

from configs import teacher
from data_helpers import espeak_small_config
from pwavenet.data import lookup
import tensorflow_datasets as tfds
from tensorflow_datasets.core.features import feature as tfds_feature

RATE = 22050
PROGRESS_BARS = ("Generating splits", "Shuffling")


def test_concurrent_first_use_builds_once(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    c = espeak_small_config(str(tmp_path))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        builders = list(pool.map(lambda _: lookup.get_builder(c), range(2)))
    for builder in builders:
        assert builder.info.splits["validation"].num_examples == 8


@pytest.fixture
def verbosity():
    """Sets absl's verbosity for one test (as `--verbosity=N` does) and restores it, with
    tfds's progress bars off again as the other tests keep them."""
    before = logging.get_verbosity()
    yield logging.set_verbosity
    logging.set_verbosity(before)
    tfds.display_progress_bar(False)


def _wav_folder_config(tmp_path):
    folder = tmp_path / "wavs"
    folder.mkdir()
    t = np.arange(RATE) / RATE
    for i in range(4):
        tone = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) * 32767).astype(np.int16)
        soundfile.write(folder / f"u{i}.wav", tone, RATE, subtype="PCM_16")
    c = teacher.get_config("tiny")
    c.data.name = "wav_folder"
    c.data.manual_dir = str(folder)
    c.data.data_dir = str(tmp_path / "built")
    return c


@pytest.mark.parametrize("level, bars_shown", [(0, False), (1, True)])
def test_a_local_build_shows_progress_bars_only_when_verbose(
    tmp_path, capfd, caplog, verbosity, level, bars_shown
):
    verbosity(level)
    tfds.display_progress_bar(True)  # tfds's own default: the lookup decides
    builder = lookup.get_builder(_wav_folder_config(tmp_path))
    assert builder.info.splits["train"].num_examples >= 1  # it really built
    err = capfd.readouterr().err
    for bar in PROGRESS_BARS:
        assert (bar in err) == bars_shown, err[-2000:]
    if not bars_shown:
        assert lookup.DTYPE_NOTICE not in err + caplog.text


def test_tfds_dtype_notice_is_dropped_unless_verbose(caplog, verbosity):
    # The notice tfds logs, in tfds's own words (the lookup filters it by its first words).
    template = inspect.getsource(tfds_feature.log_tf_warning)
    assert lookup.DTYPE_NOTICE.replace("FeatureConnector", "{class_name}") in template
    notice = template.split("f'", 1)[1].split("'", 1)[0].format(class_name="FeatureConnector")
    assert notice.startswith(lookup.DTYPE_NOTICE)

    verbosity(0)
    with lookup.quiet_tfds(progress_bars=False):
        logging.warning(notice)
        logging.warning("another warning")
    assert "another warning" in caplog.text and lookup.DTYPE_NOTICE not in caplog.text
    logging.warning(notice)  # outside a build it is left alone
    assert lookup.DTYPE_NOTICE in caplog.text

    caplog.clear()
    verbosity(1)
    with lookup.quiet_tfds(progress_bars=False):
        logging.warning(notice)
    assert lookup.DTYPE_NOTICE in caplog.text
