"""Speed benchmarks at fixed configurations (`python -m launch.benchmark`), comparable across versions and implementations.

Every scenario reports, in one process:

  samples/s       audio samples processed per second: median of `repeats` timed runs after a
                  warm-up (compile) run, each ended by `jax.block_until_ready`
  GFLOP/s         the scenario's model FLOPs over the median time. FLOPs come from XLA's cost
                  analysis of the lowered computation; XLA counts a loop body once, so the
                  model's cycle scan is unrolled for the count, and generation's time loop is
                  counted as one step's FLOPs times the number of steps
  dtype           the scenario's compute dtype (parameters and optimizer state stay float32)
  matmul GFLOP/s  this machine's matmul rate in that dtype (a large square product), measured
                  in the same run
  ratio           GFLOP/s over the matmul rate: how close the scenario runs to the hardware
  peak MiB        peak memory: the device's peak bytes in use where the backend reports it
                  (GPU, TPU), else the process's peak resident set (CPU); a process-wide
                  peak, so run a scenario alone to read its own

Scenarios (model shapes are fixed; do not change them, add new scenarios instead; the
functions' size arguments, lengths and batches, exist so that a test can run them short, and
their defaults are the scenarios):

  teacher_train     one optimizer step (forward, backward, Adam) of a WaveNet with 24 layers
                    in 4 cycles, kernel 3, residual 64, gate 128, skip 64, 10-component MoL,
                    80-bin mel upsampled by 256; batch 2 x 7680 samples
  teacher_generate  cached autoregressive sampling with that model, 1 s of audio at 22.05 kHz,
                    at batch 1 and batch 16
  distill_step      one optimizer step of distillation: a frozen Gaussian WaveNet teacher of
                    2 cycles x 10 layers, kernel 2, 64/128/64, and a Gaussian-base IAF student
                    of 6 flows x 10 layers, kernel 3, 64/128/64, sharing the teacher's frozen
                    upsampler; closed-form KL + regularizer + STFT magnitude loss (3
                    resolutions); batch 2 x 7680 samples
  student_generate  that student synthesizing 1 s of audio at batch 1 (one parallel pass)
  default_student_generate
                    the README's default student (configs/student.py:espeak: one flow of 4
                    layers, 8/16/8 channels, and the order-320 synthesis filter) vocoding 1 s
                    of one speaker's mel at batch 1 through iaf.sample; /pulses: the same
                    with model.excitation='pulses'
  paper             the Parallel WaveNet layout, for accelerators, in bfloat16: a frozen
                    10-component MoL teacher of 3 cycles x 10 layers, kernel 3, 64/128/64,
                    and a logistic-base student of flows of 10, 10, 10 and 30 layers, kernel 3,
                    64/128/64 (configs/*.py:ljspeech, imported from configs/); one distillation step (Monte Carlo
                    cross-entropy with 16 draws, analytic entropy, 3-resolution STFT loss) on
                    32 x 7680 samples, and the student synthesizing 1 s of audio at batch 1
                    and at batch 32
"""

from __future__ import annotations

import dataclasses
import functools
import math
import resource
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from configs import student as student_configs
from configs import teacher as teacher_configs
from pwavenet import distillation, training
from pwavenet.models import generation, iaf, wavenet
from pwavenet.training import timing

SAMPLE_RATE = 22050
HOP = 256
N_MELS = 80


@dataclasses.dataclass
class Row:
    scenario: str
    samples_per_second: float
    gflops_per_second: float
    matmul_gflops_per_second: float
    peak_mib: float
    seconds: float
    dtype: str = "float32"

    @property
    def matmul_ratio(self) -> float:
        return self.gflops_per_second / self.matmul_gflops_per_second


def teacher_model_config(scan_unroll: int = 1) -> ml_collections.ConfigDict:
    """The benchmark teacher: 4 cycles x 6 layers, kernel 3, 64/128/64, 10-MoL, 80 mels."""
    return ml_collections.ConfigDict(
        dict(
            output="mol",
            num_mixtures=10,
            log_scale_min=-9.0,
            num_cycles=4,
            layers_per_cycle=6,
            kernel_size=3,
            residual_channels=64,
            gate_channels=128,
            skip_channels=64,
            n_mels=N_MELS,
            upsample_strides=(16, 16),
            upsample_kernel_multiple=2,
            num_speakers=0,
            speaker_embedding_dim=16,
            dtype="float32",
            remat=False,
            scan_unroll=scan_unroll,
        )
    )


