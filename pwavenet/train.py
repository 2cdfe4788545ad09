"""The shared training loop, and the WaveNet teacher's job built on it.

One loop serves every model: a `TrainState` (params, EMA params, optimizer state, step, RNG),
a pure train step `jax.pmap`ped over local devices with `axis_name='batch'` (gradients and
metrics averaged with `lax.pmean`), orbax checkpoints with automatic resume, TensorBoard
summaries written by process 0 only, and a progress line with throughput and ETA.

A resumed run continues exactly where the interrupted one was: the state (params, EMA,
optimizer, RNG, step) comes from the checkpoint and the data stream restarts at the batch of
the restored step (`Job.train_batches` as a function of the step).

Fine-tuning: a run whose workdir has no checkpoint and whose config.init_from names another
workdir starts from that run's latest weights (its EMA weights unless config.init_from_ema is
False) as step-0 params and EMA, with a fresh optimizer and schedule; a workdir with a
checkpoint resumes it and ignores init_from. The jobs refuse an init_from whose `model`
section differs (`check_init_from`), before any data is read.

Randomness inside a step is one key per example, `fold_in(fold_in(state.rng, step), i)` for
the example's index i in the global batch: it does not depend on how the batch is split over
devices and hosts, so 8 devices draw what 1 device draws.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from absl import logging
import flax
from flax import jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

PyTree = Any
Batch = dict[str, np.ndarray]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: PyTree
    ema_params: PyTree
    opt_state: PyTree
    rng: jax.Array
    # Non-finite guard: updates skipped in a row now, and in all.
    skipped_in_a_row: jax.Array
    skipped_total: jax.Array


def create_optimizer(train_config: ml_collections.ConfigDict):
    """Adam with linear warmup, cosine decay and global-norm clipping; returns (tx, schedule).

    The schedule spans train.decay_steps (0: train.steps) and holds its end value after it, so
    a run whose train.steps is raised on resume keeps the learning rates it already used when
    decay_steps is set.
    """
    peak = train_config.learning_rate
    decay_steps = train_config.get("decay_steps", 0) or train_config.steps
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        peak,
        train_config.warmup_steps,
        max(decay_steps, train_config.warmup_steps + 1),
        end_value=peak * train_config.end_learning_rate_fraction,
    )
    tx = optax.chain(optax.clip_by_global_norm(train_config.grad_clip), optax.adam(schedule))
    return tx, schedule


def create_train_state(rng: jax.Array, params: PyTree, tx) -> TrainState:
    # The EMA starts as a copy: the step donates the state, and two leaves sharing one buffer
    # cannot both be donated.
    return TrainState(
        skipped_in_a_row=jnp.zeros((), jnp.int32),
        skipped_total=jnp.zeros((), jnp.int32),
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=rng,
    )


def value_and_grad_in_microbatches(loss_fn: Callable, microbatch_size: int | None = None):
    """`jax.value_and_grad(loss_fn, has_aux=True)` for loss_fn(params, batch, rngs, *rest) ->
    (loss, metrics), computed `microbatch_size` examples at a time under a `lax.scan` (batch
    and rngs split along their leading axis, `rest` passed whole) and averaged over the
    microbatches: for a loss that is a mean over equal-sized examples, the batch's value and
    gradient, with the peak memory and the working set of one microbatch. On a 2-core CPU, one
    example at a time ran the benchmark's distillation step 1.2x as fast and its teacher step
    1.01x to 1.13x: each operation's arrays then fit in the last-level cache (BUILD.md). None or 0, or a size not
    below the batch: the whole batch at once."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def run(params, batch, rngs, *rest):
        size = rngs.shape[0]
        if not microbatch_size or microbatch_size >= size:
            return grad_fn(params, batch, rngs, *rest)
        if size % microbatch_size:
            raise ValueError(
                f"config.train.microbatch_size={microbatch_size} does not divide the batch "
                f"of {size} examples per device; use a divisor of it, or 0 for the whole batch."
            )
        count = size // microbatch_size
        split = lambda a: a.reshape(count, microbatch_size, *a.shape[1:])  # noqa: E731
        slices = (jax.tree.map(split, batch), split(rngs))
        first = jax.tree.map(lambda a: a[0], slices)
        total = jax.tree.map(
            lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(grad_fn, params, *first, *rest)
        )

        def add(total, microbatch):
            return jax.tree.map(jnp.add, total, grad_fn(params, *microbatch, *rest)), None

        total, _ = jax.lax.scan(add, total, slices)
        return jax.tree.map(lambda a: a / count, total)

    return run


