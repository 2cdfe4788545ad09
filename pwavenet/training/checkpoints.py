"""A workdir: its saved config (and the checks against it), orbax checkpoints, restoring
parameters, and fine-tuning from another run's weights.

Damaged checkpoints: every restore (training's resume, `restore_params` and so `load_vocoder`,
evaluation, export, a student's teacher) checks the checkpoint it reads: orbax must read it
whole and its weights must be finite. A damaged one (truncated, deleted or garbled files) is
named with what is wrong, and the restore falls back to the newest intact checkpoint with a
warning; with none intact it raises `DamagedCheckpoint` naming the folder. An explicit step
that is damaged is an error, never silently replaced by another step. Only finished
checkpoints are seen: orbax writes a step into `<step>.orbax-checkpoint-tmp...` and renames it
when complete, and step discovery skips those folders, so a reader beside a training job reads
the last complete step.

Fine-tuning: a run whose workdir has no checkpoint and whose config.init_from names another
workdir starts from that run's latest weights (its EMA weights unless config.init_from_ema is
False) as step-0 params and EMA, with a fresh optimizer and schedule; a workdir with a
checkpoint resumes it and ignores init_from. The jobs refuse an init_from whose `model`
section differs (`check_init_from`), before any data is read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from pwavenet.models import builders
from pwavenet import config_schema

__all__ = [
    "save_config",
    "load_config",
    "is_student_config",
    "config_mismatches",
    "check_workdir_config",
    "RUNTIME_MODEL_FIELDS",
    "check_init_from",
    "init_params_from",
    "checkpoint_manager",
    "DamagedCheckpoint",
    "CheckpointSaveError",
    "save_failed",
    "restore_newest_intact",
    "set_aside",
    "restore_params",
    "Teacher",
    "load_teacher",
    "student_teacher_workdir",
]


PyTree = Any
Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- workdir


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `workdir`/config.json. A student's teacher_workdir is saved resolved (absolute),
    and beside it, as teacher_workdir_relative, relative to the student's workdir, so that the
    run evaluates from any directory and after being moved (`student_teacher_workdir`)."""
    if jax.process_index() != 0:
        return
    saved = config
    if is_student_config(config) and config.teacher_workdir:
        teacher = os.path.abspath(config.teacher_workdir)
        saved = ml_collections.ConfigDict(config.to_dict())
        saved.teacher_workdir = teacher
        saved.teacher_workdir_relative = os.path.relpath(teacher, os.path.abspath(workdir))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(saved.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir!r} is not a training workdir (it has no saved config). "
            "Pass the --workdir of a finished or running training job."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def is_student_config(config: ml_collections.ConfigDict) -> bool:
    """True for a student's job config (it names the teacher_workdir it distils), False for a
    teacher's: what tells the two kinds of workdir apart."""
    return "teacher_workdir" in config


def _flatten(config, prefix=""):
    out = {}
    for key, value in config.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


# Fields added after runs were saved without them, with the value that means what their
# absence meant; and fields that record where a value came from, not the value.
ADDED_FIELDS = {
    "mel.preset": "pwavenet",
    "mel.log_base": 0.0,
    "mel.normalization": "none",
    "model.mel_mean": [],
    "model.mel_scale": [],
    "model.pitch_source": "estimate",
}
IGNORED_FIELDS = {"mel.from_file"}
# The learned pitch predictor's architecture: a run saved before these fields existed has
# model.pitch_source='estimate' (ADDED_FIELDS), which no predictor serves.
UNUSED_WHEN_ABSENT = {"model.pitch_channels", "model.pitch_dilations", "model.pitch_speaker_dim"}


def config_mismatches(
    saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict, sections: Iterable[str]
) -> list[str]:
    """'field: saved X, now Y' for every differing field of the given sections."""
    problems = []
    for section in sections:
        a, b = _flatten(saved[section], f"{section}."), _flatten(new[section], f"{section}.")
        for key in sorted(set(a) | set(b)):
            if key in IGNORED_FIELDS or (key in UNUSED_WHEN_ABSENT and key not in a):
                continue
            old, now = a.get(key, ADDED_FIELDS.get(key)), b.get(key, ADDED_FIELDS.get(key))
            if old != now:
                problems.append(f"{key}: saved {old!r}, now {now!r}")
    return problems


def check_workdir_config(
    config: ml_collections.ConfigDict, workdir: str, sections: Iterable[str]
) -> None:
    """Refuses to resume a workdir whose saved config differs in the given sections."""
    if not os.path.exists(os.path.join(workdir, "config.json")):
        return
    problems = config_mismatches(load_config(workdir), config, sections)
    if problems:
        raise ValueError(
            f"{workdir} holds a run whose config differs in {', '.join(sections)}, so its "
            "checkpoints cannot be resumed with this config:\n  "
            + "\n  ".join(problems)
            + "\nUse a new --workdir, or override these fields back to the saved values."
        )