def model_flops(fn, *args) -> float:
    """FLOPs of fn(*args): XLA's cost analysis of the computation lowered for the CPU, whatever
    device runs it, so that the count is the model's arithmetic and the same on every
    backend. A GPU's analysis of its own compiled computation leaves out what runs in library
    calls (cuBLAS, cuDNN): on an H100 it counted 2.1 and 2.7 (two runs) of the paper
    student's 5.3 MFLOP per sample. The lowered (not yet optimized) computation is analysed
    where the backend can, which needs no compile; on a CPU it agrees with the compiled
    computation's count within 5%."""
    cpu = jax.devices("cpu")[0]
    return _cpu_flops(jax.jit(fn).lower(*jax.device_put(args, cpu)))


def _cpu_flops(lowered) -> float:
    analysis = lowered.cost_analysis() or lowered.compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def compile_and_count(fn, *args):
    """(fn compiled for args' device, `model_flops`): for a model already unrolled for
    counting, the one computation is both timed and counted."""
    lowered = jax.jit(fn).lower(*args)
    if jax.default_backend() == "cpu":
        return lowered.compile(), _cpu_flops(lowered)  # one lowering serves both
    return lowered.compile(), model_flops(fn, *args)


@functools.lru_cache(maxsize=None)
def matmul_gflops_per_second(dtype: str = "float32", n: int | None = None, repeats: int = 5):
    """This machine's matmul rate in `dtype`: an n x n by n x n product of random values,
    n = 2048 on a CPU and 8192 on an accelerator (large enough that launch overhead is
    negligible). XLA's default precision applies, as it does in the scenarios."""
    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(jnp.matmul)
    return 2 * n**3 / timing.median_seconds(lambda: matmul(a, b), repeats) / 1e9


def peak_mib() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _init(model, seed: int, *inputs):
    """The model's parameters from `jax.random.PRNGKey(seed)`, initialised in one compiled
    computation on one example of one mel frame (the shapes of the parameters do not depend
    on the batch or the length). Kept per model and seed: the benchmark student's
    initialisation compiles for about 16 s on a 2-core CPU (every parameter's random draw is
    its own code; op by op it takes as long), and distill_step and student_generate share it."""
    example = init_example(*inputs)
    key = (model, seed, tuple((a.shape, str(a.dtype)) for a in example))
    if key not in _INIT_CACHE:
        _INIT_CACHE[key] = jax.jit(model.init)(jax.random.PRNGKey(seed), *example)["params"]
    return _INIT_CACHE[key]


_INIT_CACHE: dict = {}


def init_example(*inputs):
    """The inputs the scenarios' parameters are initialised on: the first example of each,
    one mel frame of audio (B, T) and one frame of mel (B, frames, C)."""
    return tuple(a[:1, : (HOP if a.ndim == 2 else 1)] for a in inputs)


def _teacher_inputs(batch: int, frames: int):
    rng = jax.random.PRNGKey(0)
    x = jax.random.uniform(rng, (batch, frames * HOP), minval=-0.5, maxval=0.5)
    mel = jax.random.normal(jax.random.PRNGKey(1), (batch, frames, N_MELS)) - 4.0
    return x, mel


def training_microbatch() -> int | None:
    """Examples a training scenario's step takes at a time (`train.microbatch_size`): one on
    a CPU, where each operation's arrays then fit in the last-level cache (distill_step 1.2x,
    teacher_train 1.01x to 1.13x on 2 cores; BUILD.md), the whole batch on an accelerator."""
    return 1 if jax.default_backend() == "cpu" else None


