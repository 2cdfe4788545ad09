"""Data: utterances of a speech corpus -> (audio, mel, speaker) batches per host.

    sources.py           the data sets read, their example format and split names, the
                         config.data checks (`Source`, `SOURCES`, `DataInfo`, `check_config`)
    lookup.py            the tfds builder of config.data, checked and built or downloaded
                         (`get_builder`, `data_info`)
    screening.py         the bad-data policies: too-short utterances, stored mels that do not
                         fit their audio (`DroppedUtterances`, `MelFileCheck`)
    pipelines.py         the tf.data training and validation crops (`create_datasets`,
                         `Datasets`)
    whole_utterances.py  whole utterances for scoring, listening and mel statistics
                         (`split_utterances`, `validation_utterances`, `split_mels`)
    builders/            the tfds builders of the embedded corpus, wav folders and Kaldi
                         data directories

The names below are re-exported here. Importing this package imports TensorFlow.
"""

from pwavenet.data.lookup import data_info
from pwavenet.data.lookup import get_builder
from pwavenet.data.pipelines import Batch
from pwavenet.data.pipelines import Datasets
from pwavenet.data.pipelines import create_datasets
from pwavenet.data.screening import DroppedUtterances
from pwavenet.data.screening import MelFileCheck
from pwavenet.data.sources import MEL_LENGTH_POLICIES
from pwavenet.data.sources import MEL_SOURCES
from pwavenet.data.sources import SOURCES
from pwavenet.data.sources import DataInfo
from pwavenet.data.sources import Source
from pwavenet.data.sources import check_config
from pwavenet.data.sources import local_batch_size
from pwavenet.data.sources import mels_from_files
from pwavenet.data.sources import resolve_split
from pwavenet.data.whole_utterances import split_mels
from pwavenet.data.whole_utterances import split_utterances
from pwavenet.data.whole_utterances import validation_utterances

__all__ = [
    "MEL_LENGTH_POLICIES",
    "MEL_SOURCES",
    "SOURCES",
    "Batch",
    "DataInfo",
    "Datasets",
    "DroppedUtterances",
    "MelFileCheck",
    "Source",
    "check_config",
    "create_datasets",
    "data_info",
    "get_builder",
    "local_batch_size",
    "mels_from_files",
    "resolve_split",
    "split_mels",
    "split_utterances",
    "validation_utterances",
]