# Model fields that change how a computation runs, not the parameters or the function.
RUNTIME_MODEL_FIELDS = ("dtype", "remat", "synthesis_chunk")


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """Refuses a config.init_from run whose `model` section differs from this config's in
    any field but RUNTIME_MODEL_FIELDS (no-op when init_from is empty)."""
    source = config_schema.setting(config, "init_from")
    if not source:
        return
    if not os.path.isdir(source):
        raise FileNotFoundError(
            f"config.init_from={source!r} does not exist; pass the workdir of the run to "
            "fine-tune from, or leave config.init_from empty."
        )
    runtime = {f"model.{f}" for f in RUNTIME_MODEL_FIELDS}
    problems = [
        p
        for p in config_mismatches(load_config(source), config, ("model",))
        if p.split(":")[0] not in runtime
    ]
    if problems:
        raise ValueError(
            f"config.init_from={source!r} holds a model of another architecture, so its "
            "weights cannot start this run:\n  "
            + "\n  ".join(problems)
            + "\nOverride these fields to the saved values, or fine-tune from a run of this "
            "architecture."
        )


def init_params_from(workdir: str, like: PyTree, *, ema: bool = True) -> tuple[PyTree, int]:
    """(params, step) of `workdir`'s latest checkpoint (EMA weights unless ema=False),
    checked leaf by leaf against `like` (this run's freshly initialised params): the same
    tree of the same shapes, or a ValueError naming each differing leaf."""
    params, step = restore_params(workdir, ema=ema)
    loaded = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
    wanted = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(like)}
    problems = []
    for key in sorted(set(loaded) | set(wanted)):
        a, b = loaded.get(key), wanted.get(key)
        if a is None or b is None or np.shape(a) != np.shape(b):
            shape = lambda x: "missing" if x is None else tuple(np.shape(x))  # noqa: E731
            problems.append(f"{key}: saved {shape(a)}, now {shape(b)}")
    if problems:
        raise ValueError(
            f"The weights in {workdir} (step {step}) do not fit this model:\n  "
            + "\n  ".join(problems)
            + "\nFine-tune from a run of the same architecture."
        )
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    params = jax.tree_util.tree_unflatten(
        treedef,
        [jnp.asarray(loaded[jax.tree_util.keystr(k)], v.dtype) for k, v in leaves],
    )
    return params, step


def checkpoint_manager(workdir: str, train_config) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        _checkpoints_dir(workdir),
        options=ocp.CheckpointManagerOptions(max_to_keep=train_config.keep_checkpoints),
    )


def _checkpoints_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, "checkpoints"))


class DamagedCheckpoint(ValueError):
    """A checkpoint that cannot be restored whole (or holds non-finite weights)."""


class CheckpointSaveError(OSError):
    """Saving a checkpoint failed (no space left, a read-only or vanished folder, ...); the
    message names the folder, and the checkpoints saved before are intact."""

    def __init__(self, message: str, error_number: int | None = None):
        super().__init__(message)
        self.errno = error_number


def save_failed(folder: str, error: Exception) -> CheckpointSaveError:
    """The CheckpointSaveError for a save into `folder` that raised `error`, naming the
    newest finished checkpoint there (orbax renames a step's folder into place only once it is
    complete, so a failed save leaves the earlier ones as they were)."""
    cause = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    number = cause.errno if isinstance(cause, OSError) else None
    reason = os.strerror(number) if number else _first_line(error)
    try:
        saved = max(ocp.path.step.checkpoint_steps(folder), default=None)
    except Exception:  # noqa: BLE001  the folder itself may be what failed
        saved = None
    kept = "no checkpoint was saved before" if saved is None else f"step {saved} is intact"
    return CheckpointSaveError(
        f"Could not save a checkpoint in {folder}: {reason}. The job stopped; {kept}. Free "
        "space or make the folder writable, then rerun the same command to resume.",
        number,
    )


def _first_line(error: BaseException) -> str:
    """An exception's first line, without tensorstore's long spec, in at most 300 characters."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    text = re.sub(r"\s*\[tensorstore_spec=.*", "", text)
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _describe_damage(step_dir: str, error: BaseException) -> str:
    """What is wrong with a checkpoint that failed to restore: a metadata file that is not
    JSON (named), else the error's first line (orbax and tensorstore name the file)."""
    for root, _, files in os.walk(step_dir):
        for name in sorted(files):
            if name != "_METADATA" and not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    json.loads(f.read().decode("utf-8"))
            except (ValueError, OSError) as e:
                return f"{path} is not valid JSON ({_first_line(e)})"
    return _first_line(error)


def _check_finite(tree: PyTree, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact) and not np.all(np.isfinite(leaf)):
            raise DamagedCheckpoint(f"{what}{jax.tree_util.keystr(path)} has non-finite values")