def teacher_train(
    repeats: int = 5, length: int = 7680, microbatch_size: int | None = -1
) -> list[Row]:
    """One Adam step; `microbatch_size` -1 is `training_microbatch()`."""

    if microbatch_size == -1:
        microbatch_size = training_microbatch()
    model = wavenet.WaveNet(teacher_model_config())
    counted = wavenet.WaveNet(teacher_model_config(scan_unroll=4))
    x, mel = _teacher_inputs(2, length // HOP)
    params = _init(model, 2, x, mel)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    rngs = jax.random.split(jax.random.PRNGKey(5), x.shape[0])  # one per example; unused

    def make_step(m, microbatch):
        def loss_fn(p, batch, rngs):
            x, mel = batch
            out = m.apply({"params": p}, x, mel)
            return wavenet.negative_log_likelihood(out, x, m.distribution), {}

        value_and_grad = training.value_and_grad_in_microbatches(loss_fn, microbatch)

        def step(params, opt_state, x, mel):
            (loss, _), grads = value_and_grad(params, (x, mel), rngs)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return step

    step = jax.jit(make_step(model, microbatch_size))
    seconds = timing.median_seconds(lambda: step(params, opt_state, x, mel), repeats)
    # Counted whole: the microbatches' scan would be counted once.
    flops = model_flops(make_step(counted, None), params, opt_state, x, mel)
    return [_row("teacher_train", x.size, flops, seconds)]


def teacher_generate(
    batch_sizes=(1, 16), repeats: int = 3, audio_seconds: float = 1.0
) -> list[Row]:
    model = wavenet.WaveNet(teacher_model_config())
    counted = wavenet.WaveNet(teacher_model_config(scan_unroll=4))
    frames = math.ceil(audio_seconds * SAMPLE_RATE / HOP)
    rows = []
    for batch in batch_sizes:
        x, mel = _teacher_inputs(batch, frames)
        params = _init(model, 2, x, mel)
        # Not in a jit of its own: the batch spreads over the local devices (one per core on
        # a CPU, as launch.benchmark sets them up), and the sampler is compiled already.
        seconds = timing.median_seconds(
            lambda: generation.generate(model, params, jax.random.PRNGKey(3), mel=mel), repeats
        )
        # Model FLOPs, independent of how the loop is arranged: one step of the cached
        # network (all layers, conditioning projections included) and the draw from its
        # output, T times, plus the upsampling once per frame.
        state = counted.initial_state(batch)._replace(last=x[:, 0])
        dist = counted.distribution

        def one_step(p, state, mel_t, t, noise):
            v = {"params": p}
            terms = counted.apply(v, mel_t, None, method=counted.step_conditioning)
            out, state = counted.apply(v, state, t, cond_terms=terms, method=counted.step)
            return dist.sample_from_noise(out, noise), state

        step = model_flops(
            one_step,
            params,
            state,
            mel[:, 0],
            jnp.int32(0),
            dist.noise(jax.random.PRNGKey(0), (batch,)),
        )
        upsample = model_flops(
            lambda p, m: counted.apply({"params": p}, m, None, method=counted.conditioning)[0],
            params,
            mel[:, :1],
        )
        flops = step * frames * HOP + upsample * frames
        rows.append(_row(f"teacher_generate/b{batch}", batch * frames * HOP, flops, seconds))
    return rows


def _row(name: str, samples: int, flops: float, seconds: float, dtype: str = "float32") -> Row:
    return Row(
        scenario=name,
        samples_per_second=samples / seconds,
        gflops_per_second=flops / seconds / 1e9,
        matmul_gflops_per_second=matmul_gflops_per_second(dtype),
        peak_mib=peak_mib(),
        seconds=seconds,
        dtype=dtype,
    )


def distill_teacher_config(scan_unroll: int = 1) -> ml_collections.ConfigDict:
    c = teacher_model_config(scan_unroll)
    c.output = "gaussian"
    c.log_scale_min = -7.0
    c.num_cycles = 2
    c.layers_per_cycle = 10
    c.kernel_size = 2
    return c


def student_model_config(scan_unroll: int = 1) -> ml_collections.ConfigDict:
    """The benchmark student: the ClariNet layout of configs/student.py:clarinet (6
    Gaussian-base flows x 10 layers, kernel 3, 64/128/64)."""
    c = student_configs.get_config("clarinet").model
    c.scan_unroll = scan_unroll
    return c


def _distiller(student, teacher, kl: str = "closed_form", num_draws: int = 1):

    config = ml_collections.ConfigDict(
        dict(
            kl=kl,
            num_draws=num_draws,
            log_scale_min=-7.0,
            regularizer_weight=4.0,
            power_weight=1.0,
            stft_resolutions=((1024, 256, 1024), (512, 128, 512), (256, 64, 256)),
            contrastive_weight=0.0,
        )
    )
    return distillation.Distiller(
        student=student,
        teacher_dist=teacher.distribution,
        teacher_fn=lambda tp, x, b: teacher.apply({"params": tp}, x, b["mel"]),
        config=config,
        upsampler="frozen",
    )


def _distill_step_fn(student, teacher, tx, microbatch_size=None, **distiller_kwargs):

    distiller = _distiller(student, teacher, **distiller_kwargs)
    value_and_grad = training.value_and_grad_in_microbatches(
        lambda p, batch, rngs, teacher_params: distiller.losses(p, teacher_params, batch, rngs),
        microbatch_size,
    )

    def step(params, opt_state, teacher_params, batch, rngs):
        (loss, _), grads = value_and_grad(params, batch, rngs, teacher_params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def distill_step(
    repeats: int = 5, length: int = 7680, microbatch_size: int | None = -1
) -> list[Row]:
    """One Adam step of distillation; `microbatch_size` -1 is `training_microbatch()`."""

    if microbatch_size == -1:
        microbatch_size = training_microbatch()
    teacher = wavenet.WaveNet(distill_teacher_config())
    x, mel = _teacher_inputs(2, length // HOP)
    teacher_params = _init(teacher, 2, x, mel)
    tx = optax.adam(1e-3)

    student = iaf.IAFStudent(student_model_config())
    params = _init(student, 4, x, mel)
    params = dict(params, upsampler=teacher_params["upsampler"])
    opt_state = tx.init(params)
    batch = {"audio": x, "mel": mel}
    rngs = jax.random.split(jax.random.PRNGKey(5), 2)
    args = (params, opt_state, teacher_params, batch, rngs)
    # Each student flow is one cycle (nothing to unroll); the teacher's 2 cycles are unrolled,
    # so that one compiled step is both timed and counted, unless the step takes microbatches:
    # then the batch is counted whole in a second lowering (their scan would count once).
    counted = wavenet.WaveNet(distill_teacher_config(scan_unroll=2))
    if microbatch_size:
        step = jax.jit(_distill_step_fn(student, counted, tx, microbatch_size))
        flops = model_flops(_distill_step_fn(student, counted, tx), *args)
    else:
        step, flops = compile_and_count(_distill_step_fn(student, counted, tx), *args)
    seconds = timing.median_seconds(lambda: step(*args), repeats)
    return [_row("distill_step", x.size, flops, seconds)]


def student_generate(repeats: int = 5, audio_seconds: float = 1.0) -> list[Row]:

    student = iaf.IAFStudent(student_model_config())
    frames = math.ceil(audio_seconds * SAMPLE_RATE / HOP)
    x, mel = _teacher_inputs(1, frames)
    params = _init(student, 4, x, mel)

    def synth(params, mel):
        return iaf.sample(student, params, jax.random.PRNGKey(6), mel)

    compiled, flops = compile_and_count(synth, params, mel)
    seconds = timing.median_seconds(lambda: compiled(params, mel), repeats)
    return [_row("student_generate", x.size, flops, seconds)]


def default_student_generate(repeats: int = 5, audio_seconds: float = 1.0) -> list[Row]:
    """The README's default student (configs/student.py:espeak: one small flow and the
    order-320 synthesis filter) vocoding `audio_seconds` of one speaker's mel at batch 1 through
    `iaf.sample`, as evaluation and synthesis call it, and the same with
    model.excitation='pulses' (the pitch estimate and pulse train from the mel added). FLOPs
    count the whole synthesis as one program; the filter design is part of both."""
    rows = []
    for excitation in ("noise", "pulses"):
        config = student_configs.get_config("espeak")
        config.model.excitation = excitation
        student = iaf.IAFStudent(config.model)
        frames = math.ceil(audio_seconds * SAMPLE_RATE / HOP)
        x, mel = _teacher_inputs(1, frames)
        speaker = jnp.zeros((1,), jnp.int32)
        params = jax.jit(student.init)(jax.random.PRNGKey(4), x, mel, speaker)["params"]
        rng = jax.random.PRNGKey(6)

        def synth(params, mel, speaker, student=student, rng=rng):
            return iaf.sample(student, params, rng, mel, speaker)

        _, flops = compile_and_count(synth, params, mel, speaker)
        seconds = timing.median_seconds(lambda: synth(params, mel, speaker), repeats)
        name = "default_student_generate" + ("" if excitation == "noise" else "/pulses")
        rows.append(_row(name, x.size, flops, seconds))
    return rows


def paper_teacher_config(dtype: str = "bfloat16", scan_unroll: int = 1):
    """The Parallel WaveNet teacher: configs/teacher.py:ljspeech's model section."""
    c = teacher_configs.get_config("ljspeech").model
    c.dtype = dtype
    c.scan_unroll = scan_unroll
    return c


def paper_student_config(dtype: str = "bfloat16", scan_unroll: int = 1, remat: bool = False):
    """The Parallel WaveNet student: configs/student.py:ljspeech's model section."""
    c = student_configs.get_config("ljspeech").model
    c.dtype = dtype
    c.remat = remat
    c.scan_unroll = scan_unroll
    return c


def paper(
    distill_batch: int = 32,
    length: int = 7680,
    generate_batches=(1, 32),
    generate_seconds: float = 1.0,
    dtype: str = "bfloat16",
    remat: bool = False,
    repeats: int = 5,
) -> list[Row]:
    """The `paper` scenario (see the module docstring); the arguments exist so that a test can
    run it small on a CPU. Every cycle scan is unrolled, so the one compiled computation of
    each part is both timed and counted."""

    if length % HOP:
        raise ValueError(f"length={length} must be a multiple of the hop ({HOP})")
    teacher = wavenet.WaveNet(paper_teacher_config(dtype, scan_unroll=3))
    student = iaf.IAFStudent(paper_student_config(dtype, scan_unroll=3, remat=remat))
    x, mel = _teacher_inputs(distill_batch, length // HOP)
    teacher_params = _init(teacher, 2, x, mel)
    params = _init(student, 4, x, mel)
    params = dict(params, upsampler=teacher_params["upsampler"])
    tx = optax.adam(1e-3)
    args = (
        params,
        tx.init(params),
        teacher_params,
        {"audio": x, "mel": mel},
        jax.random.split(jax.random.PRNGKey(5), distill_batch),
    )
    step, flops = compile_and_count(
        _distill_step_fn(student, teacher, tx, kl="monte_carlo", num_draws=16), *args
    )
    seconds = timing.median_seconds(lambda: step(*args), repeats)
    rows = [_row(f"paper/distill_step/b{distill_batch}", x.size, flops, seconds, dtype)]

    frames = math.ceil(generate_seconds * SAMPLE_RATE / HOP)
    for batch in generate_batches:
        _, mel = _teacher_inputs(batch, frames)

        def synth(params, mel):
            return iaf.sample(student, params, jax.random.PRNGKey(6), mel)

        compiled, flops = compile_and_count(synth, params, mel)
        seconds = timing.median_seconds(lambda: compiled(params, mel), repeats)
        rows.append(
            _row(f"paper/student_generate/b{batch}", batch * frames * HOP, flops, seconds, dtype)
        )
    return rows


SCENARIOS: dict[str, Callable[[], list[Row]]] = {
    "teacher_train": teacher_train,
    "teacher_generate": teacher_generate,
    "distill_step": distill_step,
    "student_generate": student_generate,
    "default_student_generate": default_student_generate,
    "paper": paper,
}


def default_scenarios() -> list[str]:
    """Every scenario, but `paper` only on an accelerator: on a CPU its batch-32 distillation
    step would take minutes per repetition and most of a small machine's memory."""
    on_cpu = jax.default_backend() == "cpu"
    return [name for name in SCENARIOS if not (on_cpu and name == "paper")]


def run(names=None) -> list[Row]:
    names = list(names or default_scenarios())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"Unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}.")
    rows: list[Row] = []
    for name in names:
        rows.extend(SCENARIOS[name]())
    return rows


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<28} {'samples/s':>13} {'GFLOP/s':>9} {'dtype':>9} {'matmul GFLOP/s':>15} "
        f"{'ratio':>6} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.scenario:<28} {r.samples_per_second:>13,.0f} {r.gflops_per_second:>9.1f} "
            f"{r.dtype:>9} {r.matmul_gflops_per_second:>15.1f} {r.matmul_ratio:>6.2f} "
            f"{r.peak_mib:>9.0f}"
        )
    return "\n".join(lines)
