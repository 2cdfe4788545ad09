"""The benchmark's teacher scenarios in PyTorch, for a same-machine comparison.

Runs `teacher_train` and `teacher_generate` at batch 1 (see pwavenet/benchmark.py) with the
`WaveNet` of the `wavenet_vocoder` package (PyPI 0.1.1, the most used public PyTorch
WaveNet vocoder): 24 layers in 4 stacks, kernel 3, residual 64, gate 128 (split in two
halves, as here), skip 64, a 10-component mixture of logistics (30 outputs) scored on 65,536
bins, 80 mel bins upsampled by 4 x 4 x 4 x 4, no dropout; one Adam step on 2 x 7680 samples,
and its incremental (cached) sampling of 1,024 samples. Timing is this harness's: the median
of the timed runs after a warm-up one. Each is measured with the package's weight
normalization (its default) and without it.

Not a dependency of pwavenet and not run by the tests: it needs a separate environment with
a CPU build of torch (2.13 was used) and the package, e.g.
    python3 -m venv /tmp/torch-ref && /tmp/torch-ref/bin/pip install torch wavenet_vocoder==0.1.1
    /tmp/torch-ref/bin/python launch/pytorch_reference.py [teacher_train] [teacher_generate]
Run it beside `python -m launch.benchmark --scenario=teacher_train --scenario=teacher_generate`,
alternating, on an otherwise idle machine; BUILD.md has the figures.
"""

import os
import statistics
import sys
import time
import warnings


def _build(weight_norm: bool):
    from wavenet_vocoder import WaveNet

    return WaveNet(
        out_channels=30,
        layers=24,
        stacks=4,
        residual_channels=64,
        gate_channels=128,
        skip_out_channels=64,
        kernel_size=3,
        dropout=0.0,
        cin_channels=80,
        upsample_conditional_features=True,
        upsample_scales=[4, 4, 4, 4],
        scalar_input=True,
        weight_normalization=weight_norm,
    )


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def teacher_train(weight_norm: bool, repeats: int = 5) -> float:
    import torch
    from wavenet_vocoder.mixture import discretized_mix_logistic_loss

    model = _build(weight_norm).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 1, 7680) - 0.5
    mel = torch.randn(2, 80, 30) - 4.0

    def step():
        optimizer.zero_grad()
        out = model(x, mel)
        # Output t predicts sample t + 1, as the package's training script scores it.
        loss = discretized_mix_logistic_loss(
            out[:, :, :-1], x.transpose(1, 2)[:, 1:], num_classes=65536
        )
        loss.backward()
        optimizer.step()

    return x.numel() / _median_seconds(step, repeats)


def teacher_generate(weight_norm: bool, frames: int = 4, repeats: int = 2) -> float:
    import torch

    model = _build(weight_norm).eval()
    mel = torch.randn(1, 80, frames) - 4.0
    samples = frames * 256
    with torch.no_grad():
        seconds = _median_seconds(
            lambda: model.incremental_forward(c=mel, T=samples, softmax=False, quantize=False),
            repeats,
        )
    return samples / seconds


def main(argv) -> None:
    import torch

    warnings.filterwarnings("ignore")  # the package's deprecated torch calls
    torch.manual_seed(0)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    scenarios = {"teacher_train": teacher_train, "teacher_generate": teacher_generate}
    for name in argv or list(scenarios):
        if name not in scenarios:
            raise SystemExit(f"unknown scenario {name!r}; choose from {sorted(scenarios)}")
        for weight_norm in (True, False):
            rate = scenarios[name](weight_norm)
            label = name if name == "teacher_train" else f"{name}/b1"
            print(f"{label:24s} weight_norm={weight_norm!s:5s} {rate:>10,.0f} samples/s")


if __name__ == "__main__":
    main(sys.argv[1:])
