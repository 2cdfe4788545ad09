"""tfds builders of this project; importing the package registers them with tfds.

  espeak_corpus  the embedded corpus: espeak-ng voices reading generated sentences (built
                 locally, nothing downloaded)
  wav_folder     a folder of .wav files (the manual dir), optional speaker subfolders
  kaldi_dir      a Kaldi/ESPnet data directory (the manual dir): wav.scp, segments, utt2spk

All yield {'audio': int16 (T,), 'speaker': int64, 'id': string}. TensorFlow is imported
here with accelerators hidden from it: it only feeds data.
"""

from pwavenet.audio import import_tensorflow

import_tensorflow()

from pwavenet.data.builders import (
    espeak_corpus,  # noqa: E402  registers 'espeak_corpus'
    kaldi_dir,  # noqa: E402  registers 'kaldi_dir'
    wav_folder,  # noqa: E402  registers 'wav_folder'
)

__all__ = ["espeak_corpus", "kaldi_dir", "wav_folder"]
