"""Other projects' feature files: their mel definitions (configs) and normalization statistics.

A TTS front-end trained with Parallel WaveGAN's, ESPnet's or HiFi-GAN's recipes emits log-mels
in its own definition, often mean-variance normalized. This module reads what a user has from
such a project, so that pwavenet can be trained in the same definition and can take the
normalized features as they are:

    mel_settings_from(path)   a config `mel` section from HiFi-GAN's config.json or Parallel
                              WaveGAN's / ESPnet2's config.yml (the preset it selects, with the
                              file's values); keys it cannot honour are refused by name
    load_mel_stats(path)      (mean, scale) per band from PWG's stats.h5 / stats.npy, ESPnet2's
                              feats_stats.npz, or a plain .npz / .npy
    normalize / denormalize   (mel - mean) / scale and its inverse
    compute_mel_stats(mels)   mean and population standard deviation per band over frames

The statistics are those of the log-mels in their file's own log base: a stats file belongs to
the mel definition its features were computed in (PWG's and ESPnet's: log10), so the vocoder's
mel definition must use the same base (`mel_settings_from` of the same project's config gives
it). Imports numpy, and h5py or pyyaml only when such a file is read.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable

import numpy as np

from pwavenet.audio import mel as mel_lib

__all__ = [
    "NORMALIZATIONS",
    "STATS_FILE",
    "mel_settings_from",
    "apply_mel_file",
    "load_mel_stats",
    "save_mel_stats",
    "compute_mel_stats",
    "normalize",
    "denormalize",
]

# `mel.normalization`: none, or meanvar (per band: (log-mel - mean) / scale, with the training
# split's statistics saved in the workdir as STATS_FILE).
NORMALIZATIONS = ("none", "meanvar")
STATS_FILE = "mel_stats.npz"

# HiFi-GAN (config.json) and Parallel WaveGAN (config.yml): pwavenet field <- the file's key.
_HIFIGAN_KEYS = {
    "sample_rate": "sampling_rate",
    "n_fft": "n_fft",
    "hop_length": "hop_size",
    "win_length": "win_size",
    "n_mels": "num_mels",
    "fmin": "fmin",
    "fmax": "fmax",
}
_PWG_KEYS = {
    "sample_rate": "sampling_rate",
    "n_fft": "fft_size",
    "hop_length": "hop_size",
    "win_length": "win_length",
    "n_mels": "num_mels",
    "fmin": "fmin",
    "fmax": "fmax",
}
# ESPnet2's `feats_extract: fbank` with its `feats_extract_conf`.
_ESPNET2_KEYS = {
    "sample_rate": "fs",
    "n_fft": "n_fft",
    "hop_length": "hop_length",
    "win_length": "win_length",
    "n_mels": "n_mels",
    "fmin": "fmin",
    "fmax": "fmax",
}
_HIFIGAN_LOG_FLOOR = 1e-5  # meldataset.dynamic_range_compression: log(clamp(x, min=1e-5))
_PWG_LOG_FLOOR = 1e-10  # logmelfilterbank's eps; ESPnet2's LogMel clamps at 1e-10 as well


def _read(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".yml", ".yaml"):
        raise ValueError(
            f"{path}: expected a .json (HiFi-GAN) or .yml/.yaml (Parallel WaveGAN, ESPnet2) "
            "config."
        )
    with open(path) as f:
        text = f.read()
    if ext == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not readable JSON ({e}).") from e
    else:
        import yaml  # only for these files

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not readable YAML ({e}).") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level.")
    return data


def _number(path: str, key: str, value: Any, kind=float):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {key}: {value!r} is not a number.") from None
    if kind is int and number != float(value):
        raise ValueError(f"{path}: {key}: {value!r} is not an integer.")
    return number


def _fields(path: str, data: dict, keys: dict[str, str]) -> dict[str, Any]:
    """The mel fields under the file's key names; win_length, fmin and fmax may be null (the
    FFT size, 0 and the Nyquist frequency, as in those projects)."""
    missing = [k for f, k in keys.items() if k not in data and f not in ("win_length", "fmin",
                                                                        "fmax")]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}; the file must give them.")
    out: dict[str, Any] = {}
    for field in ("sample_rate", "n_fft", "hop_length", "n_mels"):
        out[field] = _number(path, keys[field], data[keys[field]], int)
    win = data.get(keys["win_length"])
    out["win_length"] = out["n_fft"] if win is None else _number(path, keys["win_length"], win, int)
    fmin, fmax = data.get(keys["fmin"]), data.get(keys["fmax"])
    out["fmin"] = 0.0 if fmin is None else _number(path, keys["fmin"], fmin)
    out["fmax"] = out["sample_rate"] / 2 if fmax is None else _number(path, keys["fmax"], fmax)
    return out


def _log_base(path: str, data: dict, key: str = "log_base") -> float:
    """The file's log base (missing: 10, those projects' default; null: natural log)."""
    if key not in data:
        return 10.0
    base = data[key]
    if base is None:
        return math.e
    base = _number(path, key, base)
    if base <= 0 or base == 1:
        raise ValueError(f"{path}: {key}: {base} is not a logarithm's base.")
    return base


def _refuse_window(path: str, key: str, window: Any) -> None:
    if window not in (None, "hann", "hanning"):
        raise ValueError(
            f"{path}: {key}: {window!r}; pwavenet's mel definitions use a Hann window only, so "
            "this model's features cannot be reproduced: retrain the TTS model with hann."
        )


def mel_settings_from(path: str) -> dict[str, Any]:
    """A config `mel` section (preset, sample_rate, n_fft, win_length, hop_length, n_mels,
    fmin, fmax, log_floor, log_base) from another project's config file.

    - HiFi-GAN's config.json (sampling_rate, n_fft, hop_size, win_size, num_mels, fmin, fmax):
      preset 'hifigan' (Slaney filters, sqrt(|S|^2 + 1e-9), reflect padding of (n_fft - hop)
      / 2 without centring, natural log of max(mel, 1e-5)).
    - Parallel WaveGAN's config.yml (sampling_rate, fft_size, hop_size, win_length, window,
      num_mels, fmin, fmax, log_base, global_gain_scale, trim_*, format): preset 'espnet'
      (Slaney filters, |S| of a centred STFT, log of max(mel, 1e-10)) in the file's log base
      (10 when absent, natural for null). `window` must be hann and `global_gain_scale` 1
      (it scales the audio the features were computed from); trimming silence and the dump
      `format` change which audio was used and how it was stored, not the features.
    - ESPnet2's config.yml with `feats_extract: fbank` and `feats_extract_conf` (fs, n_fft,
      hop_length, win_length, window, n_mels, fmin, fmax, center, normalized, onesided, htk,
      log_base): preset 'espnet'; `center` must be true, `normalized` false, `onesided` true,
      `htk` false. (ESPnet2 floors |S|^2 at 1e-10 before its square root: the same features
      except in bins quieter than 1e-5.)

    Raises ValueError naming the key for a file it cannot honour, FileNotFoundError for a
    missing file.
    """
    data = _read(path)
    if "feats_extract" in data or "feats_extract_conf" in data:
        kind = data.get("feats_extract")
        if kind != "fbank":
            raise ValueError(
                f"{path}: feats_extract: {kind!r}; only ESPnet2's 'fbank' (log-mel) features "
                "have a pwavenet mel definition."
            )
        conf = data.get("feats_extract_conf") or {}
        conf = dict(conf)
        conf.setdefault("n_fft", 1024)  # ESPnet2 LogMelFbank's defaults
        conf.setdefault("hop_length", 256)
        conf.setdefault("n_mels", 80)
        if "fs" not in conf:
            conf["fs"] = data.get("fs", 16000)
        if isinstance(conf["fs"], str) and conf["fs"].lower().endswith("k"):
            conf["fs"] = int(float(conf["fs"][:-1]) * 1000)
        _refuse_window(path, "feats_extract_conf.window", conf.get("window"))
        for key, wanted in (("center", True), ("normalized", False), ("onesided", True),
                            ("htk", False)):
            if key in conf and bool(conf[key]) != wanted:
                raise ValueError(
                    f"{path}: feats_extract_conf.{key}: {conf[key]!r}; pwavenet's espnet preset "
                    f"needs {key}: {str(wanted).lower()}."
                )
        fields = _fields(path, conf, _ESPNET2_KEYS)
        preset, floor, base = "espnet", _PWG_LOG_FLOOR, _log_base(path, conf)
    elif "win_size" in data or "segment_size" in data or "resblock" in data:
        fields = _fields(path, data, _HIFIGAN_KEYS)
        preset, floor, base = "hifigan", _HIFIGAN_LOG_FLOOR, math.e
    elif "fft_size" in data:
        _refuse_window(path, "window", data.get("window"))
        gain = data.get("global_gain_scale", 1.0)
        if gain is not None and float(gain) != 1.0:
            raise ValueError(
                f"{path}: global_gain_scale: {gain}; the TTS model's features were computed from "
                "audio scaled by it, which a mel definition cannot express: use a config with "
                "global_gain_scale: 1.0."
            )
        fields = _fields(path, data, _PWG_KEYS)
        preset, floor, base = "espnet", _PWG_LOG_FLOOR, _log_base(path, data)
    else:
        raise ValueError(
            f"{path}: not a config this reader knows: expected HiFi-GAN's (sampling_rate, n_fft, "
            "hop_size, win_size, num_mels, fmin, fmax), Parallel WaveGAN's (sampling_rate, "
            "fft_size, hop_size, win_length, num_mels, fmin, fmax) or ESPnet2's "
            "(feats_extract: fbank, feats_extract_conf)."
        )
    settings = {"preset": preset, **fields, "log_floor": floor, "log_base": float(base)}
    try:
        mel_lib.mel_padding(_Section(settings))  # the definition's own range checks
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return settings


class _Section(dict):
    """A dict read as a config section (attribute access)."""

    __getattr__ = dict.__getitem__


def apply_mel_file(config) -> list[str]:
    """Sets a job config's `mel` section from `config.mel.from_file` (no-op when it is empty or
    absent) and, when the file's hop disagrees with `model.upsample_strides`, the strides to
    `upsample_strides(hop)`. Returns 'field=value' for each field it changed."""
    mel = config.get("mel") if hasattr(config, "get") else None
    path = mel.get("from_file", "") if mel is not None else ""
    if not path:
        return []
    changed = []
    for field, value in mel_settings_from(path).items():
        if field not in mel:
            raise ValueError(f"mel.from_file={path}: this config's mel section has no {field}.")
        if mel[field] != value:
            mel[field] = type(mel[field])(value) if mel[field] is not None else value
            changed.append(f"mel.{field}={value}")
    model = config.get("model")
    if model is not None and "upsample_strides" in model:
        hop = int(mel.hop_length)
        if math.prod(model.upsample_strides) != hop:
            model.upsample_strides = tuple(mel_lib.upsample_strides(hop))
            changed.append(f"model.upsample_strides={tuple(model.upsample_strides)}")
    return changed


# ------------------------------------------------------------------------ normalization


def _check_stats(path: str, mean: Any, scale: Any, names: str) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, np.float64)
    scale = np.asarray(scale, np.float64)
    if mean.ndim != 1 or mean.shape != scale.shape or mean.size < 1:
        raise ValueError(
            f"{path}: {names} of shapes {mean.shape} and {scale.shape}; expected two vectors of "
            "one value per mel band."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"{path}: {names} hold non-finite values or a scale <= 0.")
    return mean.astype(np.float32), scale.astype(np.float32)


def load_mel_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale), each (n_mels,) float32, from a statistics file:

    - .h5 / .hdf5 (Parallel WaveGAN's stats.h5): datasets `mean` and `scale`;
    - .npz with `count`, `sum`, `sum_square` (ESPnet2's feats_stats.npz): mean = sum / count,
      scale = sqrt(max(sum_square / count - mean^2, 1e-20)) (ESPnet2's GlobalMVN);
    - .npz with `mean` and `scale` (or `std`): as they are (this project's mel_stats.npz);
    - .npy of shape (2, n_mels) (Parallel WaveGAN's stats.npy): rows mean and scale.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such statistics file.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".h5", ".hdf5"):
            import h5py  # only for these files

            with h5py.File(path, "r") as f:
                missing = [k for k in ("mean", "scale") if k not in f]
                if missing:
                    raise ValueError(
                        f"{path}: no dataset {', '.join(missing)} (found {sorted(f.keys())}); "
                        "expected Parallel WaveGAN's stats.h5 layout (mean, scale)."
                    )
                return _check_stats(path, f["mean"][()], f["scale"][()], "mean and scale")
        if ext == ".npz":
            with np.load(path) as f:
                keys = set(f.files)
                if {"count", "sum", "sum_square"} <= keys:
                    count = float(np.asarray(f["count"]).reshape(-1)[0])
                    if count <= 0:
                        raise ValueError(f"{path}: count is {count}; no frames were counted.")
                    mean = np.asarray(f["sum"], np.float64) / count
                    var = np.asarray(f["sum_square"], np.float64) / count - mean**2
                    return _check_stats(path, mean, np.sqrt(np.maximum(var, 1e-20)),
                                        "sum and sum_square")
                spread = "scale" if "scale" in keys else "std" if "std" in keys else None
                if "mean" in keys and spread:
                    return _check_stats(path, f["mean"], f[spread], f"mean and {spread}")
                raise ValueError(
                    f"{path}: arrays {sorted(keys)}; expected mean and scale (or std), or "
                    "ESPnet2's count, sum and sum_square."
                )
        if ext == ".npy":
            stats = np.load(path)
            if stats.ndim != 2 or stats.shape[0] != 2:
                raise ValueError(
                    f"{path}: an array of shape {stats.shape}; expected (2, n_mels): rows mean "
                    "and scale (Parallel WaveGAN's stats.npy)."
                )
            return _check_stats(path, stats[0], stats[1], "rows mean and scale")
    except (OSError, KeyError) as e:
        raise ValueError(f"{path}: not a readable statistics file ({e}).") from e
    raise ValueError(
        f"{path}: expected a .h5 (Parallel WaveGAN), .npz (ESPnet2's feats_stats.npz, or mean "
        "and scale) or .npy (2, n_mels) statistics file."
    )


def save_mel_stats(path: str, mean: np.ndarray, scale: np.ndarray, count: int) -> None:
    """Writes (mean, scale, count) as an .npz that `load_mel_stats` reads."""
    tmp = path + ".tmp.npz"
    np.savez(tmp, mean=np.asarray(mean, np.float32), scale=np.asarray(scale, np.float32),
             count=np.int64(count))
    os.replace(tmp, path)  # never a half-written file under the real name


def compute_mel_stats(mels: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, scale, frames) per band over every frame of the (frames, n_mels) arrays: the
    population standard deviation (as scikit-learn's StandardScaler, which Parallel WaveGAN
    uses), accumulated in float64. A constant band gets scale 1."""
    total = square = None
    count = 0
    for mel in mels:
        mel = np.asarray(mel, np.float64).reshape(-1, np.shape(mel)[-1])
        if total is None:
            total, square = np.zeros(mel.shape[1]), np.zeros(mel.shape[1])
        total += mel.sum(0)
        square += np.square(mel).sum(0)
        count += mel.shape[0]
    if not count:
        raise ValueError("no mel frames to compute normalization statistics from.")
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
    scale = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32), count


def normalize(mel: Any, mean: np.ndarray, scale: np.ndarray) -> Any:
    """(mel - mean) / scale per band (last axis); numpy, jax or tf in, the same out."""
    return (mel - mean) / scale


def denormalize(mel: Any, mean: np.ndarray, scale: np.ndarray) -> Any:
    """mel * scale + mean per band (last axis): the inverse of `normalize`."""
    return mel * scale + mean
