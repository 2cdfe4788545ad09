"""A trained model as one file: its EMA weights, saved config and description, for release.

A bundle is a zip archive (stored, not compressed: weights do not compress) holding

    bundle.json              what it is: format version, kind (teacher or student), step,
                             sample rate, hop, the mel definition and its normalization, the
                             library versions that wrote it, the workdir it came from
    config.json              the job config the model was trained with
    params.msgpack           its EMA weights (flax.serialization's msgpack of numpy arrays)
    teacher/config.json      a student's teacher, which `load_vocoder(bundle, model='teacher')`
    teacher/params.msgpack   loads and the student's evaluation compares against

`write_bundle(workdir, path)` writes one from a workdir (a student's teacher is found as the
student's evaluation finds it); `read_bundle(path)` gives back what `load_vocoder` needs,
with the weights equal bit for bit to the workdir's.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import zipfile
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from pwavenet import config_schema
from pwavenet.training import checkpoints

__all__ = ["BUNDLE_FORMAT", "Bundle", "is_bundle", "write_bundle", "read_bundle"]

BUNDLE_FORMAT = "pwavenet.bundle/1"
_LIBRARIES = ("pwavenet", "jax", "flax", "numpy")


@dataclasses.dataclass
class Bundle:
    """What a bundle holds: the model's config and EMA params, its description, and for a
    student its teacher's (config, params)."""

    config: ml_collections.ConfigDict
    params: Any
    description: dict[str, Any]
    teacher: tuple[ml_collections.ConfigDict, Any] | None


def is_bundle(path: str) -> bool:
    """Whether `path` is a file written by `write_bundle` (a zip with bundle.json)."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "bundle.json" in archive.namelist()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _description(config, kind: str, step: int, workdir: str) -> dict[str, Any]:
    mel = config.mel.to_dict()
    return {
        "format": BUNDLE_FORMAT,
        "kind": kind,
        "step": int(step),
        "workdir": os.path.abspath(workdir),
        "sample_rate": int(config.mel.sample_rate),
        "n_mels": int(config.model.n_mels),
        "mel": mel,
        # A model trained on normalized features saves its statistics in its mel section.
        "normalization": config_schema.setting(config.mel, "mel.normalization"),
        "versions": {name: _version(name) for name in _LIBRARIES},
    }


def _params_bytes(params) -> bytes:
    return flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params))


def write_bundle(workdir: str, path: str, step: int | None = None) -> dict[str, Any]:
    """Writes the model of `workdir` (its `step`, default the latest; EMA weights) to the
    bundle `path` (module docstring) and returns its bundle.json. The file appears whole or
    not at all."""
    config = checkpoints.load_config(workdir)
    is_student = checkpoints.is_student_config(config)
    params, step = checkpoints.restore_params(workdir, step, ema=True)
    teacher = None
    if is_student:
        teacher = checkpoints.load_teacher(checkpoints.student_teacher_workdir(config, workdir))
    description = _description(config, "student" if is_student else "teacher", step, workdir)
    if teacher is not None:
        description["teacher"] = {"workdir": os.path.abspath(teacher.workdir), "step": teacher.step}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bundle.json", json.dumps(description, indent=2))
        archive.writestr("config.json", config.to_json_best_effort(indent=2))
        archive.writestr("params.msgpack", _params_bytes(params))
        if teacher is not None:
            archive.writestr("teacher/config.json", teacher.config.to_json_best_effort(indent=2))
            archive.writestr("teacher/params.msgpack", _params_bytes(teacher.params))
    os.replace(partial, path)
    return description


def read_bundle(path: str) -> Bundle:
    """The contents of the bundle `path`; a ValueError if it is not one this version reads."""
    if not is_bundle(path):
        raise ValueError(
            f"{path} is not a pwavenet bundle (a zip with bundle.json); write one with python "
            "-m launch.export --format=bundle, or pass a training job's workdir."
        )
    with zipfile.ZipFile(path) as archive:
        description = json.loads(archive.read("bundle.json"))
        if description.get("format") != BUNDLE_FORMAT:
            raise ValueError(
                f"{path} is a bundle of format {description.get('format')!r}; this version "
                f"of pwavenet reads {BUNDLE_FORMAT!r}."
            )

        def model(prefix):
            config = ml_collections.ConfigDict(json.loads(archive.read(f"{prefix}config.json")))
            params = flax.serialization.msgpack_restore(archive.read(f"{prefix}params.msgpack"))
            return config, params

        config, params = model("")
        teacher = model("teacher/") if "teacher/config.json" in archive.namelist() else None
    return Bundle(config, params, description, teacher)
