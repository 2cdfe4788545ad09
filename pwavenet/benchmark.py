"""Speed benchmarks at fixed configurations, comparable across versions and implementations.

Every scenario reports, in one process:

  samples/s       audio samples processed per second: median of `repeats` timed runs after a
                  warm-up (compile) run, each ended by `jax.block_until_ready`
  GFLOP/s         the scenario's model FLOPs over the median time. FLOPs come from XLA's cost
                  analysis of the compiled computation; XLA counts a loop body once, so the
                  model's cycle scan is unrolled for the count, and generation's time loop is
                  counted as one step's FLOPs times the number of steps
  matmul GFLOP/s  this machine's float32 matmul rate, measured in the same run
  ratio           GFLOP/s over the matmul rate: how close the scenario runs to the hardware
  peak MiB        peak memory: the device's peak bytes in use where the backend reports it
                  (GPU, TPU), else the process's peak resident set (CPU)

Scenarios (model shapes are fixed; do not change them, add new scenarios instead):

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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import resource
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from pwavenet import wavenet

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


def time_median(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs after one warm-up run."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compiled_flops(fn, *args) -> float:
    return compile_and_count(fn, *args)[1]


def compile_and_count(fn, *args):
    """(the compiled computation, its FLOPs from XLA's cost analysis): one compile serves both
    the timing and the count when the model is already unrolled for counting."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0]
    return compiled, float(analysis.get("flops", float("nan")))


@functools.lru_cache(maxsize=1)
def matmul_gflops_per_second(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (an n x n by n x n product)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return 2 * n**3 / time_median(lambda: matmul(a, b), repeats) / 1e9


def peak_mib() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _teacher_inputs(batch: int, frames: int):
    rng = jax.random.PRNGKey(0)
    x = jax.random.uniform(rng, (batch, frames * HOP), minval=-0.5, maxval=0.5)
    mel = jax.random.normal(jax.random.PRNGKey(1), (batch, frames, N_MELS)) - 4.0
    return x, mel


def teacher_train(repeats: int = 5) -> list[Row]:
    model = wavenet.WaveNet(teacher_model_config())
    counted = wavenet.WaveNet(teacher_model_config(scan_unroll=4))
    x, mel = _teacher_inputs(2, 7680 // HOP)
    params = model.init(jax.random.PRNGKey(2), x, mel)["params"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def make_step(m):
        def step(params, opt_state, x, mel):
            def loss_fn(p):
                out = m.apply({"params": p}, x, mel)
                return wavenet.negative_log_likelihood(out, x, m.distribution)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        return step

    step = jax.jit(make_step(model))
    seconds = time_median(lambda: step(params, opt_state, x, mel), repeats)
    flops = compiled_flops(make_step(counted), params, opt_state, x, mel)
    return [_row("teacher_train", x.size, flops, seconds)]


def teacher_generate(batch_sizes=(1, 16), repeats: int = 3) -> list[Row]:
    model = wavenet.WaveNet(teacher_model_config())
    counted = wavenet.WaveNet(teacher_model_config(scan_unroll=4))
    frames = math.ceil(SAMPLE_RATE / HOP)  # 1 s of audio
    rows = []
    for batch in batch_sizes:
        x, mel = _teacher_inputs(batch, frames)
        params = model.init(jax.random.PRNGKey(2), x[:, :HOP], mel[:, :1])["params"]
        gen = jax.jit(lambda p, m: wavenet.generate(model, p, jax.random.PRNGKey(3), mel=m))
        seconds = time_median(lambda: gen(params, mel), repeats)
        # Model FLOPs, independent of how the loop is arranged: one step of the cached
        # network (all layers, conditioning projections included) and the draw from its
        # output, T times, plus the upsampling once per frame.
        cache = wavenet._zero_cache(counted.config, batch)
        dist = counted.distribution

        def one_step(p, cache, x_prev, mel_t, t, noise):
            out, cache = counted.apply(
                {"params": p}, cache, x_prev, mel_t, None, t, method=counted.step
            )
            return dist.sample_from_noise(out, noise), cache

        step = compiled_flops(
            one_step,
            params,
            cache,
            x[:, 0],
            mel[:, 0],
            jnp.int32(0),
            dist.noise(jax.random.PRNGKey(0), (batch,)),
        )
        upsample = compiled_flops(
            lambda p, m: counted.apply({"params": p}, m, None, method=counted.conditioning)[0],
            params,
            mel[:, :1],
        )
        flops = step * frames * HOP + upsample * frames
        rows.append(_row(f"teacher_generate/b{batch}", batch * frames * HOP, flops, seconds))
    return rows


def _row(name: str, samples: int, flops: float, seconds: float) -> Row:
    return Row(
        scenario=name,
        samples_per_second=samples / seconds,
        gflops_per_second=flops / seconds / 1e9,
        matmul_gflops_per_second=matmul_gflops_per_second(),
        peak_mib=peak_mib(),
        seconds=seconds,
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
    """The benchmark student: 6 Gaussian-base flows x 10 layers, kernel 3, 64/128/64."""
    return ml_collections.ConfigDict(
        dict(
            base="gaussian",
            flow_layers=(10,) * 6,
            layers_per_cycle=10,
            kernel_size=3,
            residual_channels=64,
            gate_channels=128,
            skip_channels=64,
            n_mels=N_MELS,
            upsample_strides=(16, 16),
            upsample_kernel_multiple=2,
            cond_channels=0,
            num_speakers=0,
            speaker_embedding_dim=16,
            init_log_scale=-3.0,
            flow_log_scale_min=-7.0,
            flow_log_scale_max=3.0,
            output_init_scale=0.01,
            dtype="float32",
            remat=False,
            scan_unroll=scan_unroll,
        )
    )


def _distiller(student, teacher):
    from pwavenet import distill

    config = ml_collections.ConfigDict(
        dict(
            kl="closed_form",
            num_draws=1,
            log_scale_min=-7.0,
            regularizer_weight=4.0,
            power_weight=1.0,
            stft_resolutions=((1024, 256, 1024), (512, 128, 512), (256, 64, 256)),
            contrastive_weight=0.0,
        )
    )
    return distill.Distiller(
        student=student,
        teacher_dist=teacher.distribution,
        teacher_fn=lambda tp, x, b: teacher.apply({"params": tp}, x, b["mel"]),
        config=config,
        upsampler="frozen",
    )


def distill_step(repeats: int = 5) -> list[Row]:
    from pwavenet import iaf

    teacher = wavenet.WaveNet(distill_teacher_config())
    x, mel = _teacher_inputs(2, 7680 // HOP)
    teacher_params = teacher.init(jax.random.PRNGKey(2), x, mel)["params"]
    tx = optax.adam(1e-3)

    def make_step(student, teacher):
        distiller = _distiller(student, teacher)

        def step(params, opt_state, teacher_params, batch, rngs):
            grads, metrics = jax.grad(
                lambda p: distiller.losses(p, teacher_params, batch, rngs), has_aux=True
            )(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, metrics["loss"]

        return step

    student = iaf.IAFStudent(student_model_config())
    params = student.init(jax.random.PRNGKey(4), x, mel)["params"]
    params = dict(params, upsampler=teacher_params["upsampler"])
    opt_state = tx.init(params)
    batch = {"audio": x, "mel": mel}
    rngs = jax.random.split(jax.random.PRNGKey(5), 2)
    args = (params, opt_state, teacher_params, batch, rngs)
    # Each student flow is one cycle (nothing to unroll); the teacher's 2 cycles are unrolled
    # so the one compiled step is both timed and counted.
    step, flops = compile_and_count(
        make_step(student, wavenet.WaveNet(distill_teacher_config(scan_unroll=2))), *args
    )
    seconds = time_median(lambda: step(*args), repeats)
    return [_row("distill_step", x.size, flops, seconds)]


def student_generate(repeats: int = 5) -> list[Row]:
    from pwavenet import iaf

    student = iaf.IAFStudent(student_model_config())
    frames = math.ceil(SAMPLE_RATE / HOP)
    x, mel = _teacher_inputs(1, frames)
    params = student.init(jax.random.PRNGKey(4), x, mel)["params"]

    def synth(params, mel):
        return iaf.sample(student, params, jax.random.PRNGKey(6), mel)

    compiled, flops = compile_and_count(synth, params, mel)
    seconds = time_median(lambda: compiled(params, mel), repeats)
    return [_row("student_generate", x.size, flops, seconds)]


SCENARIOS: dict[str, Callable[[], list[Row]]] = {
    "teacher_train": teacher_train,
    "teacher_generate": teacher_generate,
    "distill_step": distill_step,
    "student_generate": student_generate,
}


def run(names=None) -> list[Row]:
    names = list(names or SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"Unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}.")
    rows: list[Row] = []
    for name in names:
        rows.extend(SCENARIOS[name]())
    return rows


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<22} {'samples/s':>12} {'GFLOP/s':>9} {'matmul GFLOP/s':>15} "
        f"{'ratio':>6} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.scenario:<22} {r.samples_per_second:>12,.0f} {r.gflops_per_second:>9.1f} "
            f"{r.matmul_gflops_per_second:>15.1f} {r.matmul_ratio:>6.2f} {r.peak_mib:>9.0f}"
        )
    return "\n".join(lines)