def make_train_step(
    loss_fn: Callable,
    tx,
    schedule,
    ema_decay: float,
    *,
    pmap: bool = True,
    max_skipped_in_a_row: int = 10,
    with_frozen: bool = False,
    microbatch_size: int | None = None,
):
    """Builds the train step.

    A step whose loss or gradient is not finite is skipped (params, EMA and optimizer state
    unchanged) and counted; `skipped_in_a_row` stops counting, and stays, once it reaches
    `max_skipped_in_a_row`, so the loop sees the limit even between its log steps.

    loss_fn(params, batch, rngs) -> (loss, metrics dict), `rngs` holding one PRNG key per
    example of `batch` (see the module docstring). With `with_frozen` the step takes a third
    argument, a tree of frozen arrays (a distillation teacher's parameters), passed on as
    loss_fn(params, batch, rngs, frozen) and never differentiated. With pmap=True the step runs
    on every local device with the batch split along a leading device axis; pmap=False gives the
    same computation on one device (used to check the two agree). `microbatch_size` takes each
    device's batch that many examples at a time (`value_and_grad_in_microbatches`).
    """
    value_and_grad = value_and_grad_in_microbatches(loss_fn, microbatch_size)

    def step(state: TrainState, batch: Batch, frozen=None):
        rng = jax.random.fold_in(state.rng, state.step)
        local = jax.tree.leaves(batch)[0].shape[0]
        first = jax.lax.axis_index("batch") * local if pmap else 0
        rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(first + jnp.arange(local))
        args = (batch, rngs, frozen) if with_frozen else (batch, rngs)
        (loss, metrics), grads = value_and_grad(state.params, *args)
        if pmap:
            grads = jax.lax.pmean(grads, "batch")
            loss, metrics = jax.lax.pmean((loss, metrics), "batch")
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
        # Non-finite guard: a NaN/inf loss or gradient leaves params, EMA and optimizer state
        # exactly as they were; only the step and the skip counters move.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        skipped = 1 - finite.astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            ema_params=keep(ema_params, state.ema_params),
            opt_state=keep(opt_state, state.opt_state),
            skipped_in_a_row=jnp.where(
                state.skipped_in_a_row >= max_skipped_in_a_row,
                state.skipped_in_a_row,
                (state.skipped_in_a_row + 1) * skipped,
            ),
            skipped_total=state.skipped_total + skipped,
        )
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=grad_norm,
            learning_rate=schedule(state.step),
            skipped_in_a_row=new_state.skipped_in_a_row,
            skipped_total=new_state.skipped_total,
        )
        return new_state, metrics

    if pmap:
        return jax.pmap(step, axis_name="batch", donate_argnums=(0,))
    return jax.jit(step, donate_argnums=(0,))


def make_eval_step(metrics_fn: Callable):
    """metrics_fn(params, batch[, frozen]) -> metrics dict, averaged over devices."""

    def step(params, batch, *frozen):
        return jax.lax.pmean(metrics_fn(params, batch, *frozen), "batch")

    return jax.pmap(step, axis_name="batch")


def shard(batch: Batch) -> Batch:
    """(host_batch, ...) -> (local_devices, host_batch // local_devices, ...)."""
    n = jax.local_device_count()
    return jax.tree.map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)


def first_replica(tree: PyTree) -> PyTree:
    """One device's copy of a replicated tree, as numpy, without a cross-device gather."""
    # A pmapped array's shard keeps a leading axis of 1 on some versions; drop it by shape.
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree)


