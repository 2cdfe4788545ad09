"""The flows job: fit a flow to 2-D data (maximum likelihood) or to an energy (reverse KL).

Losses, per batch:
  density  -E_data[log p(x)]              log p through every layer's inverse
  energy   E_q[log q(x) + beta U(x)]      forward pass only; at beta = 1 it is KL(q || p) - log Z
                                         (beta rises linearly from 0.01 to 1 over
                                         config.train.anneal_steps, then stays at 1)

Writes to the workdir: orbax checkpoints (resumed automatically; SIGTERM saves the step being
trained and exits with code 0, as the vocoder jobs do), `config.json`,
TensorBoard summaries under `tensorboard/`, `flows.png` (data vs learned density vs samples,
or target vs fitted vs samples) and `results.json` (held-out NLL in nats per point with the
best single Gaussian's for reference, or the KL estimate with its standard error).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from pwavenet import flows, training
from pwavenet.flows import toy2d

_LAYERS = ("planar", "affine", "elementwise", "sigmoid")


def parse_layers(spec: str, dim: int, box: tuple[np.ndarray, np.ndarray] | None):
    """Builds the chain's layers from a spec like 'affine,planar*16,sigmoid'."""
    layers: list[nn.Module] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        name, _, count = token.partition("*")
        if name not in _LAYERS or (count and not count.isdigit()):
            raise ValueError(
                f"config.flow.layers={spec!r}: cannot read {token!r}; use comma-separated "
                f"names from {_LAYERS}, each optionally followed by *K (e.g. 'affine,planar*16')."
            )
        for _ in range(int(count or 1)):
            if name == "planar":
                layers.append(flows.Planar(dim))
            elif name == "affine":
                layers.append(flows.Affine(dim, permutation_seed=len(layers)))
            elif name == "elementwise":
                layers.append(flows.ElementwiseAffine(dim))
            else:
                layers.append(flows.Sigmoid())
    if not layers:
        raise ValueError(f"config.flow.layers={spec!r} names no layer.")
    if isinstance(layers[-1], flows.Sigmoid):
        lo, hi = box
        layers.append(
            flows.ElementwiseAffine(
                dim, scale=tuple(map(float, hi - lo)), shift=tuple(map(float, lo))
            )
        )
    elif any(isinstance(l, flows.Sigmoid) for l in layers):
        raise ValueError(
            f"config.flow.layers={spec!r}: a sigmoid inside the chain confines everything after "
            "it to a bounded set that the next layers cannot map onto R^2; put sigmoid last."
        )
    return layers


def build_flow(config: ml_collections.ConfigDict, box=None) -> flows.Flow:
    chain = flows.Chain(parse_layers(config.flow.layers, 2, box))
    return flows.Flow(flows.GaussianBase(2, learnable=config.flow.learnable_base), chain)


