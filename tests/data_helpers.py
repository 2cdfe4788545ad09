"""Shared by the tests of pwavenet.data's modules (tests/test_data_*.py): the tiny teacher config
on the small espeak corpus, and that corpus's utterances read straight from tfds, independently
of the pipeline."""

import tensorflow_datasets as tfds

from configs import teacher


def espeak_small_config(data_dir, **data):
    """configs/teacher.py:tiny reading 'espeak_corpus/small' (8 speakers) from `data_dir`, with
    config.data fields overridden by `data`."""
    c = teacher.get_config("tiny")
    c.data.name = "espeak_corpus/small"
    c.data.data_dir = data_dir
    c.model.num_speakers = 8
    for k, v in data.items():
        setattr(c.data, k, v)
    return c


def stored_utterances(data_dir, split):
    """{id: numpy example} of a split of the built small corpus, read with tfds alone."""
    builder = tfds.builder("espeak_corpus/small", data_dir=data_dir)
    return {e["id"].decode(): e for e in builder.as_dataset(split=split).as_numpy_iterator()}
