"""The flows job: fit a flow to 2-D data (maximum likelihood) or to an energy (reverse KL), on
the shared trainer (`training.fit`).

Losses, per batch:
  density  -E_data[log p(x)]              log p through every layer's inverse
  energy   E_q[log q(x) + beta U(x)]      forward pass only; at beta = 1 it is KL(q || p) - log Z
                                         (beta rises linearly from 0.01 to 1 over
                                         config.train.anneal_steps, then stays at 1)

Batches are functions of the step, so a resumed run recomputes lost steps exactly:
  density  {"x": (batch, 2)}   training points drawn with replacement by a NumPy generator
                               seeded with (config.seed, step)
  energy   {"step": (batch,)}  the step, once per example (it sets beta); each example's base
                               sample comes from the shared step's per-example key

Writes to the workdir what every job on the shared trainer writes (orbax checkpoints, resumed
automatically, SIGTERM saving the step being trained and exiting with code 0; `config.json`;
TensorBoard summaries under `tensorboard/`), and then `flows.png` (data vs learned density vs
samples, or target vs fitted vs samples) and `results.json` (held-out NLL in nats per point with
the best single Gaussian's for reference, or the KL estimate with its standard error). Both
evaluate the EMA weights of the last checkpoint; train.ema_decay = 0, the default, makes them the
last step's weights.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
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


@dataclasses.dataclass
class Problem:
    """What the flow is fitted to: held-out and training data (density) or an energy U
    (reverse KL), with the box a sigmoid-terminated chain maps onto."""

    box: tuple[np.ndarray, np.ndarray]
    bounded: bool  # the chain ends in a sigmoid
    train_x: np.ndarray | None = None
    test_x: np.ndarray | None = None
    energy: Callable[[jax.Array], jax.Array] | None = None

    @property
    def density(self) -> bool:
        return self.energy is None


def make_problem(config: ml_collections.ConfigDict) -> Problem:
    """The data (config.task='density') or the energy ('energy') and its box."""
    bounded = config.flow.layers.rstrip().endswith("sigmoid")
    if config.task == "energy":
        window = np.full(2, toy2d.WINDOW, np.float32)
        return Problem((-window, window), bounded, energy=toy2d.energy(config.energy.name))
    if config.task != "density":
        raise ValueError(f"config.task={config.task!r}: use 'density' or 'energy'.")
    train_x = toy2d.sample_dataset(config.data.name, config.data.num_train, config.seed)
    test_x = toy2d.sample_dataset(config.data.name, config.data.num_test, config.seed + 1)
    box = _data_box(train_x, config.flow.box_margin)
    if bounded and not _inside(test_x, box):
        raise ValueError(
            "Held-out points fall outside the sigmoid chain's box "
            f"[{box[0]}, {box[1]}]; raise config.flow.box_margin (now {config.flow.box_margin})."
        )
    return Problem(box, bounded, train_x, test_x)


def _host_rows(batch_size: int) -> slice:
    """This process's rows of a global batch (the shared loop takes each host's part)."""
    per_host = batch_size // jax.process_count()
    return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def density_batches(config: ml_collections.ConfigDict, train_x: np.ndarray):
    """start -> the batches of steps start, start + 1, ...: training points drawn with
    replacement, each step's by a generator seeded with (config.seed, step)."""
    rows = _host_rows(config.train.batch_size)

    def from_step(start: int):
        for step in itertools.count(start):
            rng = np.random.default_rng([config.seed, step])
            index = rng.integers(0, len(train_x), config.train.batch_size)[rows]
            yield {"x": train_x[index]}

    return from_step


def energy_batches(config: ml_collections.ConfigDict):
    """start -> the batches of steps start, start + 1, ...: the step, once per example."""
    rows = _host_rows(config.train.batch_size)
    size = rows.stop - rows.start
    return lambda start: (
        {"step": np.full(size, step, np.int32)} for step in itertools.count(start)
    )


