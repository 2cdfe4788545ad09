"""Smoke test of the benchmark harness: every scenario runs and reports finite numbers, and
the FLOP counts are at least the dilated convolutions' own multiply-adds (no timing asserts)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import speed as benchmark
from pwavenet.audio import excitation
from pwavenet.models import wavenet

# Multiply-adds of the 24 dilated convolutions alone (kernel 3, 64 -> 128 channels) per sample:
# a floor for the model's forward FLOPs that any correct count must exceed.
CONV_FLOPS_PER_SAMPLE = 24 * 2 * 3 * 64 * 128


@pytest.fixture(autouse=True)
def _cheap_parameters(monkeypatch):
    """The scenarios' parameters drawn here, not by the models' own initialisers: what these
    tests check (the scenarios run, their counts, finite figures) does not depend on the
    values, and a full-size student's initialisation compiles for 17 to 21 s on 2 cores (its
    192 truncated-normal draws), paid once for each of the two students. Kernels are N(0,
    1/fan_in), vectors zero, from one NumPy stream; `benchmark._init` itself is tested below
    against the model's own initialisation."""

    def init(model, seed, *inputs):
        example = benchmark.init_example(*inputs)
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), *example)["params"]
        rng = np.random.default_rng(seed)

        def draw(leaf):
            if len(leaf.shape) < 2:
                return jnp.zeros(leaf.shape, leaf.dtype)
            fan_in = math.prod(leaf.shape[:-1])
            values = rng.standard_normal(leaf.shape, dtype=np.float32) / math.sqrt(fan_in)
            return jnp.asarray(values, leaf.dtype)

        return jax.tree.map(draw, shapes)

    monkeypatch.setattr(benchmark, "_init", init)


def test_init_on_one_frame_equals_the_models_own_init_and_is_kept(monkeypatch):
    monkeypatch.undo()  # the real benchmark._init
    monkeypatch.setattr(benchmark, "_INIT_CACHE", {})
    model = wavenet.WaveNet(benchmark.teacher_model_config())
    x, mel = benchmark._teacher_inputs(2, 3)
    params = benchmark._init(model, 2, x, mel)
    expected = jax.jit(model.init)(jax.random.PRNGKey(2), x, mel)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(got, want)
    # Kept: another batch and length of the same shapes' example reuse it; another seed not.
    assert benchmark._init(model, 2, *benchmark._teacher_inputs(1, 5)) is params
    other = benchmark._init(model, 3, x, mel)
    assert other is not params
    assert not np.array_equal(other["output"]["kernel"], params["output"]["kernel"])


def _check(row):
    for value in (
        row.samples_per_second,
        row.gflops_per_second,
        row.matmul_gflops_per_second,
        row.peak_mib,
        row.matmul_ratio,
    ):
        assert math.isfinite(value) and value > 0, row


@pytest.mark.slow
def test_teacher_scenarios_run_and_count_every_layer():
    # The full-size models on short inputs: 2 x 1024 samples, 9 mel frames of generation.
    (train,) = benchmark.teacher_train(repeats=1, length=1024)
    _check(train)
    flops = train.gflops_per_second * 1e9 * train.seconds
    # Forward, backward (about twice the forward) over 2 x 1024 samples.
    assert train.samples_per_second * train.seconds == pytest.approx(2 * 1024)
    assert flops > 3 * CONV_FLOPS_PER_SAMPLE * 2 * 1024

    # Batch 2 only: batch 1 runs the same code, and each batch size compiles its own loop.
    rows = benchmark.teacher_generate(batch_sizes=(2,), repeats=1, audio_seconds=0.1)
    assert [r.scenario for r in rows] == ["teacher_generate/b2"]
    for batch, row in zip((2,), rows):
        _check(row)
        samples = row.samples_per_second * row.seconds
        assert samples == pytest.approx(batch * 9 * 256)
        assert row.gflops_per_second * 1e9 * row.seconds > CONV_FLOPS_PER_SAMPLE * samples


@pytest.mark.slow
def test_student_scenarios_run_and_count_every_flow():
    # The student's 60 dilated convolutions (kernel 3, 64 -> 128) per sample, forward.
    student_conv_flops = 60 * 2 * 3 * 64 * 128
    # The full-size models on short inputs: 2 x 1024 samples (the longest STFT window).
    (step,) = benchmark.distill_step(repeats=1, length=1024)
    _check(step)
    assert step.scenario == "distill_step"
    # The student's forward and backward alone exceed 3x its convolutions on 2 x 1024 samples.
    assert step.samples_per_second * step.seconds == pytest.approx(2 * 1024)
    assert step.gflops_per_second * 1e9 * step.seconds > 3 * student_conv_flops * 2 * 1024
    (gen,) = benchmark.student_generate(repeats=1, audio_seconds=0.1)
    _check(gen)
    samples = gen.samples_per_second * gen.seconds
    assert samples == pytest.approx(9 * 256)
    assert gen.gflops_per_second * 1e9 * gen.seconds > student_conv_flops * samples


def test_default_student_scenario_counts_its_synthesis_filter():
    """The README's default student: its order-320 all-pole filter alone costs a multiply-add
    per coefficient per sample, a floor for the counted FLOPs of the whole synthesis. With
    pulses, the pitch templates' correlation (a multiply-add per candidate, band and frame)
    comes on top."""
    gen, pulses = benchmark.default_student_generate(repeats=1, audio_seconds=0.1)
    assert (gen.scenario, pulses.scenario) == (
        "default_student_generate",
        "default_student_generate/pulses",
    )
    flops = {}
    for row in (gen, pulses):
        _check(row)
        samples = row.samples_per_second * row.seconds
        assert samples == pytest.approx(9 * 256)
        flops[row.scenario] = row.gflops_per_second * 1e9 * row.seconds
        assert flops[row.scenario] > 2 * 320 * samples
    templates = 9 * len(excitation.candidates()) * excitation.PITCH_BANDS * 2
    assert flops[pulses.scenario] - flops[gen.scenario] > templates


@pytest.mark.slow
def test_paper_scenario_runs_in_bfloat16_and_counts_every_layer():
    # The full-size models at short lengths: the distillation step on 1 x 1024 samples (the
    # longest STFT window) and synthesis of one mel frame.
    rows = benchmark.paper(
        distill_batch=1, length=1024, generate_batches=(1,), generate_seconds=0.01, repeats=1
    )
    assert [r.scenario for r in rows] == ["paper/distill_step/b1", "paper/student_generate/b1"]
    step, gen = rows
    for row in rows:
        _check(row)
        assert row.dtype == "bfloat16"
    # Student flows of 10 + 10 + 10 + 30 layers and the teacher's 30, all kernel 3 and
    # 64 -> 128: the student's forward and backward (3x its convolutions) and the teacher's
    # forward and backward to its input (2x) on 1024 samples are a floor for the step.
    conv = 2 * 3 * 64 * 128
    assert step.samples_per_second * step.seconds == pytest.approx(1024)
    assert step.gflops_per_second * 1e9 * step.seconds > (3 * 60 + 2 * 30) * conv * 1024
    assert gen.samples_per_second * gen.seconds == pytest.approx(256)
    assert gen.gflops_per_second * 1e9 * gen.seconds > 60 * conv * 256


def test_unknown_scenarios_are_named():
    with pytest.raises(ValueError, match="teacher_train"):
        benchmark.run(["no_such_scenario"])
