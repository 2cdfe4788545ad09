"""Audio: mu-law and 16-bit PCM codecs (`codecs`), the log-mel definitions and presets (`mel`),
other projects' mel configs and normalization statistics (`mel_files`), linear prediction
from the mel (`lpc`), F0 and voicing from the mel (`excitation`), and TensorFlow imported for
data only, accelerators hidden from it (`tensorflow_import`). The names of `codecs`, `mel`,
`mel_files` and `tensorflow_import` are re-exported here, so `pwavenet.audio.mulaw_encode`
and `pwavenet.audio.log_mel_spectrogram` are the public spellings. Imports no TensorFlow until
a mel is computed."""

from pwavenet.audio.codecs import *  # noqa: F401,F403
from pwavenet.audio.codecs import __all__ as _codecs_all
from pwavenet.audio.mel import *  # noqa: F401,F403
from pwavenet.audio.mel import __all__ as _mel_all
from pwavenet.audio.mel_files import *  # noqa: F401,F403
from pwavenet.audio.mel_files import __all__ as _mel_files_all
from pwavenet.audio.tensorflow_import import *  # noqa: F401,F403
from pwavenet.audio.tensorflow_import import __all__ as _tensorflow_import_all

__all__ = [*_codecs_all, *_mel_all, *_mel_files_all, *_tensorflow_import_all]
