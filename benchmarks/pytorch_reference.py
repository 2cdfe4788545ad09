"""The benchmark's CPU scenarios in PyTorch, for a same-machine comparison.

Every network here is the `WaveNet` of the `wavenet_vocoder` package (PyPI 0.1.1, the most
used public PyTorch WaveNet vocoder), at the configurations of benchmarks/speed.py:

  teacher_train     24 layers in 4 stacks, kernel 3, residual 64, gate 128 (split in two
                    halves, as here), skip 64, a 10-component mixture of logistics (30
                    outputs) scored on 65,536 bins, 80 mel bins upsampled by 4 x 4 x 4 x 4, no
                    dropout; one Adam step on 2 x 7680 samples
  teacher_generate  that model's incremental (cached) sampling of 1,024 samples at batch 1
  distill_step      a frozen Gaussian teacher (the package's WaveNet: 2 stacks x 10 layers,
                    kernel 2, 64/128/64, 2 outputs, mel upsampled by 16 x 16) and a Gaussian
                    IAF student of 6 flows, each the package's WaveNet of 10 layers, kernel 3,
                    64/128/64, with 2 outputs (shift and log-scale) and the teacher's
                    upsampled mel; closed-form KL + 4 x the log-scale regularizer + the
                    3-resolution STFT magnitude loss; one Adam step of the student on 2 x 7680
                    samples. The package has no student: the flows are composed here as
                    pwavenet.models.iaf composes them (ClariNet's layout), from the package's layers
  student_generate  that student synthesizing 87 frames (22,272 samples) at batch 1

Timing is this harness's: the median of the timed runs after a warm-up one. Each scenario is
measured with the package's weight normalization (its default) and without it.

Not a dependency of pwavenet and not run by the tests: it needs a separate environment with
a CPU build of torch (2.13 was used) and the package, e.g.
    python3 -m venv /tmp/torch-ref && /tmp/torch-ref/bin/pip install torch wavenet_vocoder==0.1.1
    /tmp/torch-ref/bin/python benchmarks/pytorch_reference.py [SCENARIO ...]
Run it beside `python -m launch.benchmark --scenario=...` with the same scenarios,
alternating, on an otherwise idle machine; docs/benchmarks.md has the figures.
"""

import os
import statistics
import sys
import time
import warnings


def _package_wavenet(weight_norm: bool, **shape):
    """The package's WaveNet on scalar audio with 80 mel bins, channels 64/128/64 and no
    dropout, as every network of the scenarios has; `shape` gives the rest."""
    from wavenet_vocoder import WaveNet

    return WaveNet(
        residual_channels=64,
        gate_channels=128,
        skip_out_channels=64,
        dropout=0.0,
        cin_channels=80,
        scalar_input=True,
        weight_normalization=weight_norm,
        **shape,
    )


