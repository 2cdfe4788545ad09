"""The shared training loop: `fit(config, workdir, job)`.

One loop serves every model (the teacher, the student and the flows): a `TrainState`
(params, EMA params, optimizer state, step, RNG), a pure train step `jax.pmap`ped over local
devices with `axis_name='batch'` (gradients and metrics averaged with `lax.pmean`), orbax
checkpoints with automatic resume, TensorBoard summaries written by process 0 only, and a
progress line with throughput and ETA.

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

from pwavenet.training.checkpoints import (
    checkpoint_manager,
    init_params_from,
    restore_newest_intact,
    save_config,
    save_failed,
    set_aside,
)
from pwavenet.training.preemption import Preempted, PreemptionNotice
from pwavenet.training.state import TrainState, create_optimizer, create_train_state
from pwavenet.training.steps import (
    check_batch_size,
    first_replica,
    make_eval_step,
    make_train_step,
    shard,
)
from pwavenet.training.summaries import Writer
from pwavenet.training.timing import format_seconds
from pwavenet import config_schema
from pwavenet.training.lock import workdir_lock

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
    # (`pwavenet.data.pipelines.Datasets.train_from`), which makes a resumed run exact.
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
    """Trains `job` for config.train.steps, resuming from the workdir; returns last metrics.

    Holds the workdir's training lock (`workdir_lock`) while it runs; the jobs take it before
    they read any data, and this call then holds it again (it is re-entrant)."""
    microbatch = _microbatch_size(config.train)  # refused before anything is written
    with workdir_lock(workdir):
        return _fit(config, workdir, job, microbatch)


def _fit(
    config: ml_collections.ConfigDict, workdir: str, job: Job, microbatch: int
) -> dict[str, float]:
    train_config = config.train
    os.makedirs(workdir, exist_ok=True)
    tx, schedule = create_optimizer(train_config)
    ckpt = checkpoint_manager(workdir, train_config)
    state = _initial_state(config, workdir, job, ckpt, tx)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
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
    run = _Run(
        train_config=train_config,
        workdir=workdir,
        job=job,
        ckpt=ckpt,
        writer=writer,
        train_step=train_step,
        eval_step=make_eval_step(job.eval_fn) if job.eval_fn else None,
        frozen=() if job.frozen is None else (jax_utils.replicate(job.frozen),),
    )
    with PreemptionNotice() as preemption:
        last = _loop(run, jax_utils.replicate(state), start, preemption)
    logging.info(
        "Trained to step %d: checkpoints in %s, TensorBoard summaries in %s.",
        train_config.steps,
        os.path.join(workdir, "checkpoints"),
        os.path.join(workdir, "tensorboard"),
    )
    return last


def _microbatch_size(train_config: ml_collections.ConfigDict) -> int:
    """config.train.microbatch_size, checked against the batch of each device."""
    per_device = check_batch_size(train_config.batch_size)
    microbatch = config_schema.setting(train_config, "train.microbatch_size")
    if microbatch < 0 or (microbatch and microbatch < per_device and per_device % microbatch):
        raise ValueError(
            f"config.train.microbatch_size={microbatch} must divide the batch of {per_device} "
            f"examples per device (train.batch_size={train_config.batch_size} over "
            f"{jax.device_count()} devices); use a divisor of {per_device}, or 0 for all of it."
        )
    return microbatch


def _initial_state(config, workdir: str, job: Job, ckpt, tx) -> TrainState:
    """The run's first state on the host: the workdir's latest checkpoint if it has one, else
    config.init_from's weights if set, else a fresh initialisation from config.seed."""
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    # Jitted: an eager Flax init dispatches every op of the model one by one (tens of seconds).
    state = create_train_state(state_rng, jax.jit(job.init_params)(init_rng), tx)
    init_from = config_schema.setting(config, "init_from")
    if ckpt.latest_step() is not None:
        state = _resume(workdir, ckpt, state)
        logging.info("Resumed from %s at step %d.", workdir, int(state.step))
        if init_from:
            logging.info("config.init_from=%s ignored: the run resumes its own.", init_from)
    elif init_from:
        ema = config_schema.setting(config, "init_from_ema")
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
    return state


def _resume(workdir: str, ckpt: ocp.CheckpointManager, like: TrainState) -> TrainState:
    """The newest intact checkpoint's state, restored into the structure of `like`; newer
    damaged checkpoints are named, then moved to <workdir>/damaged_checkpoints so that the
    resumed run saves those steps again."""

    def restore(step):
        state = ckpt.restore(step, args=ocp.args.StandardRestore(like))
        for name in ("params", "ema_params"):
            if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(getattr(state, name))):
                raise FloatingPointError(f"its {name} are not finite")
        if int(state.step) != step:
            raise ValueError(f"it holds the state of step {int(state.step)}")
        return state

    state, _, damaged = restore_newest_intact(ckpt, restore)
    if damaged:
        set_aside(workdir, damaged)
        ckpt.reload()
    return state


@dataclasses.dataclass(frozen=True)
class _Run:
    """The parts of a run that stay fixed while it trains.

    train_step(state, batch, *frozen) -> (state, metrics) and eval_step(params, batch,
    *frozen) -> metrics are pmapped; `frozen` is () or the job's frozen tree, replicated."""

    train_config: ml_collections.ConfigDict
    workdir: str
    job: Job
    ckpt: ocp.CheckpointManager
    writer: Writer
    train_step: Callable
    eval_step: Callable | None
    frozen: tuple


