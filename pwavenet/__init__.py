"""pwavenet: a WaveNet vocoder and its Parallel WaveNet distillation, in JAX and Flax.

    import pwavenet
    vocoder = pwavenet.load_vocoder("runs/espeak/student")
    audio = vocoder.vocode(vocoder.mel(speech))

The public API is below. Its names are imported on first use, so `import pwavenet` alone loads
neither JAX nor TensorFlow, and none of them imports TensorFlow.

    load_vocoder, Vocoder         a trained teacher or student: vocode and stream mels
    WaveNet, generate             the teacher and its cached autoregressive generation
    IAFStudent, student_inverse   the student and its step-by-step inverse (x -> z)
    audio                         mu-law and PCM codecs, the mel definitions and presets
    distributions                 the per-sample output distributions
    flows                         the normalizing-flow toolkit (Affine, Sigmoid, Planar, ...)

The package's layers, lowest first (a module imports only from its own layer or below):
audio -> models -> distillation -> data, training -> evaluation, vocoder -> jobs; flows is the
toolkit, with its own job on the shared trainer. tests/test_import_layering.py checks it.
"""

import importlib

_EXPORTS = {
    "load_vocoder": ("pwavenet.vocoder", "load_vocoder"),
    "Vocoder": ("pwavenet.vocoder", "Vocoder"),
    "WaveNet": ("pwavenet.models.wavenet", "WaveNet"),
    "generate": ("pwavenet.models.generation", "generate"),
    "IAFStudent": ("pwavenet.models.iaf", "IAFStudent"),
    "student_inverse": ("pwavenet.models.iaf", "inverse"),
}
_SUBPACKAGES = {
    "audio": "pwavenet.audio",
    "distributions": "pwavenet.models.distributions",
    "flows": "pwavenet.flows",
}

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES])


def __getattr__(name):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _SUBPACKAGES:
        return importlib.import_module(_SUBPACKAGES[name])
    raise AttributeError(f"module 'pwavenet' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