def _build(weight_norm: bool):
    return _package_wavenet(
        weight_norm,
        out_channels=30,
        layers=24,
        stacks=4,
        kernel_size=3,
        upsample_conditional_features=True,
        upsample_scales=[4, 4, 4, 4],
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


def _distill_teacher(weight_norm: bool):
    return _package_wavenet(
        weight_norm,
        out_channels=2,
        layers=20,
        stacks=2,
        kernel_size=2,
        upsample_conditional_features=True,
        upsample_scales=[16, 16],
    )


def _upsampled(teacher, mel):
    """The teacher's upsampling of mel (B, 80, frames) to (B, 80, frames * 256), as its own
    forward pass computes it."""
    c = mel.unsqueeze(1)
    for f in teacher.upsample_conv:
        c = f(c)
    return c.squeeze(1)


def _shifted(x):
    """x (B, 1, T) moved one step later, x_{-1} = 0: output t of a causal network then
    sees x_<t only."""
    import torch.nn.functional as F

    return F.pad(x, (1, 0))[..., :-1]


def _student(weight_norm: bool, flows: int = 6, init_log_scale: float = -3.0):
    """The benchmark student: `flows` inverse autoregressive flows, each the package's
    WaveNet of 10 layers (kernel 3, 64/128/64) emitting a shift and a raw log-scale per step
    from its shifted input and the upsampled mel; log-scales smoothly clamped to (-7, 3) and
    offset by init_log_scale / flows, each flow's output layer started 100 times smaller
    (pwavenet.models.iaf's parametrization)."""
    import torch
    import torch.nn.functional as F

    class Student(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flows = torch.nn.ModuleList(
                _package_wavenet(
                    weight_norm,
                    out_channels=2,
                    layers=10,
                    stacks=1,
                    kernel_size=3,
                    upsample_conditional_features=False,
                )
                for _ in range(flows)
            )
            with torch.no_grad():
                for flow in self.flows:
                    last = flow.last_conv_layers[-1]
                    getattr(last, "weight_g", last.weight).mul_(0.01)

        def forward(self, z, c):
            x, mu_tot, log_s_tot = z, torch.zeros_like(z), torch.zeros_like(z)
            lo, hi = -7.0, 3.0
            for flow in self.flows:
                out = flow(_shifted(x), c)
                mu, raw = out[:, :1], out[:, 1:] + init_log_scale / flows
                log_s = lo + F.softplus(raw - lo) - F.softplus(raw - hi)
                scale = torch.exp(log_s)
                x = x * scale + mu
                mu_tot = mu_tot * scale + mu
                log_s_tot = log_s_tot + log_s
            return x, mu_tot, log_s_tot

    return Student()


def _stft_magnitude(x, n_fft: int, hop: int, win_length: int):
    import torch

    spectrum = torch.stft(
        x,
        n_fft,
        hop_length=hop,
        win_length=win_length,
        window=torch.hann_window(win_length, periodic=True),
        center=False,
        return_complex=True,
    )
    return torch.sqrt(spectrum.real.square() + spectrum.imag.square() + 1e-9)


def distill_step(weight_norm: bool, repeats: int = 5) -> float:
    import torch

    teacher = _distill_teacher(weight_norm).eval().requires_grad_(False)
    student = _student(weight_norm).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    audio = torch.rand(2, 7680) - 0.5
    mel = torch.randn(2, 80, 30) - 4.0
    resolutions = ((1024, 256, 1024), (512, 128, 512), (256, 64, 256))

    def step():
        optimizer.zero_grad()
        with torch.no_grad():
            c = _upsampled(teacher, mel)  # the student shares the teacher's frozen upsampler
        z = torch.randn(2, 1, 7680)
        x, mu_s, log_s_tot = student(z, c)
        out = teacher(_shifted(x), mel)
        mu_t, log_s_t = out[:, :1], out[:, 1:].clamp(min=-7.0)
        log_s_s = log_s_tot.clamp(min=-7.0)
        delta = log_s_s - log_s_t
        kl = torch.mean(
            -delta + 0.5 * torch.expm1(2 * delta) + 0.5 * ((mu_s - mu_t) * torch.exp(-log_s_t)) ** 2
        )
        regularizer = torch.mean(delta**2)
        x = x.squeeze(1)
        power = sum(
            torch.mean((_stft_magnitude(x, *r) - _stft_magnitude(audio, *r)) ** 2)
            for r in resolutions
        ) / len(resolutions)
        loss = kl + 4.0 * regularizer + power
        loss.backward()
        optimizer.step()

    return audio.numel() / _median_seconds(step, repeats)


def student_generate(weight_norm: bool, frames: int = 87, repeats: int = 5) -> float:
    import torch

    teacher = _distill_teacher(weight_norm).eval()
    student = _student(weight_norm).eval()
    mel = torch.randn(1, 80, frames) - 4.0
    samples = frames * 256

    def synthesize():
        z = torch.randn(1, 1, samples)
        return student(z, _upsampled(teacher, mel))[0]

    with torch.no_grad():
        seconds = _median_seconds(synthesize, repeats)
    return samples / seconds


def main(argv) -> None:
    import torch

    warnings.filterwarnings("ignore")  # the package's deprecated torch calls
    torch.manual_seed(0)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    scenarios = {
        "teacher_train": teacher_train,
        "teacher_generate": teacher_generate,
        "distill_step": distill_step,
        "student_generate": student_generate,
    }
    for name in argv or list(scenarios):
        if name not in scenarios:
            raise SystemExit(f"unknown scenario {name!r}; choose from {sorted(scenarios)}")
        for weight_norm in (True, False):
            rate = scenarios[name](weight_norm)
            label = f"{name}/b1" if name == "teacher_generate" else name
            print(f"{label:24s} weight_norm={weight_norm!s:5s} {rate:>10,.0f} samples/s")


if __name__ == "__main__":
    main(sys.argv[1:])
