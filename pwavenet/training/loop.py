"""The shared training loop: `fit(config, workdir, job)`.

One loop serves every model (the teacher, the student and the flows): a `TrainState`
(params, EMA params, optimizer state, step, RNG), a pure train step `jax.pmap`ped over local
devices with `axis_name='batch'` (gradients and metrics averaged with `lax.pmean`), orbax checkpoints with automatic resume, TensorBoard
summaries written by process 0 only, and a progress line with throughput and ETA.

A resumed run continues exactly where the interrupted one was: the state (params, EMA,
optimizer, RNG, step) comes from the checkpoint and the data stream restarts at the batch of
the restored step (`Job.train_batches` as a function of the step).

Fine-tuning from another run's weights (config.init_from) is described in
`pwavenet.training.checkpoints`; the per-example randomness of a step in
`pwavenet.training.steps`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterable, Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import jax_utils

from pwavenet.training.checkpoints import checkpoint_manager, init_params_from, save_config
from pwavenet.training.preemption import Preempted, PreemptionNotice
from pwavenet.training.state import create_optimizer, create_train_state
from pwavenet.training.steps import (
    check_batch_size,
    first_replica,
    make_eval_step,
    make_train_step,
    shard,
)
from pwavenet.training.summaries import Writer
from pwavenet.training.timing import format_seconds

__all__ = [
    "Job",
    "fit",
    "evaluate_metrics",
]


PyTree = Any
Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Job:
    """What a model contributes to the shared loop.

    init_params(rng) -> params; loss_fn(params, batch, rng) -> (loss, metrics);
    eval_fn(params, batch[, frozen]) -> metrics; eval_batches() -> iterable of host batches;
    summaries(writer, step, ema_params) writes audio/images (called on every process; it must
    only write through `writer`). `frozen`, if given, is a tree of arrays the loss needs but does
    not train (a teacher's parameters): replicated once and passed as loss_fn's fourth argument.
    """

    init_params: Callable[[jax.Array], PyTree]
    loss_fn: Callable
    # Training batches: an iterator, or a function of the first step's index returning one
    # (`input_pipeline.Datasets.train_from`), which makes a resumed run exact.
    train_batches: Iterator[Batch] | Callable[[int], Iterator[Batch]]
    eval_fn: Callable | None = None
    eval_batches: Callable[[], Iterable[Batch]] | None = None
    summaries: Callable[[Writer, int, PyTree], None] | None = None
    samples_per_example: int = 1  # for samples/s: e.g. the crop length
    frozen: PyTree | None = None
    # Applied to the weights loaded from config.init_from before they start the run (a
    # student with a frozen upsampler takes its new teacher's).
    adapt_init_from: Callable[[PyTree], PyTree] | None = None


def fit(config: ml_collections.ConfigDict, workdir: str, job: Job) -> dict[str, float]:
    """Trains `job` for config.train.steps, resuming from the workdir; returns last metrics."""
    train_config = config.train
    per_device = check_batch_size(train_config.batch_size)
    microbatch = train_config.get("microbatch_size", 0)
    if microbatch < 0 or (microbatch and microbatch < per_device and per_device % microbatch):
        raise ValueError(
            f"config.train.microbatch_size={microbatch} must divide the batch of {per_device} "
            f"examples per device (train.batch_size={train_config.batch_size} over "
            f"{jax.device_count()} devices); use a divisor of {per_device}, or 0 for all of it."
        )
    os.makedirs(workdir, exist_ok=True)
    tx, schedule = create_optimizer(train_config)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng = jax.random.split(rng)
    # Jitted: an eager Flax init dispatches every op of the model one by one (tens of seconds).
    state = create_train_state(state_rng, jax.jit(job.init_params)(init_rng), tx)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))

    ckpt = checkpoint_manager(workdir, train_config)
    init_from = config.get("init_from", "")
    if ckpt.latest_step() is not None:
        state = ckpt.restore(ckpt.latest_step(), args=ocp.args.StandardRestore(state))
        logging.info("Resumed from %s at step %d.", workdir, int(state.step))
        if init_from:
            logging.info("config.init_from=%s ignored: the run resumes its own.", init_from)
    elif init_from:
        ema = config.get("init_from_ema", True)
        params, source_step = init_params_from(init_from, state.params, ema=ema)
        if job.adapt_init_from is not None:
            params = job.adapt_init_from(params)
        state = create_train_state(state_rng, params, tx)
        logging.info(
            "Fine-tuning from the %s weights of %s (step %d).",
            "EMA" if ema else "raw",
            init_from,
            source_step,
        )
    save_config(config, workdir)
    writer = Writer(workdir)
    start = int(state.step)
    if start == 0:
        writer.scalars(0, {"num_params": num_params}, "model/")
    logging.info(
        "Training %s parameters from step %d to %d.", f"{num_params:,}", start, train_config.steps
    )

    train_step = make_train_step(
        job.loss_fn,
        tx,
        schedule,
        train_config.ema_decay,
        max_skipped_in_a_row=train_config.max_skipped_in_a_row,
        with_frozen=job.frozen is not None,
        microbatch_size=microbatch,
    )
    frozen = () if job.frozen is None else (jax_utils.replicate(job.frozen),)
    eval_step = make_eval_step(job.eval_fn) if job.eval_fn else None
    state = jax_utils.replicate(state)

    last: dict[str, float] = {}
    with PreemptionNotice() as preemption:
        last = _loop(
            config,
            workdir,
            job,
            state,
            ckpt,
            writer,
            train_step,
            eval_step,
            frozen,
            start,
            preemption,
        )
    return last


def _save(ckpt, state, step: int) -> None:
    host_state = first_replica(state)
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host_state.params)):
        raise FloatingPointError(
            f"Parameters are not finite at step {step}; not saving them. The latest "
            f"checkpoint (step {ckpt.latest_step()}) is intact."
        )
    ckpt.save(step, args=ocp.args.StandardSave(host_state))


def _loop(
    config, workdir, job, state, ckpt, writer, train_step, eval_step, frozen, start, preemption
):
    train_config = config.train
    stream = job.train_batches(start) if callable(job.train_batches) else job.train_batches
    batches = jax_utils.prefetch_to_device(map(shard, stream), 2)
    last: dict[str, float] = {}
    t0, last_step = time.time(), start
    for step in range(start + 1, train_config.steps + 1):
        state, metrics = train_step(state, next(batches), *frozen)
        # Polled once per step; a SIGTERM skips this step's evaluation and summaries.
        stop = preemption.reached(step)
        last_step_or_stop = step == train_config.steps or stop
        if step % train_config.log_every == 0 or step == train_config.steps:
            last = {k: float(v) for k, v in first_replica(metrics).items()}
            elapsed = max(time.time() - t0, 1e-9)
            steps_per_s = (step - last_step) / elapsed
            samples_per_s = steps_per_s * train_config.batch_size * job.samples_per_example
            t0, last_step = time.time(), step
            writer.scalars(step, last, "train/")
            writer.scalars(
                step,
                {"steps_per_second": steps_per_s, "samples_per_second": samples_per_s},
                "perf/",
            )
            eta = (train_config.steps - step) / max(steps_per_s, 1e-9)
            logging.info(
                "step %d/%d  loss %.4f  grad_norm %.3g  %.2f steps/s  %.0f samples/s  eta %s",
                step,
                train_config.steps,
                last["loss"],
                last["grad_norm"],
                steps_per_s,
                samples_per_s,
                format_seconds(eta),
            )
            if last["skipped_in_a_row"] >= train_config.max_skipped_in_a_row:
                ckpt.wait_until_finished()
                raise FloatingPointError(
                    f"Stopped at step {step}: {int(last['skipped_in_a_row'])} training steps in a "
                    "row had a non-finite loss or gradient (each was skipped; "
                    f"{int(last['skipped_total'])} in all). The saved checkpoints hold finite "
                    f"states (latest: step {ckpt.latest_step()}). Lower "
                    f"config.train.learning_rate (now {train_config.learning_rate}), check the "
                    "data, or raise config.train.max_skipped_in_a_row."
                )
        if stop:
            pass
        elif eval_step and (step % train_config.eval_every == 0 or step == train_config.steps):
            eval_metrics = evaluate_metrics(
                eval_step, state.ema_params, job.eval_batches(), *frozen
            )
            writer.scalars(step, eval_metrics, "eval/")
            logging.info(
                "step %d eval (EMA params): %s",
                step,
                "  ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
            )
            last.update({f"eval_{k}": v for k, v in eval_metrics.items()})
        if (
            job.summaries
            and not stop
            and (step % train_config.audio_every == 0 or step == train_config.steps)
        ):
            job.summaries(writer, step, first_replica(state.ema_params))
        if step % train_config.checkpoint_every == 0 or last_step_or_stop:
            _save(ckpt, state, step)
        if stop and step < train_config.steps:
            ckpt.wait_until_finished()
            ckpt.close()
            writer.flush()
            logging.warning(
                "Preempted: saved step %d in %s; rerun the same command to resume.", step, workdir
            )
            raise Preempted(step, workdir)
    ckpt.wait_until_finished()
    ckpt.close()
    writer.flush()
    return last


def evaluate_metrics(
    eval_step, replicated_params, batches: Iterable[Batch], *frozen
) -> dict[str, float]:
    """Mean of eval_step's metrics over batches (each batch weighted equally)."""
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        metrics = first_replica(eval_step(replicated_params, shard(batch), *frozen))
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        count += 1
    if not count:
        raise ValueError("The evaluation split yielded no batch; check config.data.eval_split.")
    return {k: v / count for k, v in totals.items()}