def _loop(run: _Run, state, start: int, preemption: PreemptionNotice) -> dict[str, float]:
    """Steps start + 1 to train.steps from the replicated `state`, with progress, evaluation,
    summaries and checkpoints at their intervals and on the last step; returns the last
    logged metrics (with the last evaluation's as eval_<name>). On a preemption notice, saves
    the step and raises Preempted."""
    config, job = run.train_config, run.job
    stream = job.train_batches(start) if callable(job.train_batches) else job.train_batches
    batches = jax_utils.prefetch_to_device(map(shard, stream), 2)
    throughput = _Throughput(start)
    last: dict[str, float] = {}
    for step in range(start + 1, config.steps + 1):
        state, metrics = run.train_step(state, next(batches), *run.frozen)
        # Polled once per step; a SIGTERM skips this step's evaluation and summaries.
        stop = preemption.reached(step)
        final = step == config.steps
        if step % config.log_every == 0 or final:
            last = _log_progress(run, step, metrics, throughput.steps_per_second(step))
            _stop_if_steps_keep_failing(run, step, last)
        if not stop and run.eval_step and (step % config.eval_every == 0 or final):
            last.update(_evaluate(run, step, state))
        if not stop and job.summaries and (step % config.audio_every == 0 or final):
            job.summaries(run.writer, step, first_replica(state.ema_params))
        if step % config.checkpoint_every == 0 or final or stop:
            _save(run, state, step)
        if stop and not final:
            _close(run)
            logging.warning(
                "Preempted: saved step %d in %s; rerun the same command to resume.",
                step,
                run.workdir,
            )
            raise Preempted(step, run.workdir)
    _close(run)
    return last


class _Throughput:
    """Training steps per second since the previous reading."""

    def __init__(self, step: int):
        self._time, self._step = time.time(), step

    def steps_per_second(self, step: int) -> float:
        rate = (step - self._step) / max(time.time() - self._time, 1e-9)
        self._time, self._step = time.time(), step
        return rate


def _log_progress(run: _Run, step: int, metrics, steps_per_s: float) -> dict[str, float]:
    """Writes and logs step's training metrics and throughput; returns the metrics."""
    config = run.train_config
    last = {k: float(v) for k, v in first_replica(metrics).items()}
    samples_per_s = steps_per_s * config.batch_size * run.job.samples_per_example
    run.writer.scalars(step, last, "train/")
    run.writer.scalars(
        step, {"steps_per_second": steps_per_s, "samples_per_second": samples_per_s}, "perf/"
    )
    eta = (config.steps - step) / max(steps_per_s, 1e-9)
    logging.info(
        "step %d/%d  loss %.4f  grad_norm %.3g  %.2f steps/s  %.0f samples/s  eta %s",
        step,
        config.steps,
        last["loss"],
        last["grad_norm"],
        steps_per_s,
        samples_per_s,
        format_seconds(eta),
    )
    return last


def _stop_if_steps_keep_failing(run: _Run, step: int, last: dict[str, float]) -> None:
    """Raises FloatingPointError once max_skipped_in_a_row steps in a row were skipped."""
    config, ckpt = run.train_config, run.ckpt
    if last["skipped_in_a_row"] < config.max_skipped_in_a_row:
        return
    try:
        ckpt.wait_until_finished()
    except Exception as e:  # noqa: BLE001
        raise _save_error(run, e) from e
    raise FloatingPointError(
        f"Stopped at step {step}: {int(last['skipped_in_a_row'])} training steps in a "
        "row had a non-finite loss or gradient (each was skipped; "
        f"{int(last['skipped_total'])} in all). The saved checkpoints hold finite "
        f"states (latest: step {ckpt.latest_step()}). Lower "
        f"config.train.learning_rate (now {config.learning_rate}), check the "
        "data, or raise config.train.max_skipped_in_a_row."
    )


def _evaluate(run: _Run, step: int, state) -> dict[str, float]:
    """Evaluates the EMA params; writes and logs the metrics, returned as eval_<name>."""
    eval_metrics = evaluate_metrics(
        run.eval_step, state.ema_params, run.job.eval_batches(), *run.frozen
    )
    run.writer.scalars(step, eval_metrics, "eval/")
    logging.info(
        "step %d eval (EMA params): %s",
        step,
        "  ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
    )
    return {f"eval_{k}": v for k, v in eval_metrics.items()}


def _save(run: _Run, state, step: int) -> None:
    """Starts saving step's state (orbax saves in the background), refusing a non-finite one."""
    host_state = first_replica(state)
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host_state.params)):
        raise FloatingPointError(
            f"Parameters are not finite at step {step}; not saving them. The latest "
            f"checkpoint (step {run.ckpt.latest_step()}) is intact."
        )
    try:
        # Waits for the previous step's save first: an error of that one surfaces here.
        run.ckpt.save(step, args=ocp.args.StandardSave(host_state))
    except Exception as e:  # noqa: BLE001  any failure to write is reported by folder
        raise _save_error(run, e) from e
    logging.info("Saving step %d in %s.", step, os.path.join(run.workdir, "checkpoints"))


def _save_error(run: _Run, error: Exception):
    """CheckpointSaveError for a save that raised `error`: the save of this step, or of the one
    before (orbax saves in the background and reports a failure when the next save or the
    final wait starts)."""
    return save_failed(os.path.abspath(os.path.join(run.workdir, "checkpoints")), error)


def _close(run: _Run) -> None:
    """Waits for the last checkpoint and flushes the summaries."""
    try:
        run.ckpt.wait_until_finished()
        run.ckpt.close()
    except Exception as e:  # noqa: BLE001
        raise _save_error(run, e) from e
    run.writer.flush()


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