def check_batch_size(global_batch: int) -> int:
    """Returns the per-device batch; the global batch must split evenly over all devices."""
    devices = jax.device_count()
    if global_batch % devices:
        raise ValueError(
            f"config.train.batch_size={global_batch} must be divisible by the number of devices "
            f"({devices} = {jax.process_count()} processes x {jax.local_device_count()} local); "
            f"use a multiple of {devices}."
        )
    return global_batch // devices


# ----------------------------------------------------------------------------- workdir


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir!r} is not a training workdir (it has no saved config). "
            "Pass the --workdir of a finished or running training job."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _flatten(config, prefix=""):
    out = {}
    for key, value in config.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_mismatches(
    saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict, sections: Iterable[str]
) -> list[str]:
    """'field: saved X, now Y' for every differing field of the given sections."""
    problems = []
    for section in sections:
        a, b = _flatten(saved[section], f"{section}."), _flatten(new[section], f"{section}.")
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"{key}: saved {a.get(key)!r}, now {b.get(key)!r}")
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
    source = config.get("init_from", "")
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
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=train_config.keep_checkpoints),
    )


def restore_params(workdir: str, step: int | None = None, *, ema: bool = True):
    """(params, step) from a workdir's checkpoint: the EMA weights unless ema=False."""
    with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints"))) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {os.path.join(workdir, 'checkpoints')}: train first, or point "
                "--workdir at a training job's workdir."
            )
        if step not in mngr.all_steps():
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {workdir}; available: "
                f"{sorted(mngr.all_steps())}."
            )
        tree = mngr.restore(step, args=ocp.args.StandardRestore())
    return tree["ema_params" if ema else "params"], step


# ----------------------------------------------------------------------------- summaries


class Writer:
    """TensorBoard summaries from process 0; other processes write nothing."""

    def __init__(self, workdir: str):
        self._writer = None
        if jax.process_index() == 0:
            from flax.metrics import tensorboard  # imports TensorFlow

            self._writer = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self._writer:
            for name, value in values.items():
                self._writer.scalar(prefix + name, float(value), step)

    def audio(self, step: int, name: str, audio: np.ndarray, sample_rate: int) -> None:
        if self._writer:
            self._writer.audio(
                name,
                np.asarray(audio, np.float32)[..., None],
                step,
                sample_rate=sample_rate,
                max_outputs=audio.shape[0],
            )

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self._writer:
            self._writer.image(name, image, step)

    def flush(self) -> None:
        if self._writer:
            self._writer.flush()


# ----------------------------------------------------------------------------- the loop


class Preempted(SystemExit):
    """Raised by `fit` after SIGTERM once the current step's checkpoint is saved; exit code 0,
    so a job manager sees a clean exit and the rerun resumes from that step."""

    def __init__(self, step: int, workdir: str):
        super().__init__(0)
        self.step = step
        self.workdir = workdir


class PreemptionNotice:
    """Turns SIGTERM (what cloud VMs send before preempting) into a step at which to stop.

    Single process: a Python SIGTERM handler sets a flag the loop polls. Several processes:
    they must stop at the same step to save collectively, so the handler is JAX's own (the
    preemption notifier `jax.distributed.initialize` installs; a Python handler would replace
    it) and the loop asks the coordination service
    (`multihost_utils.reached_preemption_sync_point`), which turns one host's SIGTERM into a
    step agreed by all.
    """

    def __init__(self):
        self.received = False
        self._previous = None
        self._multiprocess = jax.process_count() > 1
        self._warned = False

    def __enter__(self):
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True
        logging.warning("SIGTERM received: saving a checkpoint after this step, then exiting.")

    def reached(self, step: int) -> bool:
        if not self._multiprocess:
            return self.received
        from jax.experimental import multihost_utils

        try:
            reached = bool(multihost_utils.reached_preemption_sync_point(step))
        except Exception as e:  # noqa: BLE001  no preemption service in this cluster
            if not self._warned:
                self._warned = True
                logging.warning("No preemption notice in this multi-process run: %s", e)
            return False
        if reached:
            logging.warning("Preemption notice: all processes save step %d, then exit.", step)
        return reached


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
                _format_seconds(eta),
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


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
