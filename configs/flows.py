"""Flow-toolkit jobs: `python -m launch.flows --config=configs/flows.py:<variant> --workdir=DIR`.

Variants
  moons, rings, gmm, checkerboard   maximum-likelihood density estimation on 2-D data
  U1, U2, U3, U4                    reverse-KL fitting of the planar-flow paper's energies
  tiny                              a few steps of moons, for tests

`flow.layers` chooses the flow: comma-separated layers applied to the base sample in order,
`name*K` repeating one K times. Names: planar, affine, elementwise, sigmoid. A chain ending in
`sigmoid` models a bounded box (the data's range padded by `flow.box_margin`, or the energy's
window), which the job appends as a fixed ElementwiseAffine. Examples:
  --config.flow.layers='planar*32'                     (Rezende and Mohamed's planar flow)
  --config.flow.layers='affine,sigmoid'                (an affine+sigmoid stack)
  --config.flow.layers='affine,planar*16,affine,sigmoid'   (mixed)
"""

import ml_collections

_DENSITY = ("moons", "rings", "gmm", "checkerboard")
_ENERGY = ("U1", "U2", "U3", "U4")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "moons"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0

    c.task = "density"  # density | energy
    c.data = ml_collections.ConfigDict()
    c.data.name = "moons"
    c.data.num_train = 20_000
    c.data.num_test = 5_000
    c.energy = ml_collections.ConfigDict()
    c.energy.name = "U1"

    c.flow = ml_collections.ConfigDict()
    c.flow.layers = "affine,planar*32"
    c.flow.learnable_base = True
    c.flow.box_margin = 0.25  # fraction of the data range added on each side of the box

    c.train = ml_collections.ConfigDict()
    c.train.steps = 4000
    c.train.batch_size = 512
    c.train.learning_rate = 1e-2
    c.train.warmup_steps = 100
    c.train.decay_steps = 0  # length of the warmup + cosine schedule; 0: train.steps
    c.train.anneal_steps = 0  # energy task: steps over which beta in E[log q + beta U] reaches 1
    c.train.grad_clip = 10.0
    c.train.end_learning_rate_fraction = 0.01  # cosine decay to this fraction of the peak
    # Weights averaged after each step: ema = decay * ema + (1 - decay) * params; the results
    # and the figure are the EMA weights', so 0 makes them the last step's weights.
    c.train.ema_decay = 0.0
    c.train.max_skipped_in_a_row = 10  # non-finite steps in a row (each skipped) before a stop
    c.train.log_every = 200
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 2

    c.eval = ml_collections.ConfigDict()
    c.eval.num_samples = 20_000  # Monte Carlo samples for the KL estimate and the sample plot
    c.eval.grid_cells = 200  # density image resolution per axis

    if variant in _DENSITY:
        c.data.name = variant
        if variant == "checkerboard":
            # Sharp, bounded support: a sigmoid-terminated (box) mixed chain fits its edges.
            c.flow.layers = "affine,planar*24,affine,sigmoid"
            c.flow.box_margin = 0.02
    elif variant in _ENERGY:
        c.task = "energy"
        c.energy.name = variant
        c.flow.layers = "planar*32"
        c.flow.learnable_base = False
        c.train.learning_rate = 5e-3
        c.train.anneal_steps = 2000
    elif variant == "tiny":
        c.data.num_train = 2_000
        c.data.num_test = 1_000
        c.flow.layers = "affine,planar*4"
        c.train.steps = 40
        c.train.batch_size = 128
        c.train.warmup_steps = 5
        c.train.log_every = 10
        c.train.checkpoint_every = 20
        c.eval.num_samples = 2_000
        c.eval.grid_cells = 40
    else:
        raise ValueError(
            f"Unknown variant {variant!r} of configs/flows.py; use one of "
            f"{', '.join(_DENSITY + _ENERGY + ('tiny',))}."
        )
    return c