def gaussian_baseline_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Held-out NLL (nats/point) of the maximum-likelihood single Gaussian fitted on train."""
    mean = train.mean(0)
    cov = np.cov(train.T, bias=True)
    diff = test - mean
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    _, logdet = np.linalg.slogdet(cov)
    return float(np.mean(0.5 * maha + 0.5 * logdet + math.log(2 * math.pi)))


def _data_box(train: np.ndarray, margin: float):
    lo, hi = train.min(0), train.max(0)
    pad = margin * (hi - lo)
    return (lo - pad).astype(np.float32), (hi + pad).astype(np.float32)


def _inside(points: np.ndarray, box) -> bool:
    lo, hi = box
    return bool(np.all((points > lo) & (points < hi)))


def _batched_log_prob(flow, params, points: np.ndarray, chunk: int = 8192) -> np.ndarray:
    fn = jax.jit(lambda p, x: flow.apply(p, x, method=flow.log_prob))
    return np.concatenate(
        [np.asarray(fn(params, points[i : i + chunk])) for i in range(0, len(points), chunk)]
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the job described by `config` in `workdir`; returns the final results dict."""
    os.makedirs(workdir, exist_ok=True)
    density = config.task == "density"
    if config.task not in ("density", "energy"):
        raise ValueError(f"config.task={config.task!r}: use 'density' or 'energy'.")

    if density:
        train_x = toy2d.sample_dataset(config.data.name, config.data.num_train, config.seed)
        test_x = toy2d.sample_dataset(config.data.name, config.data.num_test, config.seed + 1)
        box = _data_box(train_x, config.flow.box_margin)
        target_u = None
    else:
        train_x = test_x = None
        box = (np.full(2, -toy2d.WINDOW, np.float32), np.full(2, toy2d.WINDOW, np.float32))
        target_u = toy2d.energy(config.energy.name)
    flow = build_flow(config, box)
    bounded = config.flow.layers.rstrip().endswith("sigmoid")
    if density and bounded and not _inside(test_x, box):
        raise ValueError(
            "Held-out points fall outside the sigmoid chain's box "
            f"[{box[0]}, {box[1]}]; raise config.flow.box_margin (now {config.flow.box_margin})."
        )

    rng = jax.random.PRNGKey(config.seed)
    init_rng, data_rng, sample_rng = jax.random.split(rng, 3)
    init_x = jnp.asarray((box[0] + box[1]) / 2)[None]
    params = flow.init(init_rng, init_x)
    # Over train.decay_steps (0: train.steps), so that a run whose train.steps is raised on
    # resume keeps the learning rates it used when decay_steps is set.
    decay_steps = config.train.get("decay_steps", 0) or config.train.steps
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.train.learning_rate,
        config.train.warmup_steps,
        max(decay_steps, config.train.warmup_steps + 1),
        end_value=config.train.learning_rate * 0.01,
    )
    optimizer = optax.chain(optax.clip_by_global_norm(config.train.grad_clip), optax.adam(schedule))
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.int32(0)}

    ckpt = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints),
    )
    if ckpt.latest_step() is not None:
        state = ckpt.restore(ckpt.latest_step(), args=ocp.args.StandardRestore(state))
        logging.info("Resumed from the checkpoint at step %d.", int(state["step"]))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))

    batch_size = config.train.batch_size
    train_data = None if train_x is None else jnp.asarray(train_x)

    def loss_fn(params, step):
        key = jax.random.fold_in(data_rng, step)  # batches are a function of the step
        if density:
            idx = jax.random.randint(key, (batch_size,), 0, train_data.shape[0])
            return -jnp.mean(flow.apply(params, train_data[idx], method=flow.log_prob))
        x, log_q = flow.apply(params, key, batch_size, method=flow.sample_and_log_prob)
        return jnp.mean(log_q + inverse_temperature(step) * target_u(x))

    def inverse_temperature(step):
        # Annealing beta from 0.01 to 1 lets q spread over every mode before the target sharpens;
        # at beta = 1 from the start, reverse KL tends to lock onto one mode.
        if config.train.anneal_steps <= 0:
            return 1.0
        return jnp.minimum(1.0, 0.01 + step / config.train.anneal_steps)

    @jax.jit
    def train_step(state):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], state["step"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        return new_state, {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state["step"]),
        }

    writer = _summary_writer(workdir)
    start = int(state["step"])
    t0, last_step = time.time(), start
    with training.PreemptionNotice() as preemption:
        for step in range(start, config.train.steps):
            state, metrics = train_step(state)
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.steps:
                metrics = jax.device_get(metrics)
                if not np.isfinite(metrics["loss"]):
                    raise FloatingPointError(
                        f"Loss became {metrics['loss']} at step {done}; lower "
                        f"config.train.learning_rate (now {config.train.learning_rate})."
                    )
                rate = (done - last_step) / max(time.time() - t0, 1e-9)
                t0, last_step = time.time(), done
                for name, value in metrics.items():
                    writer.scalar(f"train/{name}", float(value), done)
                writer.scalar("train/steps_per_second", rate, done)
                logging.info(
                    "step %d/%d  loss %.4f  grad_norm %.3g  %.1f steps/s  eta %.0fs",
                    done,
                    config.train.steps,
                    metrics["loss"],
                    metrics["grad_norm"],
                    rate,
                    (config.train.steps - done) / max(rate, 1e-9),
                )
            stop = preemption.reached(done)
            if done % config.train.checkpoint_every == 0 or done == config.train.steps or stop:
                ckpt.save(done, args=ocp.args.StandardSave(state))
            if stop and done < config.train.steps:
                ckpt.wait_until_finished()
                ckpt.close()
                writer.flush()
                logging.warning(
                    "Preempted: saved step %d in %s; rerun the same command to resume.",
                    done,
                    workdir,
                )
                raise training.Preempted(done, workdir)
    final_step = int(state["step"])
    ckpt.wait_until_finished()

    params = state["params"]
    n_eval = config.eval.num_samples
    samples, log_q = jax.jit(
        lambda p: flow.apply(p, sample_rng, n_eval, method=flow.sample_and_log_prob)
    )(params)
    samples, log_q = np.asarray(samples), np.asarray(log_q)
    results: dict[str, Any] = {
        "variant": config.variant,
        "task": config.task,
        "flow": config.flow.layers,
        "steps": final_step,
    }
    if density:
        nll = -_batched_log_prob(flow, params, test_x)
        results.update(
            heldout_nll=float(np.mean(nll)),
            heldout_nll_stderr=float(np.std(nll) / math.sqrt(len(nll))),
            gaussian_heldout_nll=gaussian_baseline_nll(train_x, test_x),
            num_test=int(len(test_x)),
        )
        writer.scalar("eval/heldout_nll", results["heldout_nll"], final_step)
    else:
        log_z = toy2d.log_normalizer(config.energy.name)
        terms = log_q + np.asarray(target_u(jnp.asarray(samples))) + log_z
        results.update(
            kl=float(np.mean(terms)),
            kl_stderr=float(np.std(terms) / math.sqrt(n_eval)),
            log_normalizer=log_z,
            num_samples=n_eval,
        )
        writer.scalar("eval/kl", results["kl"], final_step)
    image = plot(
        flow,
        params,
        config,
        box,
        samples,
        train_x,
        target_u,
        bounded,
        os.path.join(workdir, "flows.png"),
    )
    writer.image("eval/flows", image, final_step)
    writer.flush()
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    logging.info("Results: %s", json.dumps(results))
    ckpt.close()
    return results


