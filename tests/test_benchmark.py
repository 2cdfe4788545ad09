"""Smoke test of the benchmark harness: every scenario runs and reports finite numbers, and
the FLOP counts are at least the dilated convolutions' own multiply-adds (no timing asserts)."""

import math

import pytest

from pwavenet import benchmark

# Multiply-adds of the 24 dilated convolutions alone (kernel 3, 64 -> 128 channels) per sample:
# a floor for the model's forward FLOPs that any correct count must exceed.
CONV_FLOPS_PER_SAMPLE = 24 * 2 * 3 * 64 * 128


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
    (train,) = benchmark.teacher_train(repeats=1)
    _check(train)
    flops = train.gflops_per_second * 1e9 * train.seconds
    # Forward, backward (about twice the forward) over 2 x 7680 samples.
    assert flops > 3 * CONV_FLOPS_PER_SAMPLE * 2 * 7680

    # Batch 2 only: batch 1 runs the same code, and each batch size compiles its own loop.
    rows = benchmark.teacher_generate(batch_sizes=(2,), repeats=1)
    assert [r.scenario for r in rows] == ["teacher_generate/b2"]
    for batch, row in zip((2,), rows):
        _check(row)
        samples = row.samples_per_second * row.seconds
        assert samples == pytest.approx(batch * math.ceil(22050 / 256) * 256)  # >= 1 s of audio
        assert row.gflops_per_second * 1e9 * row.seconds > CONV_FLOPS_PER_SAMPLE * samples


@pytest.mark.slow
def test_student_scenarios_run_and_count_every_flow():
    # The student's 60 dilated convolutions (kernel 3, 64 -> 128) per sample, forward.
    student_conv_flops = 60 * 2 * 3 * 64 * 128
    (step,) = benchmark.distill_step(repeats=1)
    _check(step)
    assert step.scenario == "distill_step"
    # The student's forward and backward alone exceed 3x its convolutions on 2 x 7680 samples.
    assert step.gflops_per_second * 1e9 * step.seconds > 3 * student_conv_flops * 2 * 7680
    (gen,) = benchmark.student_generate(repeats=1)
    _check(gen)
    samples = gen.samples_per_second * gen.seconds
    assert samples == pytest.approx(math.ceil(22050 / 256) * 256)
    assert gen.gflops_per_second * 1e9 * gen.seconds > student_conv_flops * samples


def test_unknown_scenarios_are_named():
    with pytest.raises(ValueError, match="teacher_train"):
        benchmark.run(["no_such_scenario"])
