"""pwavenet: a WaveNet vocoder and its Parallel WaveNet distillation, in JAX and Flax.

    import pwavenet
    vocoder = pwavenet.load_vocoder("runs/espeak/student")
    audio = vocoder.vocode(vocoder.mel(speech))

The names below are imported on first use, so `import pwavenet` alone loads neither JAX nor
TensorFlow; none of them imports TensorFlow.
"""

import importlib

_EXPORTS = {
    "load_vocoder": "pwavenet.vocoder",
    "Vocoder": "pwavenet.vocoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pwavenet' has no attribute {name!r}")