def restore_newest_intact(
    mngr: ocp.CheckpointManager, restore: Callable[[int], PyTree], step: int | None = None
) -> tuple[PyTree, int, list[int]]:
    """(tree, step, damaged): `restore(step)` of the newest checkpoint it restores without
    raising, with the newer damaged steps it skipped (each named in a warning). With `step`,
    only that one: a damaged explicit step raises DamagedCheckpoint. With none intact, raises
    DamagedCheckpoint naming the folder and each step's problem; with no checkpoint at all,
    FileNotFoundError."""
    folder = str(mngr.directory)
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(
            f"No checkpoint in {folder}: train first, or point --workdir at a training job's "
            "workdir."
        )
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {folder}; available: {sorted(steps)}."
            )
        steps = [step]
    problems = []
    for candidate in steps:
        try:
            tree = restore(candidate)
        except Exception as e:  # noqa: BLE001  any failure to read it whole is damage
            problem = _describe_damage(os.path.join(folder, str(candidate)), e)
            if step is not None:
                raise DamagedCheckpoint(
                    f"The checkpoint of step {step} in {folder} is damaged: {problem}. Choose "
                    f"another step (available: {sorted(mngr.all_steps())}), or leave the step "
                    "out for the newest intact checkpoint."
                ) from e
            logging.warning(
                "Checkpoint %s is damaged: %s; trying the next older one.",
                os.path.join(folder, str(candidate)),
                problem,
            )
            problems.append((candidate, problem))
            continue
        if problems:
            logging.warning(
                "Restored step %d of %s, the newest intact checkpoint (damaged: steps %s).",
                candidate,
                folder,
                ", ".join(str(s) for s, _ in problems),
            )
        return tree, candidate, [s for s, _ in problems]
    raise DamagedCheckpoint(
        f"Every checkpoint in {folder} is damaged ("
        + "; ".join(f"step {s}: {p}" for s, p in problems)
        + f"). Move {folder} aside (or restore it from a copy) and rerun the training job, "
        "which then starts afresh."
    )


def set_aside(workdir: str, steps: Iterable[int]) -> str:
    """Moves the given damaged steps' folders out of the checkpoints into
    <workdir>/damaged_checkpoints/ (kept for inspection, and so that a resumed run can save
    those steps again); returns that folder. Process 0 moves them."""
    target = os.path.abspath(os.path.join(workdir, "damaged_checkpoints"))
    if jax.process_index() == 0:
        os.makedirs(target, exist_ok=True)
        for step in steps:
            destination = os.path.join(target, str(step))
            if os.path.exists(destination):
                destination += f".{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.move(os.path.join(_checkpoints_dir(workdir), str(step)), destination)
            logging.warning("Moved the damaged checkpoint of step %d to %s.", step, destination)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("pwavenet: damaged checkpoints set aside")
    return target


def restore_params(workdir: str, step: int | None = None, *, ema: bool = True):
    """(params, step) from a workdir's checkpoint: the EMA weights unless ema=False.

    The newest intact checkpoint if `step` is None (damaged newer ones are named in warnings
    and skipped); a damaged explicit `step` raises DamagedCheckpoint."""
    key = "ema_params" if ema else "params"
    with ocp.CheckpointManager(_checkpoints_dir(workdir)) as mngr:

        def restore(candidate):
            tree = mngr.restore(candidate, args=ocp.args.StandardRestore())
            if not isinstance(tree, dict) or key not in tree:
                found = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
                raise DamagedCheckpoint(f"it holds no {key!r} (found: {found})")
            _check_finite(tree[key], key)
            return tree[key]

        params, step, _ = restore_newest_intact(mngr, restore, step)
    return params, step


@dataclasses.dataclass
class Teacher:
    config: ml_collections.ConfigDict
    model: Any
    params: Any
    step: int
    workdir: str


def load_teacher(teacher_workdir: str) -> Teacher:
    """The teacher's saved config, model and EMA parameters from its workdir."""
    if not teacher_workdir:
        raise ValueError(
            "config.teacher_workdir is empty: pass --config.teacher_workdir=DIR, the workdir of "
            "a trained teacher (python -m launch.train_teacher --workdir=DIR)."
        )
    if not os.path.isdir(teacher_workdir):
        raise FileNotFoundError(
            f"config.teacher_workdir={teacher_workdir!r} does not exist; train a teacher there "
            "first (python -m launch.train_teacher --workdir=...)."
        )
    teacher_config = load_config(teacher_workdir)
    model = builders.build_teacher(teacher_config)
    params, step = restore_params(teacher_workdir, ema=True)
    return Teacher(teacher_config, model, params, step, teacher_workdir)


def student_teacher_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The teacher's workdir of the student saved in `workdir` (config: its saved config):
    first the path saved relative to the student's workdir (a run folder holding both moves or
    copies as one), then the saved path itself; a FileNotFoundError names both if neither is a
    directory. Configs saved before the relative path existed have the path only."""
    saved = config_schema.setting(config, "teacher_workdir")
    if not saved:
        return saved
    tried = []
    relative = config.get("teacher_workdir_relative")
    if relative:
        tried.append(os.path.abspath(os.path.join(workdir, relative)))
    tried.append(config.teacher_workdir)
    for path in tried:
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(
        f"the teacher of the student in {workdir} is not found: tried "
        + " and ".join(repr(p) for p in tried)
        + "; restore the teacher's workdir at one of them, or export the student with its "
        "teacher as one file (python -m launch.export --format=bundle) while both exist."
    )
