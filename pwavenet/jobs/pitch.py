"""The learned pitch predictor's job: harvest labels of a corpus, the fit, and its errors.

`fit_and_evaluate(config, workdir)` (configs/pitch.py) reads the training split's whole
utterances, labels every mel frame with WORLD's harvest F0 and voicing of the audio (cached in
`workdir/labels_<split>.npz`, keyed by utterance id), fits `PitchPredictor` on random crops of
`pitch.crop_frames` frames with Adam, and writes `workdir/pitch_params.msgpack` and
`workdir/report.json` / `report.md`: on `data.eval_split`, frames pooled over the split, the
V/UV error, gross pitch error, fine F0 error and F0 RMSE (pwavenet.evaluation.quality's
definitions) against harvest on the reference, for the learned predictor, the hand-made
estimator (pwavenet.audio.excitation) and harvest on Griffin-Lim's audio from the same mels.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

from absl import logging
from flax import serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pwavenet.audio import excitation
from pwavenet import training
from pwavenet.data import whole_utterances
from pwavenet.evaluation import quality
from pwavenet.models import pitch

PARAMS_FILE = pitch.PARAMS_FILE


def build(config: ml_collections.ConfigDict) -> pitch.PitchPredictor:
    p = config.pitch
    return pitch.PitchPredictor(
        channels=int(p.channels),
        dilations=tuple(int(d) for d in p.dilations),
        num_speakers=int(p.num_speakers),
        speaker_dim=int(p.speaker_dim),
    )


def labels(
    utterances: list[dict[str, Any]], mel_config: Any, cache_path: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{id: (F0 Hz, voiced)} per mel frame (pitch.harvest_frames), read from `cache_path`
    for the ids it holds and computed (then saved) for the others."""
    cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if os.path.exists(cache_path):
        with np.load(cache_path) as stored:
            for key in stored.files:
                if key.startswith("f0/"):
                    uid = key[3:]
                    cached[uid] = (stored[key], stored["voiced/" + uid])
    missing = [u for u in utterances if u["id"] not in cached]
    if missing:
        logging.info("Labelling %d utterances with harvest's F0", len(missing))
        for u in missing:
            cached[u["id"]] = pitch.harvest_frames(
                u["audio"], int(mel_config.sample_rate), int(mel_config.hop_length)
            )
        arrays = {}
        for uid, (f0, voiced) in cached.items():
            arrays["f0/" + uid], arrays["voiced/" + uid] = f0, voiced
        np.savez(cache_path, **arrays)
    return {u["id"]: cached[u["id"]] for u in utterances}