def _summary_writer(workdir: str):
    from flax.metrics import tensorboard  # imports TensorFlow; only the job needs it

    return tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))


def plot(flow, params, config, box, samples, train_x, target_u, bounded, path) -> np.ndarray:
    """Writes the three-panel figure to `path` and returns it as an RGB array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if bounded or train_x is None:
        lo, hi = box
    else:
        lo, hi = _data_box(train_x, 0.1)
    n = config.eval.grid_cells
    xs = lo[0] + (hi[0] - lo[0]) * (np.arange(n) + 0.5) / n
    ys = lo[1] + (hi[1] - lo[1]) * (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(xs, ys)
    grid = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    learned = np.exp(_batched_log_prob(flow, params, grid)).reshape(n, n)
    extent = (lo[0], hi[0], lo[1], hi[1])

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    if target_u is None:
        axes[0].hist2d(
            train_x[:, 0],
            train_x[:, 1],
            bins=n,
            range=[[lo[0], hi[0]], [lo[1], hi[1]]],
            cmap="viridis",
        )
        axes[0].set_title(f"data: {config.data.name}")
    else:
        target = np.exp(-np.asarray(target_u(jnp.asarray(grid)))).reshape(n, n)
        axes[0].imshow(target, origin="lower", extent=extent, cmap="viridis", aspect="auto")
        axes[0].set_title(f"target exp(-{config.energy.name})")
    axes[1].imshow(learned, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[1].set_title(f"learned density ({config.flow.layers})")
    axes[2].hist2d(
        samples[:, 0], samples[:, 1], bins=n, range=[[lo[0], hi[0]], [lo[1], hi[1]]], cmap="viridis"
    )
    axes[2].set_title("samples from the flow")
    for ax in axes:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    return image