def inverse_temperature(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """beta at `step`: 0.01 rising linearly to 1 over config.train.anneal_steps (0: always 1).

    Annealing lets q spread over every mode before the target sharpens; at beta = 1 from the
    start, reverse KL tends to lock onto one mode."""
    if config.train.anneal_steps <= 0:
        return jnp.ones(jnp.shape(step))
    return jnp.minimum(1.0, 0.01 + step / config.train.anneal_steps)


def make_job(config: ml_collections.ConfigDict, flow: flows.Flow, problem: Problem) -> training.Job:
    """The flow's init, loss and batches for `training.fit`."""
    centre = jnp.asarray((problem.box[0] + problem.box[1]) / 2)[None]

    def density_loss(params, batch, rngs):
        del rngs  # the batch is the randomness
        return -jnp.mean(flow.apply(params, batch["x"], method=flow.log_prob)), {}

    def energy_loss(params, batch, rngs):
        def draw(rng):  # one example: a base sample from its own key, pushed forward
            x, log_q = flow.apply(params, rng, 1, method=flow.sample_and_log_prob)
            return x[0], log_q[0]

        x, log_q = jax.vmap(draw)(rngs)
        beta = inverse_temperature(config, batch["step"])
        loss = jnp.mean(log_q + beta * problem.energy(x))
        return loss, {"inverse_temperature": jnp.mean(beta)}

    return training.Job(
        init_params=lambda rng: flow.init(rng, centre),
        loss_fn=density_loss if problem.density else energy_loss,
        train_batches=(
            density_batches(config, problem.train_x) if problem.density else energy_batches(config)
        ),
    )


def final_params(config: ml_collections.ConfigDict, workdir: str, job: training.Job):
    """(params, step): the EMA weights of the workdir's latest checkpoint, or, before the first
    one (train.steps = 0), the weights `training.fit` initialises."""
    try:
        return training.restore_params(workdir, ema=True)
    except FileNotFoundError:
        init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as training.fit
        return jax.jit(job.init_params)(init_rng), 0


def evaluate(config: ml_collections.ConfigDict, flow: flows.Flow, params, problem: Problem):
    """(metrics, samples): held-out NLL against the best single Gaussian's (density), or the
    Monte Carlo KL(q || p) with log Z by quadrature (energy), and config.eval.num_samples draws
    from the flow."""
    n = config.eval.num_samples
    rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)[2]
    samples, log_q = jax.jit(lambda p: flow.apply(p, rng, n, method=flow.sample_and_log_prob))(
        params
    )
    samples, log_q = np.asarray(samples), np.asarray(log_q)
    if problem.density:
        nll = -_batched_log_prob(flow, params, problem.test_x)
        metrics = dict(
            heldout_nll=float(np.mean(nll)),
            heldout_nll_stderr=float(np.std(nll) / math.sqrt(len(nll))),
            gaussian_heldout_nll=gaussian_baseline_nll(problem.train_x, problem.test_x),
            num_test=int(len(problem.test_x)),
        )
        return metrics, samples
    log_z = toy2d.log_normalizer(config.energy.name)
    terms = log_q + np.asarray(problem.energy(jnp.asarray(samples))) + log_z
    metrics = dict(
        kl=float(np.mean(terms)),
        kl_stderr=float(np.std(terms) / math.sqrt(n)),
        log_normalizer=log_z,
        num_samples=n,
    )
    return metrics, samples


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the job described by `config` in `workdir`; returns the final results dict.
    Refused (training.WorkdirInUse) while another job trains in `workdir`."""
    with training.workdir_lock(workdir):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    problem = make_problem(config)
    flow = build_flow(config, problem.box)
    training.check_workdir_config(config, workdir, sections=("flow",))
    job = make_job(config, flow, problem)
    training.fit(config, workdir, job)

    params, step = final_params(config, workdir, job)
    metrics, samples = evaluate(config, flow, params, problem)
    results = {
        "variant": config.variant,
        "task": config.task,
        "flow": config.flow.layers,
        "steps": int(step),
        **metrics,
    }
    writer = training.Writer(workdir)
    name = "heldout_nll" if problem.density else "kl"
    writer.scalars(step, {name: results[name]}, "eval/")
    if jax.process_index() == 0:
        image = plot(flow, params, config, problem, samples, os.path.join(workdir, "flows.png"))
        writer.image(step, "eval/flows", image)
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    writer.flush()
    logging.info("Results: %s", json.dumps(results))
    return results


def plot(flow, params, config, problem: Problem, samples, path) -> np.ndarray:
    """Writes the three-panel figure to `path` and returns it as an RGB array."""
    import matplotlib  # only the job's figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if problem.bounded or not problem.density:
        lo, hi = problem.box
    else:
        lo, hi = _data_box(problem.train_x, 0.1)
    n = config.eval.grid_cells
    xs = lo[0] + (hi[0] - lo[0]) * (np.arange(n) + 0.5) / n
    ys = lo[1] + (hi[1] - lo[1]) * (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(xs, ys)
    grid = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    learned = np.exp(_batched_log_prob(flow, params, grid)).reshape(n, n)
    extent = (lo[0], hi[0], lo[1], hi[1])
    window = [[lo[0], hi[0]], [lo[1], hi[1]]]

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    if problem.density:
        train_x = problem.train_x
        axes[0].hist2d(train_x[:, 0], train_x[:, 1], bins=n, range=window, cmap="viridis")
        axes[0].set_title(f"data: {config.data.name}")
    else:
        target = np.exp(-np.asarray(problem.energy(jnp.asarray(grid)))).reshape(n, n)
        axes[0].imshow(target, origin="lower", extent=extent, cmap="viridis", aspect="auto")
        axes[0].set_title(f"target exp(-{config.energy.name})")
    axes[1].imshow(learned, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[1].set_title(f"learned density ({config.flow.layers})")
    axes[2].hist2d(samples[:, 0], samples[:, 1], bins=n, range=window, cmap="viridis")
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