def random_crops(
    utterances: list[dict[str, Any]],
    frame_labels: dict[str, tuple[np.ndarray, np.ndarray]],
    crop_frames: int,
    batch_size: int,
    seed: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches {'mel' (B, crop, n_mels), 'speaker' (B,), 'f0', 'voiced', 'mask'
    (B, crop)} of random crops; an utterance shorter than the crop is zero-padded, masked."""
    rng = np.random.default_rng(seed)
    n_mels = utterances[0]["mel"].shape[-1]
    while True:
        batch = {
            "mel": np.zeros((batch_size, crop_frames, n_mels), np.float32),
            "speaker": np.zeros((batch_size,), np.int32),
            "f0": np.zeros((batch_size, crop_frames), np.float32),
            "voiced": np.zeros((batch_size, crop_frames), np.float32),
            "mask": np.zeros((batch_size, crop_frames), np.float32),
        }
        for b, i in enumerate(rng.integers(0, len(utterances), batch_size)):
            u = utterances[i]
            f0, voiced = frame_labels[u["id"]]
            frames = min(len(u["mel"]), len(f0))
            start = int(rng.integers(0, max(frames - crop_frames, 0) + 1))
            n = min(crop_frames, frames - start)
            batch["mel"][b, :n] = u["mel"][start : start + n]
            batch["speaker"][b] = u["speaker"]
            batch["f0"][b, :n] = f0[start : start + n]
            batch["voiced"][b, :n] = voiced[start : start + n]
            batch["mask"][b, :n] = 1.0
        yield batch


def fit(
    config: ml_collections.ConfigDict,
    utterances: list[dict[str, Any]],
    frame_labels: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[Any, list[dict[str, float]]]:
    """(parameters, the loss terms every tenth of the fit) of a predictor fitted to the
    labels with Adam under a warmup-cosine schedule."""
    p = config.pitch
    model = build(config)
    steps = int(p.steps)
    batches = random_crops(
        utterances, frame_labels, int(p.crop_frames), int(p.batch_size), int(config.seed)
    )
    first = next(batches)
    params = model.init(jax.random.key(int(config.seed)), first["mel"], first["speaker"])
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, float(p.learning_rate), max(steps // 20, 1), max(steps, 2), 0.05 * float(p.learning_rate)
    )
    tx = optax.adam(schedule)
    opt_state = tx.init(params)

    def loss_fn(params, batch):
        voicing_logit, class_logits = model.apply(params, batch["mel"], batch["speaker"])
        return pitch.loss(
            voicing_logit, class_logits, batch["f0"], batch["voiced"], batch["mask"]
        )

    @jax.jit
    def step(params, opt_state, batch):
        (value, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, dict(terms, loss=value)

    history = []
    batch = first
    for i in range(steps):
        params, opt_state, terms = step(params, opt_state, batch)
        batch = next(batches)
        if (i + 1) % max(steps // 10, 1) == 0 or i + 1 == steps:
            history.append({"step": i + 1, **{k: float(v) for k, v in terms.items()}})
            logging.info("pitch fit step %d: %s", i + 1, history[-1])
    return params, history


def predict(
    model: pitch.PitchPredictor, params, mel: np.ndarray, speaker: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(F0 Hz, voicing probability) per frame of one utterance's mel (frames, n_mels)."""
    speaker_ids = None if not model.num_speakers else jnp.asarray([speaker], jnp.int32)
    voicing_logit, class_logits = model.apply(params, jnp.asarray(mel)[None], speaker_ids)
    f0, voiced = pitch.decode(voicing_logit[0], class_logits[0])
    return np.asarray(f0), np.asarray(voiced)


def _track(f0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(voiced) > 0.5, np.asarray(f0, np.float64), 0.0)


def errors(
    config: ml_collections.ConfigDict,
    model: pitch.PitchPredictor,
    params,
    utterances: list[dict[str, Any]],
    frame_labels: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    griffin_lim: bool = True,
) -> dict[str, dict[str, float]]:
    """{system: quality.compare_f0_tracks of its frames, pooled over the utterances, against
    harvest's on the reference} for the learned predictor, the hand-made estimator and (if
    `griffin_lim`) harvest on Griffin-Lim's audio."""
    tracks: dict[str, list[np.ndarray]] = {"reference": [], "learned": [], "hand_made": []}
    if griffin_lim:
        tracks["griffin_lim"] = []
    sr, hop = int(config.mel.sample_rate), int(config.mel.hop_length)
    for u in utterances:
        f0_ref, voiced_ref = frame_labels[u["id"]]
        frames = min(len(u["mel"]), len(f0_ref))
        tracks["reference"].append(_track(f0_ref, voiced_ref)[:frames])
        tracks["learned"].append(_track(*predict(model, params, u["mel"], u["speaker"]))[:frames])
        hand = excitation.estimate_pitch(jnp.asarray(u["mel"]), config.mel)
        tracks["hand_made"].append(_track(*hand)[:frames])
        if griffin_lim:
            audio = quality.griffin_lim(u["mel"], config.mel, len(u["audio"]))
            tracks["griffin_lim"].append(_track(*pitch.harvest_frames(audio, sr, hop))[:frames])
    reference = np.concatenate(tracks.pop("reference"))
    return {
        name: quality.compare_f0_tracks(reference, np.concatenate(t)) for name, t in tracks.items()
    }


def fit_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fits the predictor on the training split and measures it on `data.eval_split`
    (module docstring); returns the report it writes. Refused (training.WorkdirInUse) while
    another job works in `workdir`."""
    with training.workdir_lock(workdir):
        return _fit_and_evaluate(config, workdir)


def _fit_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    p = config.pitch
    train = whole_utterances.split_utterances(
        config, config.data.train_split, limit=int(p.train_utterances)
    )
    evaluation = whole_utterances.split_utterances(
        config, config.data.eval_split, limit=int(p.eval_utterances)
    )
    train_labels = labels(train, config.mel, os.path.join(workdir, "labels_train.npz"))
    eval_labels = labels(evaluation, config.mel, os.path.join(workdir, "labels_eval.npz"))
    start = time.perf_counter()
    params, history = fit(config, train, train_labels)
    fit_seconds = time.perf_counter() - start
    with open(os.path.join(workdir, PARAMS_FILE), "wb") as f:
        f.write(serialization.to_bytes(params))
    training.save_config(config, workdir)  # a student reads its mel and architecture
    model = build(config)
    report = {
        "split": config.data.eval_split,
        "utterances": len(evaluation),
        "train_utterances": len(train),
        "fit_seconds": fit_seconds,
        "context_frames": model.context_frames,
        "history": history,
        "errors": errors(config, model, params, evaluation, eval_labels),
    }
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(report_markdown(report))
    return report


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Pitch from the mel: {report['utterances']} {report['split']} utterances, against "
        "harvest on the reference",
        "",
        f"Learned predictor fitted on {report['train_utterances']} training utterances in "
        f"{report['fit_seconds']:.0f} s; context {report['context_frames']} frames either side.",
        "",
        "| system | V/UV error | gross pitch error | fine F0 (cents) | F0 RMSE (cents) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, e in report["errors"].items():
        lines.append(
            f"| {name.replace('_', ' ')} | {100 * e['vuv_error']:.1f}% | "
            f"{100 * e['gross_pitch_error']:.1f}% | {e['f0_fine_cents']:.1f} | "
            f"{e['f0_rmse_cents']:.1f} |"
        )
    return "\n".join(lines) + "\n"
