"""The quality table: whole utterances of a split synthesized by each system and scored with
every measure of `pwavenet.evaluation.quality` and the teacher's NLL (`quality_table`; for a
student, `student_quality_table`). `pwavenet.evaluation.report.render_quality_table` writes it
as markdown."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pwavenet import audio, config_schema, training
from pwavenet.data import whole_utterances
from pwavenet.evaluation import listening, quality, report
from pwavenet.models import builders, iaf, wavenet

__all__ = [
    "teacher_synthesis",
    "student_synthesis",
    "padded_batches",
    "synthesize_split",
    "griffin_lim_split",
    "teacher_log_likelihood",
    "teacher_nll_split",
    "score_systems",
    "quality_utterances_of",
    "quality_table",
    "student_quality_table",
    "reusable_rows",
    "write_quality_summaries",
]


def teacher_synthesis(model, config, params):
    """synthesize_batch(batch, rng) -> (B, T): the teacher's generation for a batch's mels."""

    def synthesize_batch(batch, rng):
        mel, speaker = builders.model_inputs(config, batch)
        return listening.teacher_samples(
            model, params, rng, mel, speaker, batch["audio"].shape[1]
        )

    return synthesize_batch


def student_synthesis(student, config, params):
    """synthesize_batch(batch, rng) -> (B, T): the student's synthesis for a batch's mels."""

    def synthesize_batch(batch, rng):
        return iaf.sample(student, params, rng, *builders.model_inputs(config, batch))

    return synthesize_batch


def padded_batches(
    utterances: list[dict[str, Any]], batch_size: int, mel_config, length: int | None = None
):
    """Yields (indices, batch) over `utterances` (whole_utterances.split_utterances) sorted by
    length, each batch {'audio': (B, T), 'mel': (B, T // hop, n_mels), 'speaker': (B,)} padded
    to `length` samples (default: its longest): audio with zeros, the mel with the log floor
    (silence). Every model here is causal in its audio, so padding after an utterance leaves
    its own samples' distribution unchanged except where the upsampler's kernels reach into
    the padding (the last frame). One `length` for all batches compiles each model once."""
    order = sorted(range(len(utterances)), key=lambda i: len(utterances[i]["audio"]))
    floor = math.log(float(mel_config.log_floor))
    if audio.mel_preset(mel_config) == "espnet":  # log10 features
        floor /= math.log(10.0)
    hop = int(mel_config.hop_length)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        size = length or max(len(utterances[i]["audio"]) for i in indices)
        audio_batch = np.zeros((len(indices), size), np.float32)
        mel_batch = np.full(
            (len(indices), size // hop, utterances[indices[0]]["mel"].shape[-1]), floor, np.float32
        )
        for row, i in enumerate(indices):
            u = utterances[i]
            audio_batch[row, : len(u["audio"])] = u["audio"]
            mel_batch[row, : len(u["mel"])] = u["mel"]
        speaker = np.array([utterances[i]["speaker"] for i in indices], np.int32)
        yield indices, {"audio": audio_batch, "mel": mel_batch, "speaker": speaker}


def synthesize_split(
    synthesize_batch,
    utterances: list[dict[str, Any]],
    batch_size: int,
    mel_config,
    seed: int,
    length: int | None = None,
) -> list[np.ndarray]:
    """`synthesize_batch(batch, rng) -> (B, T)` over `padded_batches`, each utterance's audio cut
    back to its length, in the utterances' order. Batch b draws from fold_in(seed key, b)."""
    out: list[np.ndarray | None] = [None] * len(utterances)
    key = jax.random.PRNGKey(seed)
    batches = padded_batches(utterances, batch_size, mel_config, length)
    for b, (indices, batch) in enumerate(batches):
        generated = np.asarray(synthesize_batch(batch, jax.random.fold_in(key, b)), np.float32)
        for row, i in enumerate(indices):
            out[i] = np.clip(generated[row, : len(utterances[i]["audio"])], -1.0, 1.0)
    return out


def griffin_lim_split(utterances: list[dict[str, Any]], mel_config) -> list[np.ndarray]:
    """The Griffin-Lim baseline (quality.griffin_lim) of each utterance's mel."""
    return [quality.griffin_lim(u["mel"], mel_config, len(u["audio"])) for u in utterances]


def teacher_log_likelihood(teacher_model, teacher_params):
    """A jitted log p_T(x_t | x_<t, mel, speaker) per sample: (x, mel, speaker) -> (B, T)."""
    return jax.jit(
        lambda x, mel, speaker: wavenet.log_likelihood(
            teacher_model.apply({"params": teacher_params}, x, mel, speaker),
            x,
            teacher_model.distribution,
        )
    )


def teacher_nll_split(
    log_likelihood, teacher_config, utterances, audio_list, batch_size: int, length: int
) -> list[float]:
    """The teacher's NLL (nats/sample) of each utterance's `audio_list` entry given its mel
    (`log_likelihood` from `teacher_log_likelihood`), padding masked out."""
    out = [math.nan] * len(utterances)
    for indices, batch in padded_batches(utterances, batch_size, teacher_config.mel, length):
        x = np.zeros_like(batch["audio"])
        for row, i in enumerate(indices):
            x[row, : len(audio_list[i])] = audio_list[i]
        mel = batch["mel"] if teacher_config.model.n_mels else None
        speaker = batch["speaker"] if teacher_config.model.num_speakers else None
        log_p = np.asarray(log_likelihood(jnp.asarray(x), mel, speaker))
        for row, i in enumerate(indices):
            out[i] = float(-np.mean(log_p[row, : len(audio_list[i])]))
    return out


def score_systems(
    utterances: list[dict[str, Any]],
    systems: dict[str, list[np.ndarray]],
    sample_rate: int,
    teacher_nll: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Every quality measure (pwavenet.evaluation.quality) of each system's audio against the
    reference, per utterance and as means (a system that is the reference's own audio scores
    its ceiling). `teacher_nll` adds each system's teacher NLL per utterance where given."""
    f0 = [quality.f0_track(u["audio"], sample_rate) for u in utterances]
    periodicity = [quality.periodicity(u["audio"], sample_rate) for u in utterances]
    per_utterance: dict[str, list[dict[str, Any]]] = {}
    means: dict[str, dict[str, float]] = {}
    for name, audio_list in systems.items():
        measured = [
            quality.measure(u["audio"], x, sample_rate, f0[i], periodicity[i])
            for i, (u, x) in enumerate(zip(utterances, audio_list))
        ]
        means[name] = quality.mean_measures(measured)
        # The worst utterance, where a runaway generation shows: its peak and teacher NLL.
        for m, x in zip(measured, audio_list):
            m["peak"] = float(np.max(np.abs(x))) if len(x) else 0.0
        means[name]["worst_peak"] = max(m["peak"] for m in measured)
        if teacher_nll and name in teacher_nll:
            for m, nll in zip(measured, teacher_nll[name]):
                m["teacher_nll"] = nll
            means[name]["teacher_nll"] = float(np.mean(teacher_nll[name]))
            means[name]["worst_teacher_nll"] = float(np.max(teacher_nll[name]))
        per_utterance[name] = [{"id": u["id"], **m} for u, m in zip(utterances, measured)]
    return {
        "num_utterances": len(utterances),
        "seconds": float(sum(len(u["audio"]) for u in utterances) / sample_rate),
        "mean": _undefined_as_none(means),
        "per_utterance": _undefined_as_none(per_utterance),
    }


def _undefined_as_none(tree):
    """NaN (a measure undefined for an utterance, e.g. F0 error with no voiced frame) as None,
    so report.json is standard JSON."""
    if isinstance(tree, dict):
        return {k: _undefined_as_none(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_undefined_as_none(v) for v in tree]
    return None if isinstance(tree, float) and math.isnan(tree) else tree


def quality_utterances_of(config, split: str | None, limit: int | None) -> list[dict[str, Any]]:
    """The utterances a report scores: `limit` (else config.eval.quality_utterances; 0 = the
    whole split) of `split` (else the config's evaluation split), whole unless
    config.eval.quality_max_seconds caps them."""
    if limit is None:
        limit = int(config_schema.setting(config.eval, "eval.quality_utterances"))
    max_seconds = float(config_schema.setting(config.eval, "eval.quality_max_seconds"))
    return whole_utterances.split_utterances(config, split, limit, max_seconds)


def quality_table(
    workdir: str,
    step: int,
    config,
    teacher: training.Teacher,
    synthesizers: dict[str, Any],
    *,
    split: str | None,
    limit: int | None,
    seed: int,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's quality table: the Griffin-Lim baseline and each of `synthesizers`
    (name -> `synthesize_batch(batch, rng) -> (B, T)`, see `synthesize_split`) over the split's
    utterances, scored by `score_systems` with the NLL of `teacher` (its model, config and
    parameters); its means also go to TensorBoard.

    `earlier` is a table made by the same teacher (the teacher's own report): if it scored the
    same utterances with the same seed and batch size, its reference, Griffin-Lim and
    same-named systems' rows are copied rather than synthesized and scored again (a
    student's report copies the teacher row and skips the teacher's slow generation)."""
    split_name = split or config.data.eval_split
    utterances = quality_utterances_of(config, split, limit)
    batch_size = int(config.eval.batch_size)
    length = max(len(u["audio"]) for u in utterances)
    setting = {"split": split_name, "seed": int(seed), "batch_size": batch_size}
    order = ["reference", "griffin_lim", *synthesizers]
    reusable = reusable_rows(earlier, setting, [u["id"] for u in utterances])
    copied = [name for name in order if name in reusable]
    systems = {}
    if "reference" not in copied:
        systems["reference"] = [u["audio"] for u in utterances]
    if "griffin_lim" not in copied:
        systems["griffin_lim"] = griffin_lim_split(utterances, config.mel)
    for name, synthesize_batch in synthesizers.items():
        if name not in copied:
            systems[name] = synthesize_split(
                synthesize_batch, utterances, batch_size, config.mel, seed, length
            )
    log_likelihood = teacher_log_likelihood(teacher.model, teacher.params)
    nlls = {
        name: teacher_nll_split(
            log_likelihood, teacher.config, utterances, audio_list, batch_size, length
        )
        for name, audio_list in systems.items()
    }
    scores = score_systems(utterances, systems, config.mel.sample_rate, teacher_nll=nlls)
    for part in ("mean", "per_utterance"):
        merged = {**{k: earlier[part][k] for k in copied}, **scores[part]}
        scores[part] = {k: merged[k] for k in order}
    scores["copied_from_earlier"] = copied
    write_quality_summaries(workdir, step, scores, split_name)
    return {**setting, **scores}


def student_quality_table(
    workdir: str,
    step: int,
    config,
    student,
    params,
    teacher: training.Teacher,
    *,
    split: str | None,
    limit: int | None,
    seed: int,
) -> dict[str, Any]:
    """`quality_table` of the untrained student (its initial parameters), the teacher and the
    student, the teacher's NLL scoring each. The reference, Griffin-Lim and teacher rows are
    copied from the teacher's own report (`report.saved_report` of the step the student was
    distilled from) where it scored the same utterances with the same seed and batch size."""
    untrained = builders.init_student_params(
        student, config, jax.random.PRNGKey(config.seed), teacher.params
    )
    earlier = report.saved_report(teacher.workdir, teacher.step)
    return quality_table(
        workdir,
        step,
        config,
        teacher,
        {
            "untrained_student": student_synthesis(student, config, untrained),
            "teacher": teacher_synthesis(teacher.model, teacher.config, teacher.params),
            "student": student_synthesis(student, config, params),
        },
        split=split,
        limit=limit,
        seed=seed,
        earlier=None if earlier is None else earlier.get("quality"),
    )


def reusable_rows(earlier: dict[str, Any] | None, setting: dict[str, Any], ids) -> list[str]:
    """The systems of an earlier quality table that can stand in this one: all of them if it
    scored the same utterance ids with the same split, seed and batch size; else none."""
    if not earlier or any(earlier.get(k) != v for k, v in setting.items()):
        return []
    rows = earlier.get("per_utterance", {})
    if not rows or any([r["id"] for r in rows[name]] != list(ids) for name in rows):
        return []
    return list(rows)


def write_quality_summaries(workdir: str, step: int, scores: dict[str, Any], split: str) -> None:
    """The mean measures in TensorBoard as quality_<split>/<system>/<measure>; a measure
    undefined over every utterance (None, e.g. F0 error with no voiced frame) has no point."""
    writer = training.Writer(workdir)
    for system, values in scores["mean"].items():
        defined = {name: value for name, value in values.items() if value is not None}
        writer.scalars(step, defined, f"quality_{split}/{system}/")
    writer.flush()
