"""One process of a multi-host run on this machine, for tests/test_multihost.py.

    python tests/multihost_worker.py --workdir=DIR --data_dir=D --out=PREFIX
        [--process_id=P --num_processes=N --port=PORT] [--local_devices=2]
        [--emulate_processes=N] [--steps=4] [--student_steps=0] [--eval] [--audio]
        [--keep_checkpoints=3]

With --num_processes > 1 the process joins a jax.distributed cluster on 127.0.0.1:PORT with
gloo CPU collectives. It then runs the real jobs on its --local_devices fake CPU devices: the
tiny teacher (`teacher_job.train_and_evaluate`) in DIR for --steps steps (resuming if DIR has a
checkpoint), then, with --student_steps, the tiny student distilled from it
(`student_job.train_and_evaluate`) in DIR_student.

--emulate_processes=N (one process) feeds the jobs, batch by batch, the concatenation of the
batches processes 0..N-1 of an N-process run read (the real input pipeline called with each
process index): one process then trains on the same global batches, in the same order, as
the N-process run, and must reach the same parameters.

PREFIX.teacher.npz and PREFIX.student.npz get this process's final parameters (flattened by
key path), the logged train losses [(step, loss)] and eval metrics [(step, metrics in name
order)]; a preempted job writes its file too, then exits 0 as the job does. Evaluation and
audio summaries are off unless --eval / --audio (their compiles dominate a short run):
--eval evaluates the teacher, --audio writes the student's (one-pass, quick to compile).
"""

import argparse
import dataclasses
import os
import sys


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--local_devices", type=int, default=2)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--emulate_processes", type=int, default=0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--student_steps", type=int, default=0)
    p.add_argument("--eval", action="store_true")
    p.add_argument("--audio", action="store_true")
    p.add_argument("--keep_checkpoints", type=int, default=3)
    return p.parse_args()


def main():
    args = parse()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.local_devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import jax

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=120,
        )
    from absl import logging

    from configs import student as student_configs
    from configs import teacher as teacher_configs
    from pwavenet.data import pipelines
    from pwavenet import training
    from pwavenet.jobs import student as student_job
    from pwavenet.jobs import teacher as teacher_job

    logging.set_verbosity(logging.INFO)
    logging.use_absl_handler()
    if args.emulate_processes:
        _emulate_processes(pipelines, args.emulate_processes)

    log = {"train/": [], "eval/": []}
    scalars, fit = training.Writer.scalars, training.fit

    def record(self, step, values, prefix=""):
        # Called on every process (only process 0's writer writes): the pmean'd metrics.
        if prefix == "train/":
            log[prefix].append([step, float(values["loss"])])
        elif prefix == "eval/":
            log[prefix].append([step] + [float(values[k]) for k in sorted(values)])
        return scalars(self, step, values, prefix)

    def fit_as_asked(config, workdir, job):
        job = dataclasses.replace(
            job,
            summaries=job.summaries if args.audio and workdir != args.workdir else None,
            eval_fn=job.eval_fn if args.eval and workdir == args.workdir else None,
        )
        return fit(config, workdir, job)

    training.Writer.scalars, training.fit = record, fit_as_asked

    def run(name, lib, config, workdir, steps, schedule_steps):
        config.data.data_dir = args.data_dir
        config.train.steps = steps
        config.train.decay_steps = schedule_steps  # one schedule, however long the run
        config.train.log_every = 1
        config.train.eval_every = steps
        config.train.audio_every = steps
        config.train.checkpoint_every = 2
        config.train.keep_checkpoints = args.keep_checkpoints
        log["train/"].clear(), log["eval/"].clear()
        try:
            lib.train_and_evaluate(config, workdir)
        except training.Preempted:
            _write(f"{args.out}.{name}.npz", workdir, log)
            raise
        _write(f"{args.out}.{name}.npz", workdir, log)

    run("teacher", teacher_job, teacher_configs.get_config("tiny"), args.workdir, args.steps, 4)
    if args.student_steps:
        config = student_configs.get_config("tiny")
        config.teacher_workdir = args.workdir
        run("student", student_job, config, args.workdir + "_student", args.student_steps, 2)


def _write(path, workdir, log) -> None:
    import jax
    import numpy as np

    from pwavenet import training

    params, step = training.restore_params(workdir, ema=False)
    flat = {
        jax.tree_util.keystr(key): np.asarray(leaf)
        for key, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    np.savez(
        path,
        step=step,
        losses=np.array(log["train/"]),
        eval_metrics=np.array(log["eval/"]),
        **flat,
    )


def _emulate_processes(pipelines, n: int) -> None:
    """Makes create_datasets return one stream of N processes' batches side by side."""
    import jax
    import numpy as np

    create = pipelines.create_datasets

    def create_datasets(config, *, train=True, **unused):
        per_process = [
            create(
                config,
                train=train,
                process_index=p,
                process_count=n,
                local_device_count=jax.local_device_count() // n,
            )
            for p in range(n)
        ]

        def joined(streams):
            for batches in zip(*streams):
                yield {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

        train_from = [d.train_from for d in per_process]
        evals = [d.eval for d in per_process]
        return dataclasses.replace(
            per_process[0],
            batch_size=per_process[0].batch_size * n,
            train=None,
            train_from=lambda step: joined([f(step) for f in train_from]),
            eval=lambda num_batches=None: joined([f(num_batches) for f in evals]),
        )

    pipelines.create_datasets = create_datasets


if __name__ == "__main__":
    main()
